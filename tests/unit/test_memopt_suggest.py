"""suggest_config: ranked candidates that fit the budget, a valid RunConfig YAML, and a measured
peak under the budget."""

from __future__ import annotations

import pytest

from rlhfkit.config import load_config
from rlhfkit.memopt import measure
from rlhfkit.memopt.suggest import suggest_config


def test_candidates_fit_and_are_ranked(tmp_path) -> None:
    cfg = load_config("default")
    cands = suggest_config(cfg, budget_gb=2, device="cpu", out_path=tmp_path / "suggested_config.yaml")
    assert cands[0].fits and all(c.peak_bytes <= 2 * 2**30 * 0.9 for c in cands if c.fits)
    fitting = [c for c in cands if c.fits]
    assert fitting[0].tokens_per_sec >= max(c.tokens_per_sec for c in fitting) / 1.02  # ties within 2%
    again = load_config(str(tmp_path / "suggested_config.yaml"))
    assert again.ppo.batch_size == cands[0].overrides["ppo.batch_size"]


def test_tight_budget_trades_speed_for_memory() -> None:
    cfg = load_config("default", {"model.size": "custom", "model.n_layer": 6, "model.n_embd": 384,
                                  "model.n_head": 6, "model.vocab_size": 8000})
    loose = suggest_config(cfg, budget_gb=4, device="cpu")[0]
    budget = 0.6 * loose.peak_mb / 1024
    tight = suggest_config(cfg, budget_gb=budget, device="cpu", headroom=0.0)[0]
    assert tight.fits and tight.peak_bytes <= budget * 2**30 < loose.peak_bytes
    assert tight.tokens_per_sec <= loose.tokens_per_sec
    o, lo = tight.overrides, loose.overrides
    micro = o["ppo.mini_batch_size"] // o["ppo.grad_accum_steps"]
    loose_micro = lo["ppo.mini_batch_size"] // lo["ppo.grad_accum_steps"]
    assert (o["model.gradient_checkpointing"] or micro < loose_micro
            or o["ppo.batch_size"] < lo["ppo.batch_size"])


def test_nothing_fits_a_tiny_budget() -> None:
    assert not suggest_config(load_config("default"), budget_gb=0.01, device="cpu")[0].fits


@pytest.mark.slow
def test_suggested_config_measured_peak_stays_under_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    cfg = load_config("default", {"train.device": "cpu", "model.warm_start": False, "train.eval_prompts": 16})
    best = suggest_config(cfg, budget_gb=2, device="cpu")[0].config
    # peak memory does not depend on the number of PPO epochs: one keeps the check short
    best = best.model_copy(update={"ppo": best.ppo.model_copy(update={"ppo_epochs": 1})})
    m = measure(best, steps=1)
    assert 0 < m.growth_mb < 2 * 1024
