"""PPO math against slow, obvious reference implementations on small hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit import ppo_ops as ops


def _mask() -> torch.Tensor:
    # three responses of lengths 4, 2 and 5 (EOS included), padded to 5
    return torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)


def _rand(seed: int, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


def _valid(x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return [float(x[i, j]) for i in range(x.shape[0]) for j in range(x.shape[1]) if mask[i, j] > 0]


def naive_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Textbook GAE for one episode of length n (terminal after the last token)."""
    n = len(rewards)
    adv = [0.0] * n
    for t in range(n):
        total = 0.0
        for k in range(t, n):
            v_next = values[k + 1] if k + 1 < n else 0.0
            delta = rewards[k] + gamma * v_next - values[k]
            total += (gamma * lam) ** (k - t) * delta
        adv[t] = total
    return adv, [a + v for a, v in zip(adv, values, strict=True)]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0)])
def test_gae_matches_naive_per_episode(gamma: float, lam: float) -> None:
    mask, rewards, values = _mask(), _rand(1), _rand(2)
    adv, ret = ops.compute_gae(rewards, values, mask, gamma, lam)
    for i in range(3):
        n = int(mask[i].sum())
        ref_adv, ref_ret = naive_gae(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        assert adv[i, :n].tolist() == pytest.approx(ref_adv, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx(ref_ret, abs=1e-5)
        assert adv[i, n:].abs().sum() == 0  # padding stays zero


def test_masked_mean_var_whiten_match_python() -> None:
    mask, x = _mask(), _rand(3)
    vals = _valid(x, mask)
    n = len(vals)
    mean = sum(vals) / n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    assert float(ops.masked_mean(x, mask)) == pytest.approx(mean, abs=1e-6)
    assert float(ops.masked_var(x, mask)) == pytest.approx(var, abs=1e-6)
    w = ops.masked_whiten(x, mask)
    expected = [(v - mean) / math.sqrt(var + 1e-8) for v in vals]
    assert _valid(w, mask) == pytest.approx(expected, abs=1e-5)
    w2 = ops.masked_whiten(x, mask, shift_mean=False)
    assert _valid(w2, mask) == pytest.approx([e + mean for e in expected], abs=1e-5)
    assert float((w * (1 - mask)).abs().sum()) == 0.0


def test_policy_loss_matches_naive() -> None:
    mask, lp, old, adv = _mask(), _rand(4) * 0.3, _rand(5) * 0.3, _rand(6)
    eps = 0.2
    out = ops.policy_loss(lp, old, adv, mask, eps)
    losses, clipped, kls, ratios = [], [], [], []
    for i in range(3):
        for j in range(5):
            if mask[i, j] == 0:
                continue
            r = math.exp(float(lp[i, j] - old[i, j]))
            a = float(adv[i, j])
            unclipped, clip = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
            losses.append(max(unclipped, clip))
            clipped.append(1.0 if clip > unclipped else 0.0)
            kls.append((r - 1) - math.log(r))
            ratios.append(r)
    assert float(out.loss) == pytest.approx(sum(losses) / len(losses), abs=1e-6)
    assert float(out.clipfrac) == pytest.approx(sum(clipped) / len(clipped), abs=1e-6)
    assert float(out.approx_kl) == pytest.approx(sum(kls) / len(kls), abs=1e-6)
    assert float(out.ratio_mean) == pytest.approx(sum(ratios) / len(ratios), abs=1e-6)
    assert float(out.ratio_max) == pytest.approx(max(ratios), abs=1e-6)
    assert 0 < float(out.clipfrac) < 1  # the example exercises both branches


def test_value_loss_matches_naive() -> None:
    mask, v, old, ret = _mask(), _rand(7), _rand(8), _rand(9)
    eps = 0.2
    loss, clipfrac = ops.value_loss(v, old, ret, mask, eps)
    ls, cs = [], []
    for i in range(3):
        for j in range(5):
            if mask[i, j] == 0:
                continue
            vv, oo, rr = float(v[i, j]), float(old[i, j]), float(ret[i, j])
            vc = oo + min(max(vv - oo, -eps), eps)
            l1, l2 = (vv - rr) ** 2, (vc - rr) ** 2
            ls.append(0.5 * max(l1, l2))
            cs.append(1.0 if l2 > l1 else 0.0)
    assert float(loss) == pytest.approx(sum(ls) / len(ls), abs=1e-6)
    assert float(clipfrac) == pytest.approx(sum(cs) / len(cs), abs=1e-6)


def test_kl_estimators_match_formulas_and_true_kl() -> None:
    lp, ref = _rand(10) * 0.5, _rand(11) * 0.5
    k1, k3 = ops.kl_estimators(lp, ref)
    for i in range(3):
        for j in range(5):
            d = float(lp[i, j] - ref[i, j])
            assert float(k1[i, j]) == pytest.approx(d, abs=1e-6)
            assert float(k3[i, j]) == pytest.approx(math.exp(-d) - 1 + d, abs=1e-6)
    assert bool((k3 >= 0).all())
    # Both are unbiased: with many samples from p they approach the exact KL(p || q).
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())
    idx = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    e1, e3 = ops.kl_estimators(p.log()[idx], q.log()[idx])
    assert float(e1.mean()) == pytest.approx(exact, abs=0.01)
    assert float(e3.mean()) == pytest.approx(exact, abs=0.01)


def test_kl_penalized_rewards_put_score_on_last_token() -> None:
    mask, kl = _mask(), _rand(12)
    scores = torch.tensor([1.0, -2.0, 0.5])
    r = ops.kl_penalized_rewards(scores, kl, mask, kl_coef=0.1)
    for i, n in enumerate([4, 2, 5]):
        for j in range(5):
            expected = -0.1 * float(kl[i, j]) if j < n else 0.0
            if j == n - 1:
                expected += float(scores[i])
            assert float(r[i, j]) == pytest.approx(expected, abs=1e-6)


def test_logprobs_and_entropy_match_softmax() -> None:
    logits = _rand(13, (2, 3, 7))
    labels = torch.tensor([[0, 6, 3], [2, 2, 5]])
    lp = ops.logprobs_from_logits(logits, labels)
    ent = ops.entropy_from_logits(logits)
    for b in range(2):
        for t in range(3):
            row = logits[b, t].tolist()
            z = sum(math.exp(v) for v in row)
            probs = [math.exp(v) / z for v in row]
            assert float(lp[b, t]) == pytest.approx(math.log(probs[int(labels[b, t])]), abs=1e-5)
            assert float(ent[b, t]) == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-5)


def test_adaptive_kl_controller_matches_ziegler_update() -> None:
    ctl = ops.AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    beta = 0.2
    for kl in [12.0, 6.6, 3.0, 6.0, float("nan"), 100.0]:
        ctl.update(kl, n_steps=256)
        if math.isfinite(kl):
            err = min(max(kl / 6.0 - 1, -0.2), 0.2)
            beta *= 1 + err * 256 / 10_000
        assert ctl.value == pytest.approx(beta, rel=1e-12)
    assert ctl.value > 0.2  # net effect of mostly-high KL is a larger beta
    fixed = ops.FixedKLController(0.05)
    fixed.update(100.0, 256)
    assert fixed.value == 0.05


def test_explained_variance() -> None:
    mask = _mask()
    ret = _rand(14)
    assert ops.explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert ops.explained_variance(torch.zeros_like(ret) + float(ops.masked_mean(ret, mask)), ret, mask) == pytest.approx(0.0, abs=1e-5)


def test_running_moments_match_the_moments_of_everything_seen() -> None:
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=g) * 4.2 + 3.0 for n in (1, 7, 32, 5)]
    rm = ops.RunningMoments()
    for b in batches:
        rm.update(b)
    allx = torch.cat(batches).double()
    assert rm.count == len(allx)
    assert math.isclose(rm.mean, float(allx.mean()), rel_tol=1e-12)
    assert math.isclose(rm.var, float(allx.var(unbiased=False)), rel_tol=1e-12)
    z = rm.normalize(allx.float())
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std(unbiased=False)) - 1) < 1e-5


def test_distinct_n_counts_unique_ngrams_over_masked_tokens() -> None:
    tokens = torch.tensor([[1, 2, 1, 2, 9], [1, 2, 3, 7, 7]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    # bigrams: (1,2) (2,1) (1,2) | (1,2) (2,3) -> 5 in all, 3 unique; the masked 9 and 7s are not read
    assert ops.distinct_n(tokens, mask, 2) == 3 / 5
    assert ops.distinct_n(tokens, mask, 1) == 3 / 7
    assert math.isnan(ops.distinct_n(tokens[:, :1], mask[:, :1], 2))
