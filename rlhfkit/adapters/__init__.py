"""Adapters: TRL, OpenRLHF and any training script reporting into the rlhfkit registry.

* :class:`TRLAdapter` / :class:`RLHFKitCallback` — TRL and ``transformers.Trainer`` runs.
* :func:`track` — ``with rlhfkit.track(name=..., config=...) as run: run.log({...}, step=...)``.
* :mod:`rlhfkit.adapters.openrlhf` — a TensorBoard follower and a drop-in logger for OpenRLHF.
* :mod:`rlhfkit.adapters.transport` — local JSON Lines + background upload; never blocks training.

``TRLAdapter``/``RLHFKitCallback`` need ``transformers``; they are imported on first use so that
``rlhfkit.track`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlhfkit.adapters.track import Run, track

if TYPE_CHECKING:
    from rlhfkit.adapters.trl import RLHFKitCallback, TRLAdapter

__all__ = ["RLHFKitCallback", "Run", "TRLAdapter", "track"]


def __getattr__(name: str) -> Any:
    if name in ("TRLAdapter", "RLHFKitCallback"):
        from rlhfkit.adapters import trl

        return getattr(trl, name)
    raise AttributeError(f"module 'rlhfkit.adapters' has no attribute {name!r}")
