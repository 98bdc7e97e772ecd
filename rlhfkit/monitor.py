"""StabilityMonitor: alert rules over the stability metrics of each step.

Rules read canonical metric names (:mod:`rlhfkit.metrics`) only, so they work unchanged on native
runs and on TRL/OpenRLHF runs whose names the adapters map. Each alert carries a severity, the
step, the value and threshold, a one-line explanation and what to try. A rule that fired stays
quiet for ``cooldown`` steps so a persistent condition does not flood the alert list.

Use it as the product README shows (``trainer.add_callbacks(StabilityMonitor(...))``: the trainer
then uses it instead of its default monitor) or on its own: ``monitor.check(step, metrics)``.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.events import AlertEvent, Event, MetricsEvent, Severity
from rlhfkit.metrics import M

DEFAULT_THRESHOLDS: dict[str, float] = {
    "kl_high_factor": 2.0,  # warning when KL > factor * target (critical at 2x this)
    "kl_max": 25.0,  # nats per sequence, used when no target is known
    "kl_per_token_max": 0.5,  # nats per token: for runs that report KL only per token (TRL's GRPO, OpenRLHF)
    "mismatch_kl_max": 0.01,  # nats per token between the sampler's and the trainer's log-probs
    "mismatch_token_prob_error_max": 1.1,  # NeMo-RL's token_mult_prob_error (1 = identical)
    "kl_rise_window": 10,  # steps
    "kl_rise_factor": 3.0,  # KL grew by this factor across the window
    "kl_rise_min": 1.0,  # ... and by at least this many nats
    "kl_rise_horizon": 50,  # ... and at that rate would cross the kl_high limit within this many steps
    "entropy_min": 0.3,  # nats/token
    "entropy_drop_ratio": 0.2,  # entropy below 20% of its first value
    "reward_std_min": 1e-3,
    "reward_std_drop_ratio": 0.05,  # reward std below 5% of its first value
    "grad_spike_factor": 10.0,  # grad norm > factor * running median
    "value_loss_factor": 20.0,  # value loss > factor * running median
    "clipfrac_max": 0.3,
    "ratio_max": 10.0,
    "ratio_mean_dev": 0.2,  # |ratio_mean - 1| above this
    "zero_std_frac_max": 0.5,  # share of prompts whose G rewards are all equal (critic-free runs)
    # reward hacking that KL alone misses (each compares with the run's own first value)
    "eos_drop_ratio": 0.5,  # EOS fraction below this share of its first value (critical below half of that)
    "eos_first_min": 0.5,  # ... only for runs whose responses mostly ended at first
    "at_cap_max": 0.5,  # more than this share of responses cut off at the length cap ...
    "at_cap_first_max": 0.25,  # ... when at most this share were at first
    "distinct2_drop_ratio": 0.5,  # distinct-2 of the batch below this share of its first value
    "drift_evals": 4,  # evaluations in a row with eval reward rising and eval length moving one way ...
    "drift_length_change": 0.3,  # ... by at least this relative change from first to last of them
    "cooldown": 20,  # steps a rule stays quiet after firing
    "warmup": 3,  # steps before ratio-based (running-median) rules may fire and the kl_rising window starts
}


@dataclass(frozen=True)
class _Alert:
    rule: str
    severity: Severity
    metric: str
    value: float
    threshold: float
    message: str
    suggestion: str


class StabilityMonitor:
    """Watches step metrics and raises alerts.

    Args:
        warning_thresholds: overrides of :data:`DEFAULT_THRESHOLDS` by name.
        export_metrics: write ``metrics.csv`` and ``alerts.csv`` into the run directory at the end.
    """

    def __init__(self, warning_thresholds: dict[str, float] | None = None, export_metrics: bool = True) -> None:
        unknown = set(warning_thresholds or {}) - set(DEFAULT_THRESHOLDS)
        if unknown:
            raise ValueError(f"unknown threshold(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_THRESHOLDS)}")
        self.thresholds = {**DEFAULT_THRESHOLDS, **(warning_thresholds or {})}
        self.export_metrics = export_metrics
        self.kl_target: float | None = None
        self.lr_warmup_steps = 0  # the trainer sets it: the kl_rising window starts after the LR warm-up
        self.history: list[tuple[int, dict[str, float]]] = []
        self.alerts: list[AlertEvent] = []
        self._last_fired: dict[str, int] = {}
        self._first: dict[str, float] = {}
        self._kl: deque[float] = deque(maxlen=int(self.thresholds["kl_rise_window"]) + 1)
        self._grad: deque[float] = deque(maxlen=50)
        self._vloss: deque[float] = deque(maxlen=50)
        self._evals: deque[tuple[float, float]] = deque(maxlen=max(2, int(self.thresholds["drift_evals"])))
        self.on_alert: Callable[[AlertEvent], None] | None = None

    # The trainer hands every event to callbacks; the monitor only needs step metrics.
    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsEvent) and event.step is not None:
            for alert in self.check(event.step, event.values):
                if self.on_alert is not None:
                    self.on_alert(alert)

    def check(self, step: int, metrics: dict[str, float]) -> list[AlertEvent]:
        """Evaluate every rule on one step's metrics; returns the alerts that fire now.

        A dict holding only ``eval/*`` metrics is an evaluation (it comes at its own step): the
        evaluation rules read it, and it is not a training step of the history.
        """
        if not all(k.startswith("eval/") for k in metrics):
            self.history.append((step, dict(metrics)))
        found = list(self._rules(step, metrics))
        out: list[AlertEvent] = []
        cooldown = int(self.thresholds["cooldown"])
        for a in found:
            last = self._last_fired.get(a.rule)
            if last is not None and step - last < cooldown:
                continue
            self._last_fired[a.rule] = step
            ev = AlertEvent(step=step, rule=a.rule, severity=a.severity, metric=a.metric, value=_finite(a.value),
                            threshold=_finite(a.threshold), message=a.message, suggestion=a.suggestion)
            out.append(ev)
        self.alerts.extend(out)
        return out

    def kl_limit(self, metrics: dict[str, float]) -> float:
        """Upper edge of the KL band (nats per sequence) the ``kl_high`` rule holds a step to: the
        factor times the adaptive controller's target when one is known, else ``kl_max``."""
        target = metrics.get(M.KL_TARGET, self.kl_target)
        return self.thresholds["kl_high_factor"] * target if target else self.thresholds["kl_max"]

    def _rules(self, step: int, m: dict[str, float]) -> Any:
        th = self.thresholds
        for key, value in m.items():
            if not math.isfinite(value):
                yield _Alert("nan_inf", "critical", key, value, 0.0, f"{key} is {value} at step {step}",
                             "Lower the learning rate, check the reward for NaN/inf, enable grad clipping; resume from the last checkpoint.")
                return
        for key in (M.ENTROPY, M.REWARD_STD, M.EOS_FRACTION, M.RESPONSE_CLIPPED, M.DISTINCT_2):
            if key in m and key not in self._first:
                self._first[key] = m[key]

        kl = m.get(M.KL_K1)
        if kl is not None:
            limit = self.kl_limit(m)
            if kl > limit:
                sev: Severity = "critical" if kl > 2 * limit else "warning"
                yield _Alert("kl_high", sev, M.KL_K1, kl, limit, f"KL to the reference is {kl:.2f} nats (limit {limit:.2f})",
                             "Raise kl_coef or use the adaptive controller with a lower kl_target; lower the learning rate.")
            # Step 0's KL is 0 by construction (policy == reference) and the first steps (with the
            # learning-rate warm-up) climb from there: the window starts after both, and its ends are
            # means of a few steps, so one noisy step or the normal first climb is not read as a rise.
            if len(self.history) > max(th["warmup"], self.lr_warmup_steps):
                self._kl.append(kl)
            if len(self._kl) == self._kl.maxlen:
                k = max(1, min(3, len(self._kl) // 3))
                first = statistics.fmean(list(self._kl)[:k])
                late = statistics.fmean(list(self._kl)[-k:])
                # a rise matters when it heads for the limit: KL settling a few nats above the
                # reference is what a KL penalty allows; a climb that would cross kl_high's limit
                # within the horizon at its current rate is the drift worth acting on early
                slope = (late - first) / (len(self._kl) - k)  # nats per step, between the two means
                to_limit = (limit - late) / slope if slope > 0 else math.inf  # steps
                if (late - first > th["kl_rise_min"] and late > th["kl_rise_factor"] * max(first, 1e-3)
                        and to_limit <= th["kl_rise_horizon"]):
                    yield _Alert("kl_rising", "warning", M.KL_K1, late, th["kl_rise_factor"] * max(first, 1e-3),
                                 f"KL rose from {first:.2f} to {late:.2f} nats (means of {k} steps) in "
                                 f"{len(self._kl) - 1} steps; at this rate it crosses the limit of {limit:.1f} "
                                 f"in about {max(0.0, to_limit):.0f} steps",
                                 "The policy is drifting fast: lower the learning rate or ppo_epochs, or raise kl_coef.")

        # KL per token only where the run reports no sequence KL: one KL rule per run, on the
        # measure the penalty controls (a per-token limit reads short responses as drift: 2 nats
        # over 4 tokens is 0.5 per token)
        klt = m.get(M.KL_PER_TOKEN)
        if kl is None and klt is not None and klt > th["kl_per_token_max"]:
            yield _Alert("kl_high", "critical" if klt > 2 * th["kl_per_token_max"] else "warning", M.KL_PER_TOKEN, klt,
                         th["kl_per_token_max"], f"KL to the reference is {klt:.3f} nats per token",
                         "Raise the KL coefficient (beta) or lower the learning rate.")

        # training-vs-inference mismatch, whichever framework's name it arrived under (rlhfkit.metrics)
        for key, limit in ((M.MISMATCH_KL, th["mismatch_kl_max"]),
                           (M.MISMATCH_TOKEN_PROB_ERROR, th["mismatch_token_prob_error_max"])):
            seen = m.get(key)
            if seen is not None and seen > limit:
                yield _Alert("mismatch_high", "warning", key, seen, limit,
                             f"the sampler and the trainer disagree on the sampled tokens: {key} = {seen:.4g}",
                             "Sampled tokens are scored off-policy: match the sampler's dtype/kernels to the trainer's "
                             "(e.g. an fp32 LM head), or correct with truncated importance sampling.")

        ent = m.get(M.ENTROPY)
        if ent is not None:
            floor = max(th["entropy_min"], th["entropy_drop_ratio"] * self._first.get(M.ENTROPY, 0.0))
            if ent < floor:
                yield _Alert("entropy_collapse", "warning", M.ENTROPY, ent, floor,
                             f"Policy entropy fell to {ent:.3f} nats/token (floor {floor:.3f}): samples are becoming deterministic",
                             "Raise entropy_coef, lower the learning rate, or raise the sampling temperature.")

        rstd = m.get(M.REWARD_STD)
        if rstd is not None:
            floor = max(th["reward_std_min"], th["reward_std_drop_ratio"] * self._first.get(M.REWARD_STD, 0.0))
            if rstd < floor:
                yield _Alert("reward_variance_collapse", "warning", M.REWARD_STD, rstd, floor,
                             f"Reward std across the batch is {rstd:.4f}: every response scores alike (mode collapse or reward saturation)",
                             "Check for reward hacking in the samples; raise the KL penalty or entropy bonus; use a richer reward.")

        zs = m.get(M.FRAC_ZERO_STD)
        if zs is not None and zs > th["zero_std_frac_max"]:
            yield _Alert("zero_std_groups", "critical" if zs >= 0.99 else "warning", M.FRAC_ZERO_STD, zs,
                         th["zero_std_frac_max"],
                         f"{zs:.0%} of prompts got the same reward on all their samples: their advantage is 0, "
                         "so most of the batch teaches nothing",
                         "Raise generation.samples_per_prompt or the temperature, use a denser reward, or filter out "
                         "prompts that are always solved or never solved (DAPO's dynamic sampling).")

        warm = len(self.history) > th["warmup"]
        g = m.get(M.GRAD_NORM)
        if g is not None:
            if warm and self._grad:
                med = statistics.median(self._grad)
                if med > 0 and g > th["grad_spike_factor"] * med:
                    yield _Alert("grad_norm_spike", "warning", M.GRAD_NORM, g, th["grad_spike_factor"] * med,
                                 f"Gradient norm {g:.3g} is {g / med:.0f}x its running median",
                                 "Lower the learning rate or max_grad_norm; look for outlier rewards in this step.")
            self._grad.append(g)

        vl = m.get(M.VALUE_LOSS)
        if vl is not None:
            if warm and self._vloss:
                med = statistics.median(self._vloss)
                if med > 0 and vl > th["value_loss_factor"] * med:
                    yield _Alert("value_loss_divergence", "warning", M.VALUE_LOSS, vl, th["value_loss_factor"] * med,
                                 f"Value loss {vl:.3g} is {vl / med:.0f}x its running median",
                                 "Whiten or scale rewards, lower value_coef or cliprange_value, or the learning rate.")
            self._vloss.append(vl)

        yield from self._reward_hacking_rules(step, m)

        cf = m.get(M.POLICY_CLIPFRAC)
        if cf is not None and cf > th["clipfrac_max"]:
            yield _Alert("high_clipfrac", "warning", M.POLICY_CLIPFRAC, cf, th["clipfrac_max"],
                         f"{cf:.0%} of tokens hit the PPO clip: updates are too large",
                         "Lower the learning rate or ppo_epochs, or use larger minibatches.")

        rmax = m.get(M.RATIO_MAX)
        if rmax is not None and rmax > th["ratio_max"]:
            yield _Alert("ratio_far_from_one", "critical" if rmax > 10 * th["ratio_max"] else "warning", M.RATIO_MAX,
                         rmax, th["ratio_max"], f"Importance ratio reached {rmax:.3g} (should stay near 1)",
                         "The policy moved far within one step: lower the learning rate, ppo_epochs or cliprange.")
        rmean = m.get(M.RATIO_MEAN)
        if rmean is not None and abs(rmean - 1.0) > th["ratio_mean_dev"]:
            yield _Alert("ratio_mean_off", "warning", M.RATIO_MEAN, rmean, 1.0 + th["ratio_mean_dev"],
                         f"Mean importance ratio is {rmean:.3f}", "Lower the learning rate or ppo_epochs.")

    def _reward_hacking_rules(self, step: int, m: dict[str, float]) -> Any:
        """Patterns where the reward rises for the wrong reason, which KL alone can miss."""
        th = self.thresholds
        eos, first_eos = m.get(M.EOS_FRACTION), self._first.get(M.EOS_FRACTION)
        if eos is not None and first_eos is not None and first_eos >= th["eos_first_min"]:
            floor = th["eos_drop_ratio"] * first_eos
            if eos < floor:
                yield _Alert("eos_collapse", "critical" if eos < 0.5 * floor else "warning", M.EOS_FRACTION, eos, floor,
                             f"Only {eos:.0%} of responses end (was {first_eos:.0%}): the policy learned not to stop",
                             "The reward likely pays for longer text or punishes the ending: check where the reward "
                             "model reads the score, set generation.missing_eos_penalty, or raise kl_coef.")
        cap, first_cap = m.get(M.RESPONSE_CLIPPED), self._first.get(M.RESPONSE_CLIPPED)
        if cap is not None and first_cap is not None and first_cap <= th["at_cap_first_max"] and cap > th["at_cap_max"]:
            yield _Alert("length_at_cap", "warning", M.RESPONSE_CLIPPED, cap, th["at_cap_max"],
                         f"{cap:.0%} of responses run to the length cap without ending (was {first_cap:.0%})",
                         "Read the samples for padding or repeated phrases; set generation.missing_eos_penalty or "
                         "generation.stop_token; raise kl_coef.")
        d2, first_d2 = m.get(M.DISTINCT_2), self._first.get(M.DISTINCT_2)
        if d2 is not None and first_d2 is not None and first_d2 > 0:
            floor = th["distinct2_drop_ratio"] * first_d2
            if d2 < floor:
                yield _Alert("repetition", "warning", M.DISTINCT_2, d2, floor,
                             f"Distinct-2 of the samples fell to {d2:.2f} (was {first_d2:.2f}): responses repeat "
                             "themselves or each other",
                             "Raise entropy_coef or kl_coef, lower the learning rate; check the reward for a phrase "
                             "it overpays.")
        er, el = m.get(M.EVAL_REWARD), m.get(M.EVAL_RESPONSE_LEN)
        if er is not None and el is not None:
            self._evals.append((er, el))
            if len(self._evals) == self._evals.maxlen:
                rs, ls = [r for r, _ in self._evals], [x for _, x in self._evals]
                rising = all(b > a for a, b in zip(rs, rs[1:], strict=False))
                longer = all(b > a for a, b in zip(ls, ls[1:], strict=False))
                shorter = all(b < a for a, b in zip(ls, ls[1:], strict=False))
                change = ls[-1] / ls[0] - 1.0 if ls[0] > 0 else 0.0
                if rising and (longer or shorter) and abs(change) >= th["drift_length_change"]:
                    way = "longer" if longer else "shorter"
                    yield _Alert("reward_length_drift", "warning", M.EVAL_RESPONSE_LEN, el, ls[0],
                                 f"Eval reward rose {len(rs) - 1} evaluations in a row while eval responses got "
                                 f"{way} every time ({ls[0]:.1f} -> {ls[-1]:.1f} tokens)",
                                 "The reward may be paying for length, not quality: read the eval samples; add a "
                                 "length penalty or normalise the reward; raise kl_coef.")

    def export(self, directory: str | Path) -> list[Path]:
        """Write metrics.csv and alerts.csv; returns the paths written."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for _, m in self.history for k in m})
        mp = d / "metrics.csv"
        with mp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", *keys])
            for step, m in self.history:
                w.writerow([step, *[m.get(k, "") for k in keys]])
        ap = d / "alerts.csv"
        with ap.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["step", "rule", "severity", "metric", "value", "threshold", "message", "suggestion"])
            for a in self.alerts:
                w.writerow([a.step, a.rule, a.severity, a.metric, a.value, a.threshold, a.message, a.suggestion])
        return [mp, ap]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
