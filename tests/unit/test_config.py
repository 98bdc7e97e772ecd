"""Config validation: presets load, overrides apply, bad input names the field."""

from __future__ import annotations

import pytest

from rlhfkit.config import (
    ConfigError,
    apply_overrides,
    config_json_schema,
    generation_batch,
    load_config,
    num_minibatches,
    preset_names,
    total_steps,
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
    (["ppo.batch_size=30"], "ppo", "must divide"),
    (["generation.top_p=1.5"], "generation.top_p", "less than or equal"),
    (["generation.batch_size=12"], "generation.batch_size", "must divide ppo.batch_size (32)"),
    (["generation.batch_size=0"], "generation.batch_size", "greater than or equal to 1"),
    (["model.reference_device=gpu"], "model.reference_device", "'same'"),
    (["reward.device=cuda"], "reward.device", "'cpu'"),
    (["ppo.optimizer=sgd"], "ppo.optimizer", "'adamw_8bit'"),
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
