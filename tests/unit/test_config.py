"""Config validation: presets load, overrides apply, bad input names the field."""

from __future__ import annotations

import pytest

from rlhfkit.config import (
    ConfigError,
    apply_overrides,
    clip_bounds,
    config_json_schema,
    generation_batch,
    kl_in_loss,
    load_config,
    logprobs_from_update,
    num_minibatches,
    preset_names,
    responses_per_step,
    scores_while_sampling,
    total_steps,
    update_from_sampling,
    uses_critic,
)


def test_all_presets_validate() -> None:
    names = preset_names()
    assert {"smoke", "default", "gpu_optimized", "debug"} <= set(names)
    for n in names:
        cfg = load_config(n)
        assert total_steps(cfg) >= 1
        assert num_minibatches(cfg) >= 1


def test_dotted_overrides_parse_like_yaml() -> None:
    cfg = load_config("smoke", ["ppo.batch_size=16", "ppo.learning_rate=1e-5", "train.checkpoint_at_end=true", "tags=[a, b]"])
    assert cfg.ppo.batch_size == 16
    assert cfg.ppo.learning_rate == pytest.approx(1e-5)
    assert cfg.train.checkpoint_at_end is True
    assert cfg.tags == ["a", "b"]
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("override,field,needle", [
    (["ppo.batch_sise=8"], "ppo.batch_sise", "allowed keys here"),
    (["model.size=huge"], "model.size", "'tiny'"),
    (["ppo.learning_rate=-1"], "ppo.learning_rate", "greater than 0"),
    # a cross-field error goes to the field its message names first, not to the whole section
    (["ppo.batch_size=30"], "ppo.mini_batch_size", "must divide ppo.batch_size (30)"),
    (["ppo.grad_accum_steps=3"], "ppo.grad_accum_steps", "must divide ppo.mini_batch_size"),
    (["generation.top_p=1.5"], "generation.top_p", "less than or equal"),
    (["generation.batch_size=12"], "generation.batch_size", "must divide ppo.batch_size (32)"),
    (["generation.batch_size=0"], "generation.batch_size", "greater than or equal to 1"),
    (["model.reference_device=gpu"], "model.reference_device", "'same'"),
    (["reward.device=cuda"], "reward.device", "'cpu'"),
    (["ppo.optimizer=sgd"], "ppo.optimizer", "'adamw_8bit'"),
    (["algorithm=grpo"], "generation.samples_per_prompt", "must be >= 2 (got 1)"),
    (["algorithm=rloo", "generation.samples_per_prompt=1"], "generation.samples_per_prompt", "algorithm=rloo"),
    (["algorithm=a2c"], "algorithm", "'reinforce_pp'"),
    (["generation.samples_per_prompt=0"], "generation.samples_per_prompt", "greater than or equal to 1"),
    (["ppo.cliprange_high=-0.1"], "ppo.cliprange_high", "greater than 0"),
    (["ppo.kl_placement=logits"], "ppo.kl_placement", "'loss'"),
])
def test_invalid_config_names_the_field(override: list[str], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config("smoke", override)
    fields = [e["field"] for e in ei.value.errors]
    assert field in fields
    assert needle in str(ei.value)


def test_generation_batch_defaults_to_the_rollout_batch() -> None:
    assert generation_batch(load_config("smoke")) == 32
    assert generation_batch(load_config("smoke", ["generation.batch_size=8"])) == 8
    assert generation_batch(load_config("smoke", ["generation.batch_size=32"])) == 32


def test_unknown_preset_lists_allowed() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config("nope")
    assert "smoke" in str(ei.value)


def test_json_schema_describes_fields() -> None:
    schema = config_json_schema()
    ppo = schema["$defs"]["PPOConfig"]["properties"]
    assert ppo["batch_size"]["description"]
    assert schema["properties"]["model"]


def test_algorithm_defaults_keep_todays_ppo() -> None:
    cfg = load_config("smoke")
    assert cfg.algorithm == "ppo" and uses_critic(cfg) and not kl_in_loss(cfg)
    assert cfg.generation.samples_per_prompt == 1 and responses_per_step(cfg) == 32
    assert clip_bounds(cfg.ppo) == (0.2, 0.2)  # both sides default to the symmetric cliprange


def test_critic_free_algorithms_derive_their_settings() -> None:
    grpo = load_config("smoke", ["algorithm=grpo", "generation.samples_per_prompt=4", "ppo.cliprange_high=0.28"])
    assert not uses_critic(grpo) and kl_in_loss(grpo)  # GRPO paper: k3 in the loss
    assert responses_per_step(grpo) == 128  # ppo.batch_size counts prompts
    assert clip_bounds(grpo.ppo) == (0.2, 0.28)
    rloo = load_config("smoke", ["algorithm=rloo", "generation.samples_per_prompt=2"])
    assert not kl_in_loss(rloo)  # per-token penalty in the reward
    assert kl_in_loss(load_config("smoke", ["algorithm=reinforce_pp", "ppo.kl_placement=loss"]))
    assert not kl_in_loss(load_config("smoke", ["algorithm=grpo", "generation.samples_per_prompt=2",
                                                "ppo.kl_placement=reward"]))


def test_rollout_scores_auto_reads_them_off_sampling_in_fp32_only() -> None:
    """ppo.rollout_scores: auto (the default) reads the old log-probs off the sampling pass for fp32
    models, runs the scoring forward under bf16 autocast, and leaves a one-step critic-free run with
    the KL in the loss to the update's own forward; forward and sampling are what they say."""
    def both(*overrides: str) -> tuple[bool, bool]:
        cfg = load_config("smoke", list(overrides))
        return scores_while_sampling(cfg), logprobs_from_update(cfg)

    assert load_config("smoke").ppo.rollout_scores == "auto"
    assert both() == (True, False)
    assert both("model.dtype=bf16") == (False, False)
    assert both("ppo.rollout_scores=forward") == (False, False)
    assert both("ppo.rollout_scores=sampling", "model.dtype=bf16") == (True, False)
    grpo = ("algorithm=grpo", "generation.samples_per_prompt=4", "ppo.mini_batch_size=32", "ppo.ppo_epochs=1")
    assert both(*grpo) == (False, True)  # one optimizer step, KL in the loss: the update's forward
    assert both(*grpo, "ppo.rollout_scores=forward") == (False, True)
    assert both(*grpo, "ppo.rollout_scores=sampling") == (True, False)
    assert both(*grpo, "ppo.mini_batch_size=8") == (True, False)  # four minibatches: π_old needed first
    assert both(*grpo, "ppo.ppo_epochs=2") == (True, False)
    with pytest.raises(ConfigError, match="rollout_scores"):
        load_config("smoke", ["ppo.rollout_scores=maybe"])


def test_update_activations_auto_builds_on_the_decode_only_where_the_update_runs_the_sampling_weights() -> None:
    """ppo.update_activations: auto (the default) keeps the decode's matmul outputs for the update
    where its first forward runs the weights that sampled over every sampled row in one micro-batch
    (one minibatch, any epochs, fp32, one generation pass), whatever the algorithm, the KL's placement
    or where π_old comes from; recompute never does."""
    grpo = ("algorithm=grpo", "generation.samples_per_prompt=4", "ppo.mini_batch_size=32", "ppo.ppo_epochs=1")

    def kept(*overrides: str) -> bool:
        return update_from_sampling(load_config("smoke", [*grpo, *overrides]))

    assert load_config("smoke").ppo.update_activations == "auto"
    assert kept()
    assert not kept("ppo.update_activations=recompute")
    assert not kept("ppo.grad_accum_steps=2")  # two micro-batches: each would need its rows' outputs
    assert not kept("ppo.mini_batch_size=8")  # the second minibatch runs updated weights
    assert kept("ppo.ppo_epochs=2")  # the first epoch's forward runs the weights that sampled
    assert kept("ppo.rollout_scores=sampling")  # π_old off the sampling pass, the update's forward off the decode
    assert kept("ppo.rollout_scores=forward")
    assert kept("ppo.kl_placement=reward")  # KL in the reward: scoring needs π_old first, the update still one step
    assert kept("algorithm=rloo") and kept("algorithm=reinforce_pp") and kept("algorithm=dr_grpo")
    assert not kept("model.dtype=bf16")  # under autocast a decode's outputs drift from a forward's
    assert not kept("generation.batch_size=8")  # four generation passes: no one decode holds every row
    assert not update_from_sampling(load_config("smoke"))  # PPO's smoke preset: two minibatches
    assert update_from_sampling(load_config("smoke", ["ppo.mini_batch_size=32"]))  # value head on the same trunk
    with pytest.raises(ConfigError, match="update_activations"):
        load_config("smoke", [*grpo, "ppo.update_activations=sometimes"])


def test_json_schema_offers_the_algorithms() -> None:
    schema = config_json_schema()
    assert schema["properties"]["algorithm"]["enum"] == ["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp"]
    assert schema["$defs"]["GenerationConfig"]["properties"]["samples_per_prompt"]["description"]


def test_json_schema_carries_the_cross_field_rules_the_validator_enforces() -> None:
    from rlhfkit.config import PPO_DIVIDES, RunConfig

    schema = RunConfig.model_json_schema()
    assert schema["$defs"]["PPOConfig"]["x-divides"] == [list(r) for r in PPO_DIVIDES]
    for a, b in PPO_DIVIDES:  # each rule is one the validator really enforces
        with pytest.raises(ConfigError, match=f"ppo.{a} .* must divide ppo.{b}"):
            load_config("smoke", [f"ppo.{a}=3", f"ppo.{b}=8"] if a != "grad_accum_steps"
                        else [f"ppo.{a}=3", f"ppo.{b}=8", "ppo.batch_size=32"])
