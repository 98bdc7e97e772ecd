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
    "kl_per_token_max": 0.5,  # nats per token (GRPO/RLOO/OpenRLHF report KL per token)
    "mismatch_kl_max": 0.01,  # nats per token between the sampler's and the trainer's log-probs
    "mismatch_token_prob_error_max": 1.1,  # NeMo-RL's token_mult_prob_error (1 = identical)
    "kl_rise_window": 10,  # steps
    "kl_rise_factor": 3.0,  # KL grew by this factor across the window
    "kl_rise_min": 1.0,  # ... and by at least this many nats
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
    "length_cap_frac_max": 0.9,  # share of responses cut at max_new_tokens ...
    "length_cap_window": 5,  # ... for this many steps in a row
    "cooldown": 20,  # steps a rule stays quiet after firing
    "warmup": 3,  # steps before ratio-based (running-median) rules may fire
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
        self.history: list[tuple[int, dict[str, float]]] = []
        self.alerts: list[AlertEvent] = []
        self._last_fired: dict[str, int] = {}
        self._first: dict[str, float] = {}
        self._kl: deque[float] = deque(maxlen=int(self.thresholds["kl_rise_window"]) + 1)
        self._grad: deque[float] = deque(maxlen=50)
        self._vloss: deque[float] = deque(maxlen=50)
        self._capped: deque[float] = deque(maxlen=max(1, int(self.thresholds["length_cap_window"])))
        self.on_alert: Callable[[AlertEvent], None] | None = None

    # The trainer hands every event to callbacks; the monitor only needs step metrics.
    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsEvent) and event.step is not None:
            for alert in self.check(event.step, event.values):
                if self.on_alert is not None:
                    self.on_alert(alert)

    def check(self, step: int, metrics: dict[str, float]) -> list[AlertEvent]:
        """Evaluate every rule on one step's metrics; returns the alerts that fire now."""
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
        for key in (M.ENTROPY, M.REWARD_STD):
            if key in m and key not in self._first:
                self._first[key] = m[key]

        kl = m.get(M.KL_K1)
        if kl is not None:
            limit = self.kl_limit(m)
            if kl > limit:
                sev: Severity = "critical" if kl > 2 * limit else "warning"
                yield _Alert("kl_high", sev, M.KL_K1, kl, limit, f"KL to the reference is {kl:.2f} nats (limit {limit:.2f})",
                             "Raise kl_coef or use the adaptive controller with a lower kl_target; lower the learning rate.")
            self._kl.append(kl)
            if len(self._kl) == self._kl.maxlen:
                first = self._kl[0]
                if kl - first > th["kl_rise_min"] and kl > th["kl_rise_factor"] * max(first, 1e-3):
                    yield _Alert("kl_rising", "warning", M.KL_K1, kl, th["kl_rise_factor"] * max(first, 1e-3),
                                 f"KL rose from {first:.2f} to {kl:.2f} in {len(self._kl) - 1} steps",
                                 "The policy is drifting fast: lower the learning rate or ppo_epochs, or raise kl_coef.")

        klt = m.get(M.KL_PER_TOKEN)
        if klt is not None and klt > th["kl_per_token_max"]:
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

        capped = m.get(M.RESPONSE_CLIPPED)
        if capped is not None:
            self._capped.append(capped)
            if len(self._capped) == self._capped.maxlen and min(self._capped) > th["length_cap_frac_max"]:
                yield _Alert("length_at_cap", "warning", M.RESPONSE_CLIPPED, capped, th["length_cap_frac_max"],
                             f"{capped:.0%} of responses stop at the length cap (over {th['length_cap_frac_max']:.0%} "
                             f"for {len(self._capped)} steps): the policy no longer ends its answers",
                             "Raise generation.max_new_tokens, set generation.missing_eos_penalty, or use dr_grpo "
                             "(no per-response length normalisation, which rewards long wrong answers).")

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
