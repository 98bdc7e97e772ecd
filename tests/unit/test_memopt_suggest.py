"""suggest_config: ranked candidates that fit the budget, a valid RunConfig YAML, and a measured
peak under the budget."""

from __future__ import annotations

import pytest

from rlhfkit.config import load_config
from rlhfkit.memopt import estimate_memory, measure
from rlhfkit.memopt import suggest as suggest_mod
from rlhfkit.memopt.suggest import format_candidates, suggest_config


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


def _cuda_search(cfg, monkeypatch: pytest.MonkeyPatch, bnb: bool = False, **kw):  # noqa: ANN001, ANN003, ANN202
    monkeypatch.setattr(suggest_mod, "bitsandbytes_available", lambda: bnb)
    return suggest_config(cfg, device="cuda", headroom=0.0, **kw)


def test_search_tries_generation_batches_that_divide_the_rollout_batch() -> None:
    cands = suggest_config(load_config("default"), budget_gb=64, device="cpu", top=100_000)
    tried = {(c.overrides["ppo.batch_size"], c.overrides["generation.batch_size"]) for c in cands}
    assert (64, 8) in tried and (64, 32) in tried and (64, None) in tried
    assert all(gb is None or (B % gb == 0 and gb < B) for B, gb in tried)
    by = {(c.overrides["ppo.batch_size"], c.overrides["generation.batch_size"]): c for c in cands
          if not c.overrides["model.gradient_checkpointing"] and c.overrides["ppo.mini_batch_size"] == 16}
    whole, chunked = by[(64, None)].plan, by[(64, 8)].plan
    assert estimate_memory(chunked).stages["generation"]["kv_cache"] * 8 == \
        estimate_memory(whole).stages["generation"]["kv_cache"]
    assert by[(64, 8)].tokens_per_sec < by[(64, None)].tokens_per_sec  # more passes, more launch overhead


def test_cuda_budget_that_only_fits_with_the_reference_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("default", {"model.size": "small", "model.vocab_size": 50257})
    everything = _cuda_search(cfg, monkeypatch, budget_gb=64, top=1_000_000, max_batch_factor=1)
    on_gpu = min(c.peak_bytes for c in everything if c.overrides["model.reference_device"] == "same")
    on_cpu = min(c.peak_bytes for c in everything if c.overrides["model.reference_device"] == "cpu")
    assert on_cpu < on_gpu
    budget = (on_cpu + on_gpu) / 2 / 2**30
    best = _cuda_search(cfg, monkeypatch, budget_gb=budget)[0]
    assert best.fits and best.overrides["model.reference_device"] == "cpu"
    assert best.config.model.reference_device == "cpu"
    # a CPU search leaves the placement alone: it frees nothing there
    assert {c.overrides["model.reference_device"] for c in suggest_config(cfg, budget_gb=64, device="cpu")} == {"same"}


def test_reward_model_placement_is_searched_when_there_is_a_reward_model(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from rlhfkit import tiny
    from rlhfkit.rewards import ModelReward

    ModelReward(tiny.get_tokenizer(), n_layer=2, n_embd=64, n_head=2).save(tmp_path / "rm")
    cfg = load_config("default", {"reward.kind": "model", "reward.model_path": str(tmp_path / "rm")})
    cands = _cuda_search(cfg, monkeypatch, budget_gb=64, top=1_000_000, max_batch_factor=1)
    assert {c.overrides["reward.device"] for c in cands} == {"same", "cpu"}
    same = next(c for c in cands if c.overrides["reward.device"] == "same")
    moved = next(c for c in cands if c.overrides == {**same.overrides, "reward.device": "cpu"})
    assert moved.peak_bytes < same.peak_bytes
    # no reward model (VADER): nothing to place
    assert {c.overrides["reward.device"] for c in _cuda_search(load_config("default"), monkeypatch, budget_gb=64)} \
        == {"same"}


def test_8bit_adamw_is_searched_only_when_bitsandbytes_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("default")
    without = _cuda_search(cfg, monkeypatch, budget_gb=64, top=1_000_000, max_batch_factor=1)
    assert {c.overrides["ppo.optimizer"] for c in without} == {"adamw"}
    assert any("8-bit AdamW" in n and "bitsandbytes is not installed" in n for n in without[0].notes)
    assert "not searched" in format_candidates(without[:3], 64)
    with_bnb = _cuda_search(cfg, monkeypatch, bnb=True, budget_gb=64, top=1_000_000, max_batch_factor=1)
    assert {c.overrides["ppo.optimizer"] for c in with_bnb} == {"adamw", "adamw_8bit"}
    assert not any("not searched" in n for n in with_bnb[0].notes)
    # with room to spare, 8-bit buys nothing: the config's own optimizer wins the tie
    assert with_bnb[0].overrides["ppo.optimizer"] == "adamw"


def test_critic_free_search_leaves_the_value_head_alone() -> None:
    cfg = load_config("smoke", {"algorithm": "rloo", "generation.samples_per_prompt": 4})
    cands = suggest_config(cfg, budget_gb=2, device="cpu", top=50)
    assert {c.overrides["model.shared_value_trunk"] for c in cands} == {cfg.model.shared_value_trunk}
    assert not any("value head placement" in n for c in cands for n in c.notes)
    best = cands[0]
    assert best.config.algorithm == "rloo" and best.plan.sequences == 4 * best.overrides["ppo.batch_size"]
    assert best.tokens_per_sec == pytest.approx(best.plan.sequences * best.plan.response_len / best.step_seconds)


def test_candidates_print_in_throughput_order_as_the_readme_says() -> None:
    """README: `suggest_config` lists configurations ranked by predicted throughput. The table's
    tokens/s column never goes up from one row to the next among fitting candidates."""
    cands = suggest_config(load_config("default"), budget_gb=2, device="cpu", top=12)
    fitting = [c for c in cands if c.fits]
    assert len(fitting) >= 4
    printed = [round(c.tokens_per_sec) for c in fitting]
    assert printed == sorted(printed, reverse=True), printed


def test_make_suggest_config_honours_config() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def recipe(*args: str) -> str:
        out = subprocess.run(["make", "-n", "--no-print-directory", "suggest_config", *args],
                             cwd=root, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return next(ln for ln in out.stdout.splitlines() if "suggest-config" in ln)

    assert "--config configs/smoke.yaml" in recipe("CONFIG=configs/smoke.yaml")
    assert "--config configs/default.yaml" in recipe()  # the default when CONFIG is not given


def test_groups_split_same_math_from_algorithm_changes() -> None:
    from rlhfkit.memopt.suggest import algorithm_changes, suggest_groups

    cfg = load_config("smoke")
    B, mb = cfg.ppo.batch_size, cfg.ppo.mini_batch_size
    assert algorithm_changes(cfg, {"ppo.grad_accum_steps": 2, "generation.batch_size": 8}) == []
    assert algorithm_changes(cfg, {"ppo.batch_size": 2 * B, "ppo.mini_batch_size": 2 * mb}) == [
        f"rollout batch {B} -> {2 * B} (2x samples per PPO step; retune the learning rate / KL coefficient if "
        "learning dynamics matter)"]  # same minibatch count: only the batch changes
    assert "minibatches per epoch" in algorithm_changes(cfg, {"ppo.mini_batch_size": B})[0]
    sg = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=3)
    assert sg.current.overrides == {} and sg.current.peak_bytes > 0
    assert 1 <= len(sg.same_math) <= 3 and 1 <= len(sg.changes_algorithm) <= 3
    for c in sg.same_math:
        assert c.overrides["ppo.batch_size"] == B and c.overrides["ppo.mini_batch_size"] == mb
    assert all(c.algorithm_changes for c in sg.changes_algorithm)
    assert all(n not in c.notes for c in sg.candidates for n in sg.notes)


def test_response_lengths_stay_within_the_configs_limits() -> None:
    from rlhfkit.memopt.suggest import response_lengths

    cfg = load_config("default", {"generation.max_new_tokens": 24, "model.max_length": 128})
    assert response_lengths(cfg, prompt_len=48) == ([12, 48], [])
    # the prompts leave room for 30 response tokens: the longer cap stops there
    assert response_lengths(cfg, prompt_len=98)[0] == [12, 30]
    # no room at all, or nothing shorter than one token: that side is left out, and a note says why
    full, notes = response_lengths(cfg, prompt_len=104)
    assert full == [12] and "model.max_length (128)" in notes[0]
    one = load_config("default", {"generation.max_new_tokens": 1})
    assert response_lengths(one, prompt_len=48) == ([2], ["no shorter response cap was offered: "
                                                          "generation.max_new_tokens is already 1"])
    # the field's own bound (le=2048) holds however long model.max_length is
    big = load_config("default", {"generation.max_new_tokens": 1500, "model.max_length": 4096})
    assert response_lengths(big, prompt_len=48)[0] == [750, 2048]


def test_algorithm_group_offers_shorter_and_longer_responses_and_says_what_they_change() -> None:
    from rlhfkit.memopt.suggest import suggest_groups

    cfg = load_config("default")
    R0 = cfg.generation.max_new_tokens
    sg = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=3, prompt_len=48)
    assert len(sg.changes_algorithm) <= 3
    by_len = {c.overrides["generation.max_new_tokens"]: c for c in sg.changes_algorithm
              if c.overrides["generation.max_new_tokens"] != R0}
    assert set(by_len) == {R0 // 2, 2 * R0}
    shorter, longer = by_len[R0 // 2], by_len[2 * R0]
    assert shorter.algorithm_changes == [f"response cap {R0} -> {R0 // 2} tokens: responses may be cut shorter: "
                                         "the reward sees different text (and a step trains on fewer tokens)"]
    assert "responses may run longer: the reward sees different text" in longer.algorithm_changes[0]
    for c in (shorter, longer):  # only the response cap moves; the config they launch says so
        assert c.group == "changes_algorithm" and c.fits
        assert c.config.generation.max_new_tokens == c.overrides["generation.max_new_tokens"]
        assert c.config.ppo == cfg.ppo and c.config.model == cfg.model
    assert shorter.peak_bytes < sg.current.peak_bytes < longer.peak_bytes
    assert shorter.step_seconds < sg.current.step_seconds < longer.step_seconds
    # the group stays ranked: fitting rows by predicted throughput
    rates = [round(c.tokens_per_sec) for c in sg.changes_algorithm]
    assert rates == sorted(rates, reverse=True)
    # a budget the longer cap does not fit: it is left out and a shared note says so
    tight = (sg.current.peak_bytes + longer.peak_bytes) / 2 / 2**30
    sg2 = suggest_groups(cfg, budget_gb=tight, device="cpu", headroom=0.0, top_per_group=3, prompt_len=48)
    assert 2 * R0 not in {c.overrides["generation.max_new_tokens"] for c in sg2.changes_algorithm}
    assert any(f"response cap of {2 * R0} tokens was not offered" in n for n in sg2.notes)


def test_throughput_counts_the_measured_response_length_not_max_new_tokens() -> None:
    """Runs stop at EOS (the smoke preset generates ~7 of 16 tokens per response): with a measured run's
    lengths the tokens/s figure counts what it generated; without one it counts max_new_tokens and the
    shared notes say so."""
    from rlhfkit.memopt.suggest import MeasuredRun, suggest_groups

    cfg = load_config("smoke")
    R = cfg.generation.max_new_tokens
    plain = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=1)
    assert plain.current.tokens_per_sec == pytest.approx(
        plain.current.plan.sequences * R / plain.current.step_seconds)
    assert any(f"generation.max_new_tokens ({R} tokens)" in n for n in plain.notes)

    # every step had a response of full length: the same step time, 7.1 of R tokens counted
    full = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=1,
                          measured=MeasuredRun(mean=7.1, longest=R, source="run smoke-1"))
    assert full.current.step_seconds == pytest.approx(plain.current.step_seconds)
    assert full.current.tokens_per_sec == pytest.approx(plain.current.tokens_per_sec * 7.1 / R)
    assert full.same_math[0].tokens_per_sec == pytest.approx(
        full.same_math[0].plan.sequences * 7.1 / full.same_math[0].step_seconds)
    assert any("7.1 of 16 tokens" in n and "run smoke-1" in n for n in full.notes)
    assert full.current.peak_bytes == plain.current.peak_bytes  # memory still plans for max_new_tokens

    # generation stops when the longest response ends: shorter steps than at max_new_tokens
    short = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=1,
                           measured=MeasuredRun(mean=7.1, longest=12.0))
    assert short.current.step_seconds < full.current.step_seconds


def test_a_measured_tokens_per_sec_anchors_every_row_without_changing_the_ranking() -> None:
    """With the run's measured tokens/s, row 0 shows it and every candidate keeps the model's ratio to
    row 0 (the model's absolute rate is one CPU's; the ratio is what it predicts); a note says so."""
    from rlhfkit.memopt.suggest import MeasuredRun, suggest_groups

    cfg = load_config("smoke")
    found = MeasuredRun(mean=7.1, longest=12.0, source="run smoke-1")
    model = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=3, measured=found)
    anchored = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=3,
                              measured=MeasuredRun(mean=7.1, longest=12.0, source="run smoke-1", tokens_per_sec=123.0))
    assert anchored.current.tokens_per_sec == pytest.approx(123.0)
    assert [c.overrides for c in anchored.candidates] == [c.overrides for c in model.candidates]
    for a, m in zip(anchored.candidates, model.candidates, strict=True):
        assert a.tokens_per_sec / anchored.current.tokens_per_sec == pytest.approx(
            m.tokens_per_sec / model.current.tokens_per_sec)
        assert a.peak_bytes == m.peak_bytes
    assert any("anchored to run smoke-1" in n and "123 tokens/s" in n for n in anchored.notes)
    assert not any("anchored" in n for n in model.notes)
    assert anchored.anchored and not model.anchored
    zero = suggest_groups(cfg, budget_gb=4, device="cpu", top_per_group=1,
                          measured=MeasuredRun(mean=7.1, longest=12.0, tokens_per_sec=0.0))
    assert not zero.anchored  # a run that measured nothing anchors nothing
