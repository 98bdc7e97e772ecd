"""The tiny warm-start autocasts to bf16 only on a CPU that multiplies bf16 natively.

On an AVX2-only CPU oneDNN emulates bf16, and the 400-step warm-start that takes under a minute
with native bf16 took over 40 minutes (every ``addmm`` about 50x slower than float32)."""

from pathlib import Path

import torch

from rlhfkit import tiny
from rlhfkit.tiny import warmstart


def _cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


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
