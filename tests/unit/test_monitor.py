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


@pytest.mark.parametrize(("peer_key", "value"), [
    ("vllm_kl", 0.05), ("mismatch_kl/all/mean", 0.05), ("train/gen_kl_error", 0.05),
    ("train/token_mult_prob_error", 1.3)])
def test_mismatch_alert_fires_on_every_peers_name_for_it(peer_key: str, value: float) -> None:
    from rlhfkit.adapters.mapping import map_metrics

    alerts = StabilityMonitor().check(5, map_metrics({peer_key: value}))
    assert [a.rule for a in alerts] == ["mismatch_high"]
    assert alerts[0].metric is not None and alerts[0].metric.startswith("mismatch/")
    assert StabilityMonitor().check(5, map_metrics({peer_key: 0.001 if value < 1 else 1.01})) == []


# ---------------------------------------------------------------- reward hacking that KL alone misses
def healthy_responses(step: int) -> dict[str, float]:
    return {**healthy(step), M.EOS_FRACTION: 0.95 - 0.002 * step, M.RESPONSE_CLIPPED: 0.05, M.DISTINCT_2: 0.6}


def run_rules(series: list[dict[str, float]], evals: dict[int, tuple[float, float]] | None = None,
              ) -> list[tuple[int, str, str, str]]:
    mon = StabilityMonitor()
    mon.kl_target = 6.0
    out = []
    for s, m in enumerate(series):
        if evals and s in evals:
            r, n = evals[s]
            out += [(a.step, a.rule, a.severity, a.suggestion) for a in
                    mon.check(s, {M.EVAL_REWARD: r, M.EVAL_RESPONSE_LEN: n})]
        out += [(a.step, a.rule, a.severity, a.suggestion) for a in mon.check(s, m)]
    return out


def test_healthy_responses_raise_no_reward_hacking_alert() -> None:
    evals = {0: (0.0, 7.0), 10: (0.2, 7.3), 20: (0.3, 6.9), 30: (0.4, 7.1), 40: (0.45, 7.0)}
    assert run_rules([healthy_responses(s) for s in range(41)], evals) == []


def test_eos_collapse_fires_with_severity_step_and_what_to_try() -> None:
    series = [healthy_responses(s) for s in range(20)]
    for s in range(10, 20):
        series[s][M.EOS_FRACTION] = max(0.05, 0.95 - 0.12 * (s - 9))
    fired = [(s, sev, tip) for s, rule, sev, tip in run_rules(series) if rule == "eos_collapse"]
    assert fired and fired[0][0] == 13 and fired[0][1] == "warning"  # 0.47 < 0.5 * 0.95
    assert "missing_eos_penalty" in fired[0][2]
    series_severe = [healthy_responses(s) for s in range(5)] + [{**healthy_responses(5), M.EOS_FRACTION: 0.1}]
    assert [sev for _, rule, sev, _ in run_rules(series_severe) if rule == "eos_collapse"] == ["critical"]


def test_length_pinned_at_the_cap_fires_only_when_the_run_used_to_stop() -> None:
    series = [healthy_responses(s) for s in range(12)]
    series[11][M.RESPONSE_CLIPPED] = 0.8
    assert [(s, rule) for s, rule, _, _ in run_rules(series) if rule == "length_at_cap"] == [(11, "length_at_cap")]
    never_stops = [{**healthy_responses(s), M.RESPONSE_CLIPPED: 1.0} for s in range(12)]  # stop_at_eos off
    assert [r for _, r, _, _ in run_rules(never_stops) if r == "length_at_cap"] == []


def test_repetition_fires_when_distinct2_halves() -> None:
    series = [healthy_responses(s) for s in range(12)]
    series[11][M.DISTINCT_2] = 0.2
    fired = [(s, sev) for s, rule, sev, _ in run_rules(series) if rule == "repetition"]
    assert fired == [(11, "warning")]


def test_reward_rising_while_eval_length_drifts_one_way() -> None:
    series = [healthy_responses(s) for s in range(41)]
    longer = {0: (0.0, 7.0), 10: (0.2, 8.0), 20: (0.3, 9.5), 30: (0.5, 11.0)}
    fired = [(s, rule) for s, rule, _, _ in run_rules(series, longer) if rule == "reward_length_drift"]
    assert fired == [(30, "reward_length_drift")]
    wobbly = {0: (0.0, 7.0), 10: (0.2, 8.0), 20: (0.3, 7.5), 30: (0.5, 11.0)}  # not monotonic
    assert [r for _, r, _, _ in run_rules(series, wobbly) if r == "reward_length_drift"] == []
    small = {0: (0.0, 7.0), 10: (0.2, 7.2), 20: (0.3, 7.4), 30: (0.5, 7.6)}  # under 30% change
    assert [r for _, r, _, _ in run_rules(series, small) if r == "reward_length_drift"] == []


def test_an_evaluation_is_not_a_training_step_of_the_history() -> None:
    mon = StabilityMonitor()
    mon.check(0, {M.EVAL_REWARD: 0.1, M.EVAL_RESPONSE_LEN: 7.0})
    mon.check(0, healthy(0))
    assert [s for s, _ in mon.history] == [0] and M.EVAL_REWARD not in mon.history[0][1]


def test_kl_per_token_rule_only_for_runs_without_sequence_kl() -> None:
    """rlhfkit reports both: 2.4 nats per sequence over ~5-token responses is 0.5 per token, and
    the sequence rule (the measure the penalty controls) decides. A run that reports only per-token
    KL (TRL's GRPO through the adapter) is held to the per-token limit."""
    both = StabilityMonitor()
    fired = [a.rule for s in range(20) for a in both.check(s, {M.KL_K1: 2.4, M.KL_PER_TOKEN: 0.6})]
    assert "kl_high" not in fired
    only_token = StabilityMonitor()
    assert "kl_high" in [a.rule for a in only_token.check(5, {M.KL_PER_TOKEN: 0.6})]
    assert "kl_high" in [a.rule for a in both.check(40, {M.KL_K1: 30.0, M.KL_PER_TOKEN: 0.6})]


def test_kl_rising_ignores_a_climb_that_settles_far_below_the_limit() -> None:
    """A KL penalty lets KL climb a few nats and settle (smoke seed 1: 0.94 -> 3.06 nats in 10
    steps, limit 25): not a drift toward trouble. A climb from 1 to 13 nats in 10 steps would cross
    the limit within the horizon and fires."""
    def rules(rate: float, cap: float) -> list[str]:
        mon = StabilityMonitor()
        kl = [0.0, *[min(cap, 0.94 + rate * max(0, s - 12)) for s in range(1, 40)]]  # flat, climb, settle
        return [a.rule for s, k in enumerate(kl) for a in mon.check(s, {M.KL_K1: k})]

    assert "kl_rising" not in rules(0.4, 3.3)
    assert "kl_rising" in rules(1.2, 13.0)
