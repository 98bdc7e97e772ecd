"""The tiny warm-start autocasts to bf16 only on a CPU that multiplies bf16 natively.

On an AVX2-only CPU oneDNN emulates bf16, and the 400-step warm-start that takes under a minute
with native bf16 took over 40 minutes (every ``addmm`` about 50x slower than float32). On an AVX-512
CPU without AVX-512 BF16 or AMX (Intel Xeon family 6 model 106) oneDNN calls bf16 "supported"
but emulates it too: the warm-start ran 2.5x slower than in float32 and the smoke run's one-time
build outlasted its 5-minute timeout. The expected answer here comes from the CPU's own flags in
``/proc/cpuinfo``, not from torch."""

from pathlib import Path

from rlhfkit import fastgpt2, tiny
from rlhfkit.tiny import warmstart


def _cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX's bf16 tiles, as the kernel lists the CPU's flags."""
    flags = fastgpt2.cpu_flags()
    assert flags, "no flags line in /proc/cpuinfo"
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def test_recipe_autocasts_only_where_bf16_is_native() -> None:
    assert warmstart.native_bf16() == _cpu_has_native_bf16()
    assert _cpu_has_native_bf16() == warmstart.AUTOCAST_BF16


def test_precision_is_part_of_the_cache_key(tmp_path: Path) -> None:
    from rlhfkit.policy import GPT2Policy

    policy = GPT2Policy(model_size="tiny", max_length=32, warm_start=False)
    key = warmstart._cache_key(policy.model.config, policy.tokenizer, warmstart.DEFAULT_STEPS, 0)
    assert key["autocast_bf16"] == _cpu_has_native_bf16()
    path = tiny.cache_path(policy.model, policy.tokenizer, seed=0, cache_dir=tmp_path)
    assert path.parent == tmp_path / "tiny_warm_start"
