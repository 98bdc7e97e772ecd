"""Critic-free estimators against slow, obvious loops on small hand-made groups."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit import advantages as adv
from rlhfkit import ppo_ops as ops

# three prompts x G=4: a mixed group, an all-equal group (no signal), a group with one outlier
SCORES = torch.tensor([0.5, -0.2, 0.9, 0.1,
                       0.3, 0.3, 0.3, 0.3,
                       -1.0, -1.0, -1.0, 2.0])
G = 4


def _groups(xs: list[float], g: int) -> list[list[float]]:
    return [xs[i : i + g] for i in range(0, len(xs), g)]


def naive_grpo(xs: list[float], g: int, scale: bool, eps: float = 1e-4) -> list[float]:
    out = []
    for grp in _groups(xs, g):
        mean = sum(grp) / g
        std = math.sqrt(sum((x - mean) ** 2 for x in grp) / (g - 1))
        out += [(x - mean) / (std + eps) if scale else x - mean for x in grp]
    return out


def naive_rloo(xs: list[float], g: int) -> list[float]:
    out = []
    for grp in _groups(xs, g):
        for i, x in enumerate(grp):
            others = [y for j, y in enumerate(grp) if j != i]
            out.append(x - sum(others) / len(others))
    return out


def test_grpo_matches_naive_loop() -> None:
    got = adv.grpo_advantages(SCORES, G).tolist()
    assert got == pytest.approx(naive_grpo(SCORES.tolist(), G, scale=True), abs=1e-5)


def test_dr_grpo_matches_naive_loop_without_std() -> None:
    got = adv.dr_grpo_advantages(SCORES, G).tolist()
    assert got == pytest.approx(naive_grpo(SCORES.tolist(), G, scale=False), abs=1e-6)


def test_rloo_matches_naive_leave_one_out() -> None:
    got = adv.rloo_advantages(SCORES, G).tolist()
    assert got == pytest.approx(naive_rloo(SCORES.tolist(), G), abs=1e-6)


@pytest.mark.parametrize("fn", [adv.grpo_advantages, adv.dr_grpo_advantages, adv.rloo_advantages])
def test_all_equal_group_gets_zero_advantage_and_no_nan(fn: object) -> None:
    out = fn(SCORES, G)  # type: ignore[operator]
    assert torch.isfinite(out).all()
    assert out[4:8].abs().max().item() == 0.0  # the 0.3, 0.3, 0.3, 0.3 group
    assert out[0:4].abs().max().item() > 0  # the mixed group still learns
    assert abs(out[0:4].sum().item()) < 1e-5  # advantages sum to zero within a group


def test_groups_must_divide_the_batch() -> None:
    with pytest.raises(ValueError, match="groups of 5"):
        adv.grpo_advantages(SCORES, 5)
    with pytest.raises(ValueError, match="at least 2"):
        adv.rloo_advantages(SCORES, 1)


def test_group_stats_counts_zero_std_groups() -> None:
    mean_std, frac_zero = adv.group_stats(SCORES, G)
    stds = [torch.tensor(g).std().item() for g in _groups(SCORES.tolist(), G)]
    assert mean_std == pytest.approx(sum(stds) / 3, abs=1e-6)
    assert frac_zero == pytest.approx(1 / 3)


def _mask() -> torch.Tensor:
    return torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)


def test_reinforce_pp_matches_naive_returns_and_global_whitening() -> None:
    mask = _mask()
    scores = torch.tensor([1.0, -0.5, 0.25])
    kl = torch.tensor([[0.1, -0.2, 0.3, 9.0], [0.0, 0.1, 0.1, 0.2], [0.4, 9.0, 9.0, 9.0]])
    beta, gamma = 0.1, 0.9
    got_adv, got_ret = adv.reinforce_pp_advantages(scores, kl, mask, beta, gamma)
    # slow reference: token rewards, returns by a double loop, whitening over every real token
    rets: list[list[float]] = []
    for i in range(3):
        n = int(mask[i].sum())
        r = [-beta * float(kl[i, t]) + (float(scores[i]) if t == n - 1 else 0.0) for t in range(n)]
        rets.append([sum(gamma ** (s - t) * r[s] for s in range(t, n)) for t in range(n)])
    flat = [x for row in rets for x in row]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)
    for i, row in enumerate(rets):
        n = len(row)
        assert got_ret[i, :n].tolist() == pytest.approx(row, abs=1e-6)
        assert got_adv[i, :n].tolist() == pytest.approx([(x - mean) / math.sqrt(var + 1e-8) for x in row], abs=1e-5)
        assert got_adv[i, n:].abs().sum() == 0 and got_ret[i, n:].abs().sum() == 0


def test_aggregations_match_loops() -> None:
    mask = _mask()
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    rows = [[float(x[i, j]) for j in range(4) if mask[i, j]] for i in range(3)]
    assert adv.aggregate(x, mask, "token_mean").item() == pytest.approx(sum(map(sum, rows)) / 8)
    assert adv.aggregate(x, mask, "seq_mean_token_mean").item() == pytest.approx(
        sum(sum(r) / len(r) for r in rows) / 3)
    assert adv.aggregate(x, mask, "seq_mean_token_sum_norm", norm_len=16).item() == pytest.approx(
        sum(sum(r) / 16 for r in rows) / 3)
    with pytest.raises(ValueError):
        adv.aggregate(x, mask, "seq_mean_token_sum_norm")


def test_clipped_loss_symmetric_equals_ppo_loss() -> None:
    g = torch.Generator().manual_seed(0)
    mask = _mask()
    lp, old, a = (torch.randn(3, 4, generator=g) * 0.3 for _ in range(3))
    ours = adv.clipped_policy_loss(lp, old, a, mask, 0.2, 0.2)
    ref = ops.policy_loss(lp, old, a, mask, 0.2)
    assert ours.loss.item() == pytest.approx(ref.loss.item(), abs=1e-7)
    assert ours.clipfrac.item() == pytest.approx(ref.clipfrac.item())


def test_asymmetric_clip_matches_naive_loop() -> None:
    mask = _mask()
    lp = torch.log(torch.tensor([[0.5, 1.1, 1.5, 1.0], [0.9, 1.25, 0.7, 1.35], [1.6, 1.0, 1.0, 1.0]]))
    old = torch.zeros(3, 4)
    a = torch.tensor([[-1.0, 1.0, 1.0, 0.0], [-2.0, 0.5, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    lo, hi = 0.2, 0.28
    out = adv.clipped_policy_loss(lp, old, a, mask, lo, hi)
    losses, n_low, n_high, n = 0.0, 0, 0, 0
    for i in range(3):
        for t in range(4):
            if not mask[i, t]:
                continue
            r, A = math.exp(float(lp[i, t])), float(a[i, t])
            losses += max(-A * r, -A * min(max(r, 1 - lo), 1 + hi))
            n_low += r < 1 - lo and A < 0
            n_high += r > 1 + hi and A > 0
            n += 1
    assert out.loss.item() == pytest.approx(losses / n, abs=1e-6)
    assert out.clipfrac_low.item() == pytest.approx(n_low / n)  # ratio 0.5 and 0.7 on negative advantages
    assert out.clipfrac_high.item() == pytest.approx(n_high / n)  # 1.5, 1.35 and 1.6 above 1.28
    assert n_low == 1 and n_high == 3


def test_k3_kl_loss_matches_formula_and_has_gradient() -> None:
    mask = _mask()
    g = torch.Generator().manual_seed(1)
    lp = (torch.randn(3, 4, generator=g) * 0.2).requires_grad_()
    ref = torch.randn(3, 4, generator=g) * 0.2
    got = adv.kl_loss_k3(lp, ref, mask)
    d = (ref - lp).detach()
    vals = [math.exp(float(d[i, t])) - float(d[i, t]) - 1 for i in range(3) for t in range(4) if mask[i, t]]
    assert got.item() == pytest.approx(sum(vals) / len(vals), abs=1e-6)
    assert got.item() >= 0
    got.backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0
    assert adv.kl_loss_k3(ref, ref, mask).item() == 0.0  # identical policies: zero


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo"])
def test_sequence_estimators_see_the_score_minus_the_summed_kl_penalty(algorithm: str) -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5])
    kl = torch.tensor([[0.2, 0.1, 7.0], [0.0, 0.3, 0.1], [0.5, 7.0, 7.0], [0.1, 0.1, 0.1]])
    beta = 0.5
    tok_adv, rewards = adv.critic_free_advantages(algorithm, scores, kl, mask, beta, group_size=2)
    seq = [float(scores[i]) - beta * sum(float(kl[i, t]) for t in range(3) if mask[i, t]) for i in range(4)]
    naive = naive_rloo(seq, 2) if algorithm == "rloo" else naive_grpo(seq, 2, scale=algorithm == "grpo")
    for i in range(4):
        n = int(mask[i].sum())
        assert tok_adv[i, :n].tolist() == pytest.approx([naive[i]] * n, abs=1e-5)  # one advantage per response
        assert tok_adv[i, n:].abs().sum() == 0
    assert (rewards * mask).sum(1).tolist() == pytest.approx(seq, abs=1e-6)


def test_reinforce_pp_dispatch_and_loss_aggregations() -> None:
    mask = _mask()
    scores, kl = torch.tensor([1.0, -1.0, 0.5]), torch.full((3, 4), 0.1)
    got, _ = adv.critic_free_advantages("reinforce_pp", scores, kl, mask, 0.2, group_size=1)
    want, _ = adv.reinforce_pp_advantages(scores, kl, mask, 0.2)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="ppo"):
        adv.critic_free_advantages("ppo", scores, kl, mask, 0.2, group_size=1)
    assert [adv.loss_aggregation(a) for a in ("ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp")] == [
        "token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "token_mean", "token_mean"]
