"""StabilityMonitor rules fire on the conditions they describe, and only then."""

from __future__ import annotations

import math

import pytest

from rlhfkit.metrics import M
from rlhfkit.monitor import StabilityMonitor


def healthy(step: int) -> dict[str, float]:
    return {M.KL_K1: 0.5 + 0.01 * step, M.ENTROPY: 2.0, M.REWARD_STD: 0.4, M.GRAD_NORM: 1.0 + 0.1 * (step % 3),
            M.VALUE_LOSS: 0.2, M.POLICY_CLIPFRAC: 0.05, M.RATIO_MAX: 1.3, M.RATIO_MEAN: 1.0}


def test_healthy_run_raises_nothing() -> None:
    mon = StabilityMonitor()
    mon.kl_target = 6.0
    assert [a for s in range(50) for a in mon.check(s, healthy(s))] == []


def test_each_rule_fires_with_explanation() -> None:
    cases = {
        "nan_inf": {M.POLICY_LOSS: math.nan},
        "kl_high": {M.KL_K1: 40.0},
        "entropy_collapse": {M.ENTROPY: 0.05},
        "reward_variance_collapse": {M.REWARD_STD: 0.0},
        "grad_norm_spike": {M.GRAD_NORM: 500.0},
        "value_loss_divergence": {M.VALUE_LOSS: 50.0},
        "high_clipfrac": {M.POLICY_CLIPFRAC: 0.6},
        "ratio_far_from_one": {M.RATIO_MAX: 80.0},
    }
    for rule, bad in cases.items():
        mon = StabilityMonitor()
        mon.kl_target = 6.0
        for s in range(10):
            assert mon.check(s, healthy(s)) == []
        alerts = mon.check(10, {**healthy(10), **bad})
        rules = {a.rule for a in alerts}
        assert rule in rules, (rule, rules)
        a = next(a for a in alerts if a.rule == rule)
        assert a.step == 10 and a.message and a.suggestion and a.severity in ("warning", "critical")
    mon = StabilityMonitor()
    assert mon.check(0, {M.POLICY_LOSS: math.inf})[0].severity == "critical"


def test_kl_rising_and_cooldown() -> None:
    mon = StabilityMonitor({"cooldown": 5})
    fired = []
    for s in range(30):
        m = healthy(s)
        m[M.KL_K1] = 0.5 * 1.3**s  # exponential drift
        fired += [(s, a.rule) for a in mon.check(s, m)]
    rising = [s for s, r in fired if r == "kl_rising"]
    assert rising, fired
    assert all(b - a >= 5 for a, b in zip(rising, rising[1:], strict=False))


def test_unknown_threshold_is_rejected() -> None:
    try:
        StabilityMonitor({"no_such_rule": 1.0})
    except ValueError as exc:
        assert "allowed" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_export_writes_csv(tmp_path) -> None:
    mon = StabilityMonitor()
    mon.check(0, healthy(0))
    mon.check(1, {**healthy(1), M.POLICY_CLIPFRAC: 0.9})
    paths = mon.export(tmp_path)
    assert paths[0].read_text().splitlines()[0].startswith("step,")
    assert "high_clipfrac" in paths[1].read_text()


def critic_free_healthy(step: int) -> dict[str, float]:
    out = {k: v for k, v in healthy(step).items() if k != M.VALUE_LOSS}
    return {**out, M.FRAC_ZERO_STD: 0.2, M.RESPONSE_CLIPPED: 0.95 if step % 4 == 0 else 0.3}


def test_zero_std_groups_dominating_fires_and_a_few_do_not() -> None:
    mon = StabilityMonitor()
    assert [a for s in range(10) for a in mon.check(s, critic_free_healthy(s))] == []
    warn = mon.check(10, {**critic_free_healthy(10), M.FRAC_ZERO_STD: 0.75})
    assert [(a.rule, a.severity) for a in warn] == [("zero_std_groups", "warning")]
    assert "teaches nothing" in warn[0].message and "samples_per_prompt" in warn[0].suggestion
    crit = StabilityMonitor().check(0, {M.FRAC_ZERO_STD: 1.0})
    assert [(a.rule, a.severity) for a in crit] == [("zero_std_groups", "critical")]


def test_length_pinned_at_cap_needs_a_run_of_steps() -> None:
    mon = StabilityMonitor()
    fired = [s for s in range(12) for a in mon.check(s, {M.RESPONSE_CLIPPED: 0.3 if s < 3 else 0.97})
             if a.rule == "length_at_cap"]
    assert fired == [7]  # steps 3..7 are the first five in a row above 90 %, then the cooldown keeps it quiet


@pytest.mark.parametrize(("peer_key", "value"), [
    ("vllm_kl", 0.05), ("mismatch_kl/all/mean", 0.05), ("train/gen_kl_error", 0.05),
    ("train/token_mult_prob_error", 1.3)])
def test_mismatch_alert_fires_on_every_peers_name_for_it(peer_key: str, value: float) -> None:
    from rlhfkit.adapters.mapping import map_metrics

    alerts = StabilityMonitor().check(5, map_metrics({peer_key: value}))
    assert [a.rule for a in alerts] == ["mismatch_high"]
    assert alerts[0].metric is not None and alerts[0].metric.startswith("mismatch/")
    assert StabilityMonitor().check(5, map_metrics({peer_key: 0.001 if value < 1 else 1.01})) == []
