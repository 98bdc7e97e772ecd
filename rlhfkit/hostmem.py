"""The C heap of a CPU training process: keep freed memory for reuse instead of handing it back.

A training step on the CPU allocates and frees the same large tensors every step: activations
saved for the backward, logits and log-softmax over the vocabulary, gradients. glibc's ``malloc``
serves blocks above its mmap threshold (128 KiB, rising with what is freed up to 32 MiB) with a
fresh ``mmap`` and unmaps them on ``free``, and trims the top of its heap back to the OS once more
than twice that threshold lies free there. Either way the next step gets fresh pages, which the
kernel faults in and zero-fills one 4 KiB page at a time, tens of thousands per GRPO step at
the benchmarks' shapes (benchmarks/NOTES_grpo_vs_trl.md, change 13, counts them).

:func:`keep_freed_memory` pins both (``mallopt``): the mmap threshold at glibc's largest, 32 MiB,
at once instead of after the first such block is freed, and trimming only past
:data:`TRIM_THRESHOLD` free at the top of the heap, so the blocks a step frees are there for the
next step and the steady state takes no new pages. Blocks over 32 MiB still come from ``mmap``
(keeping those in the heap too fragments it: a large block freed at the top is split by the next
small allocation, and the heap grows by the block's size every time). The price is that the
resident set stays at the run's high-water mark between steps, which a training process reaches
every step anyway. It is a process-wide switch, so the trainer applies it only to CPU runs
(``train.malloc_keep_freed``), and it leaves the allocator alone where the environment already
chose (``MALLOC_*_`` variables, ``GLIBC_TUNABLES`` with ``glibc.malloc``, a preloaded jemalloc,
tcmalloc or mimalloc) or where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Mapping

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1 << 30  # free heap top beyond this still goes back to the OS
_kept = False


def glibc() -> ctypes.CDLL | None:
    """glibc as a ctypes library, or None (not Linux, or another C library such as musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
    except (OSError, AttributeError):
        return None
    return libc


def malloc_trim() -> None:
    """Hand the free heap back to the OS now (glibc's ``malloc_trim(0)``; nothing elsewhere)."""
    libc = glibc()
    if libc is not None:
        with contextlib.suppress(OSError):
            libc.malloc_trim(0)


def environment_chose_allocator(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` already configures malloc: a glibc ``MALLOC_*_`` variable, a
    ``glibc.malloc`` tunable, or another allocator in ``LD_PRELOAD``."""
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in environ):
        return True
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return True
    preload = environ.get("LD_PRELOAD", "")
    return "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> bool:
    """Make this process's glibc heap keep freed memory for reuse (blocks up to
    :data:`MMAP_THRESHOLD` from the heap, no trimming below :data:`TRIM_THRESHOLD`). Returns whether
    it did: False where the environment already configures the allocator or the C library is not
    glibc. Idempotent; not undone."""
    global _kept
    if environment_chose_allocator(os.environ if environ is None else environ):
        return False
    libc = glibc()
    if libc is None:
        return False
    _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept


def kept() -> bool:
    """Whether :func:`keep_freed_memory` has switched this process's heap."""
    return _kept
