"""Run configuration: one pydantic model validates YAML files, CLI ``--set`` overrides, REST bodies
and (through its JSON Schema) the web form.

Every field says what it does in its description, which becomes the form's help text. Unknown keys
are errors, so a typo never silently falls back to a default. Derived quantities (minibatch count,
total steps) are computed by functions, not by mutating the config.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MODEL_SIZES = ("tiny", "small", "medium", "large", "custom")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Strict):
    size: Literal["tiny", "small", "medium", "large", "custom"] = Field(
        "tiny", description="tiny = offline model with the shipped tokenizer; small/medium/large = GPT-2 124M/355M/774M shapes; custom = n_layer/n_embd/n_head below")
    pretrained: str | None = Field(None, description="Hub name or local path loaded with from_pretrained (GPU boxes). Overrides size.")
    n_layer: int | None = Field(None, ge=1, le=96, description="Transformer layers (custom shape)")
    n_embd: int | None = Field(None, ge=16, le=8192, description="Hidden width (custom shape)")
    n_head: int | None = Field(None, ge=1, le=128, description="Attention heads (custom shape)")
    vocab_size: int | None = Field(None, ge=16, le=300_000, description="Vocabulary size (custom shape without tokenizer: random token prompts)")
    max_length: int = Field(128, ge=8, le=4096, description="Maximum prompt + response length in tokens")
    warm_start: bool = Field(True, description="tiny only: start from the project's reproducible supervised warm-start so samples read like English")
    shared_value_trunk: bool = Field(True, description="Value head on the policy's transformer trunk (saves one forward pass and one model's memory)")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory")
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="bf16 uses autocast on CUDA; CPU runs stay fp32")
    reference_device: Literal["same", "cpu"] = Field(
        "same", description="Where the frozen reference model lives: same = the policy's device; cpu = host memory "
        "(frees one model's weights on the GPU; its scoring forward then runs on the CPU). No effect on CPU runs")

    @model_validator(mode="after")
    def _custom_needs_shape(self) -> ModelConfig:
        if self.size == "custom" and not self.pretrained and not (self.n_layer and self.n_embd and self.n_head):
            raise ValueError("model.size=custom needs model.n_layer, model.n_embd and model.n_head")
        if self.n_embd and self.n_head and self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        return self


class GenerationConfig(_Strict):
    max_new_tokens: int = Field(24, ge=1, le=2048, description="Response length cap in tokens")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1.0 = off)")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off)")
    stop_at_eos: bool = Field(True, description="Stop a response at the end-of-sequence token")
    missing_eos_penalty: float | None = Field(None, description="Subtract this from the score of responses without EOS (None = off)")
    stop_token: str | None = Field(
        None, max_length=64, description="Truncate each response after the first occurrence of this token (e.g. '.' "
        "or '\\n'; it must be one token of the policy's tokenizer). The stop token is kept, later tokens become "
        "padding, and a response that stopped there counts as ended like one that emitted EOS. None = off")
    batch_size: int | None = Field(
        None, ge=1, title="Generation batch size", description="Prompts sampled per generation pass: the rollout batch is generated in chunks of this "
        "many (None = all ppo.batch_size prompts at once). Must divide ppo.batch_size. Smaller chunks need a smaller "
        "KV cache; larger ones generate faster")
    samples_per_prompt: int = Field(
        1, ge=1, le=256, title="Samples per prompt (G)", description="Responses sampled for each prompt: the group size G "
        "of grpo, dr_grpo and rloo (>= 2 there). A step trains on ppo.batch_size x G responses")


class RewardConfig(_Strict):
    kind: Literal["sentiment", "length", "model"] = Field("sentiment", description="sentiment = VADER compound score; length = closeness to target_length; model = learned reward model")
    target_length: int = Field(12, ge=1, description="length reward: target response length in words")
    model_path: str | None = Field(None, description="model reward: directory written by `rlhfkit train-rm`")
    scale: float = Field(1.0, description="Multiply scores by this")
    normalize: bool = Field(
        False, description="Normalise scores with a running mean and std over every batch so far (updated with "
        "the batch first), so the score fed to PPO has mean ~0 and std ~1 whatever the reward model's scale")
    clip: float | None = Field(
        None, gt=0, description="Clip the score fed to PPO to [-clip, clip] (after normalisation when both are on; "
        "reward/* metrics stay the raw scores). None = off")
    device: Literal["same", "cpu"] = Field(
        "same", title="Reward model device", description="model reward: where the reward model lives and scores: same = the policy's device; "
        "cpu = host memory (frees its weights and activations on the GPU). No effect on CPU runs")


# Cross-field rules of the ppo section, (a, b): a must divide b. The validator below enforces them and
# the JSON Schema carries them as "x-divides", so the UI form checks the same rules before submit.
PPO_DIVIDES: tuple[tuple[str, str], ...] = (("mini_batch_size", "batch_size"), ("grad_accum_steps", "mini_batch_size"))


class PPOConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              json_schema_extra={"x-divides": [list(rule) for rule in PPO_DIVIDES]})

    batch_size: int = Field(32, ge=1, le=65536, description="Prompts per step (each brings generation.samples_per_prompt responses)")
    mini_batch_size: int = Field(8, ge=1, description="Prompts per optimizer minibatch (with their samples_per_prompt responses each); must divide batch_size")
    grad_accum_steps: int = Field(1, ge=1, description="Split each minibatch into this many micro-batches")
    ppo_epochs: int = Field(4, ge=1, le=100, description="Passes over the rollout batch per step")
    learning_rate: float = Field(1e-5, gt=0, le=1.0, description="AdamW learning rate")
    optimizer: Literal["adamw", "adamw_8bit"] = Field(
        "adamw", description="adamw = torch AdamW (fp32 moments); adamw_8bit = bitsandbytes AdamW8bit (1-byte "
        "block-quantised moments for tensors of 4096+ elements): needs the optional bitsandbytes package")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="Learning-rate schedule over the run")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps of the schedule")
    weight_decay: float = Field(0.0, ge=0)
    kl_coef: float = Field(0.2, ge=0, description="Initial KL penalty coefficient beta")
    kl_controller: Literal["adaptive", "fixed"] = Field("adaptive", description="adaptive = Ziegler et al. proportional controller; fixed = constant beta")
    kl_target: float = Field(6.0, gt=0, description="Adaptive controller's target KL (nats per sequence)")
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller's horizon in samples")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Estimator used in the per-token penalty (both are reported)")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    cliprange: float = Field(0.2, gt=0, le=10, description="Policy ratio clip epsilon")
    cliprange_low: float | None = Field(
        None, gt=0, le=10, description="Lower clip: the ratio is clipped at 1 - cliprange_low (None = cliprange)")
    cliprange_high: float | None = Field(
        None, gt=0, le=10, description="Upper clip: the ratio is clipped at 1 + cliprange_high (None = cliprange). DAPO's "
        "clip-higher raises it (e.g. 0.28 with cliprange_low 0.2) so rare tokens can still gain probability")
    kl_placement: Literal["auto", "reward", "loss"] = Field(
        "auto", title="KL placement", description="Where the KL to the reference acts: reward = a per-token penalty in "
        "the reward (PPO, RLOO, REINFORCE++); loss = beta x k3 added to the loss (the GRPO paper); auto = loss for "
        "grpo and dr_grpo, reward otherwise")
    cliprange_value: float = Field(0.2, gt=0, description="Value prediction clip")
    value_coef: float = Field(0.5, ge=0, description="Value loss weight")
    entropy_coef: float = Field(0.01, ge=0, description="Entropy bonus weight")
    max_grad_norm: float = Field(1.0, gt=0, description="Clip the global gradient norm to this")
    whiten_rewards: bool = Field(False, description="Whiten scores across the batch before GAE")
    whiten_advantages: bool = Field(True, description="Whiten advantages before the policy loss (PPO; the critic-free "
                                    "estimators normalise their own: per group for grpo, over the batch for reinforce_pp)")
    rollout_scores: Literal["auto", "forward", "sampling"] = Field(
        "auto", description="Where the old log-probs and values come from: forward = a scoring pass of the "
        "policy over the finished sequences (as OpenRLHF and verl); sampling = read off the sampling pass's logits "
        "and hidden states (TRL's PPOTrainer took its old log-probs this way): one policy forward fewer per step, "
        "same numbers to fp32 rounding; auto = sampling for fp32 models, forward for bf16 ones (under autocast the "
        "sampler's logits drift from a forward's). A separate critic, or a model the lean sampler does not "
        "support, still gets the forward. A critic-free run with one optimizer step per rollout and the KL in the "
        "loss needs neither (unless sampling is asked for): the update reads them off its own forward")
    update_activations: Literal["auto", "recompute"] = Field(
        "auto", description="Where the update's forward takes its matmul outputs from: auto = from the sampling "
        "pass, where the update's first forward runs the weights that sampled over exactly the sampled "
        "sequences (one minibatch of one micro-batch, any number of epochs; fp32; the whole batch sampled in one "
        "generation pass; any algorithm, KL placement or source of the old log-probs): the decode keeps each "
        "block's matmul outputs and that forward builds its graph on them, one policy forward's matmuls fewer per "
        "step, the same gradient to fp32 rounding, the kept outputs held from generation to the first backward; "
        "recompute = the update runs its own forward")

    @model_validator(mode="after")
    def _divides(self) -> PPOConfig:
        for a, b in PPO_DIVIDES:
            va, vb = getattr(self, a), getattr(self, b)
            if vb % va:
                raise ValueError(f"ppo.{a} ({va}) must divide ppo.{b} ({vb})")
        return self


class TrainConfig(_Strict):
    num_epochs: int = Field(1, ge=1, description="Epochs (each runs steps_per_epoch PPO steps)")
    steps_per_epoch: int = Field(40, ge=1, description="PPO steps per epoch")
    eval_every: int = Field(10, ge=0, description="Evaluate on held-out prompts every N steps (0 = start and end only)")
    eval_prompts: int = Field(64, ge=1, description="Held-out prompts per evaluation")
    eval_samples_logged: int = Field(8, ge=0, description="Prompt/response pairs stored per evaluation")
    checkpoint_every: int = Field(0, ge=0, description="Save a checkpoint every N steps (0 = only at the end if checkpoint_at_end)")
    checkpoint_at_end: bool = Field(False, description="Save a checkpoint when the run ends")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None = torch default)")
    malloc_keep_freed: bool = Field(True, description="CPU runs on glibc: keep freed heap memory for reuse (blocks "
                                    "up to 32 MiB from the heap, trimming only past 1 GiB free), so the step's large "
                                    "tensors do not fault in fresh pages every step; the process's resident memory then "
                                    "stays near its high-water mark. Skipped where MALLOC_* / GLIBC_TUNABLES or a "
                                    "preloaded allocator already decide")
    resume_from: str | None = Field(None, description="Checkpoint file (checkpoints/step_N.pt) to resume from")


class MonitorConfig(_Strict):
    stop_on_critical: bool = Field(False, description="Stop the run when a critical alert fires")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Override StabilityMonitor thresholds by rule name")
    system_interval_s: float = Field(10.0, ge=1.0, le=3600.0, description="Seconds between system/* samples (process CPU "
                                     "and memory, host memory, per-GPU utilisation, memory, power, temperature), "
                                     "taken on a thread of their own")


class ProfileConfig(_Strict):
    enabled: bool = Field(False, description="Profile the run with torch.profiler: Chrome trace, speedscope flame graph, per-stage summary and bottleneck report become run artifacts")
    stages: list[str] | None = Field(None, description="Profile only these stages (e.g. [generation] or [update]); empty = all")
    skip_first: int = Field(1, ge=0, description="Schedule: PPO steps skipped before profiling starts")
    wait: int = Field(1, ge=0, description="Schedule: idle steps at the start of each cycle")
    warmup: int = Field(1, ge=0, description="Schedule: traced-but-discarded steps before recording")
    active: int = Field(2, ge=1, description="Schedule: steps recorded per cycle")
    repeat: int = Field(1, ge=0, description="Schedule: cycles (0 = until the run ends)")
    record_shapes: bool = Field(False, description="Record operator input shapes (larger traces)")
    profile_memory: bool = Field(False, description="Record allocations in the trace")


Algorithm = Literal["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
# Algorithms whose baseline is the other responses to the same prompt: they need G >= 2.
GROUP_ALGORITHMS = ("grpo", "dr_grpo", "rloo")


class RunConfig(_Strict):
    name: str = Field("run", min_length=1, max_length=200, description="Human-readable run name")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for torch, numpy and Python RNGs")
    tags: list[str] = Field(default_factory=list, description="Free-form tags")
    algorithm: Algorithm = Field(
        "ppo", description="ppo = clipped PPO with a value head and GAE; the critic-free family builds no value head: "
        "grpo = group-normalised advantages (r - mean) / std over generation.samples_per_prompt responses; dr_grpo = "
        "GRPO without the std division, token losses summed and divided by max_new_tokens; rloo = leave-one-out "
        "baseline; reinforce_pp = REINFORCE++ (KL in the reward, returns whitened over the batch)")
    model: ModelConfig = Field(default_factory=ModelConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)

    @model_validator(mode="after")
    def _generation_batch_divides(self) -> RunConfig:
        gb, b = self.generation.batch_size, self.ppo.batch_size
        if gb is not None and b % gb:
            # raised with its own location so the error names generation.batch_size, not the whole config
            raise ValidationError.from_exception_data("RunConfig", [InitErrorDetails(
                type=PydanticCustomError("divides", "generation.batch_size ({gb}) must divide ppo.batch_size ({b})",
                                         {"gb": gb, "b": b}),
                loc=("generation", "batch_size"), input=gb)])
        G = self.generation.samples_per_prompt
        if self.algorithm in GROUP_ALGORITHMS and G < 2:
            raise ValidationError.from_exception_data("RunConfig", [InitErrorDetails(
                type=PydanticCustomError("group_size", "algorithm={alg} compares each response with the others to its "
                                         "prompt: generation.samples_per_prompt must be >= 2 (got {g})",
                                         {"alg": self.algorithm, "g": G}),
                loc=("generation", "samples_per_prompt"), input=G)])
        return self


def total_steps(cfg: RunConfig) -> int:
    return cfg.train.num_epochs * cfg.train.steps_per_epoch


def num_minibatches(cfg: RunConfig) -> int:
    return cfg.ppo.batch_size // cfg.ppo.mini_batch_size


def responses_per_step(cfg: RunConfig) -> int:
    """Responses a step trains on: ``ppo.batch_size`` prompts x ``generation.samples_per_prompt``."""
    return cfg.ppo.batch_size * cfg.generation.samples_per_prompt


def uses_critic(cfg: RunConfig) -> bool:
    """True for PPO; the critic-free family builds no value head and runs no value pass."""
    return cfg.algorithm == "ppo"


def kl_in_loss(cfg: RunConfig) -> bool:
    """Whether the KL to the reference is a k3 loss term (else a per-token reward penalty)."""
    placement = cfg.ppo.kl_placement
    if placement == "auto":
        return cfg.algorithm in ("grpo", "dr_grpo")
    return placement == "loss"


def logprobs_from_update(cfg: RunConfig) -> bool:
    """Whether π_old is exactly the policy the update's forward runs, with nothing before the update
    needing its log-probs: no critic, the KL in the loss, one optimizer step per rollout (one epoch,
    one minibatch), and ``ppo.rollout_scores`` not ``sampling``. Then the update reads the old
    log-probs off its own forward (see ``PPOTrainer.logprobs_from_update``)."""
    p = cfg.ppo
    return (not uses_critic(cfg) and kl_in_loss(cfg) and p.ppo_epochs == 1 and p.mini_batch_size == p.batch_size
            and p.rollout_scores != "sampling")


def update_from_sampling(cfg: RunConfig) -> bool:
    """Whether the update's first forward takes its matmul outputs from the sampling pass
    (``ppo.update_activations``): under ``auto``, where that forward runs the weights that sampled
    over every sampled row (one minibatch of one micro-batch; with several epochs, the first epoch's
    forward), fp32, with every prompt of the batch in one generation pass (so one decode holds every
    row). The critic, the KL's placement and where the old log-probs come from do not matter: the
    kept outputs are the policy trunk's, and a value head on that trunk reads the hidden states built
    on them. (With several minibatches only the first would run the sampling weights: a fraction of
    the rows, for the cost of keeping all of them; not taken.)"""
    p = cfg.ppo
    whole_batch = p.mini_batch_size == p.batch_size and p.grad_accum_steps == 1
    return (p.update_activations == "auto" and whole_batch and cfg.model.dtype == "fp32"
            and generation_batch(cfg) >= p.batch_size)


def scores_while_sampling(cfg: RunConfig) -> bool:
    """Whether the old log-probs (and PPO's values) are to be read off the sampling pass
    (``ppo.rollout_scores``; ``auto``: for fp32 models, unless the update reads them off its own
    forward). Where the policy cannot supply them the trainer still runs the scoring forward."""
    source = cfg.ppo.rollout_scores
    auto = source == "auto" and cfg.model.dtype == "fp32" and not logprobs_from_update(cfg)
    return source == "sampling" or auto


def clip_bounds(p: PPOConfig) -> tuple[float, float]:
    """(eps_low, eps_high): the ratio is clipped to [1 - eps_low, 1 + eps_high]."""
    low = p.cliprange_low if p.cliprange_low is not None else p.cliprange
    high = p.cliprange_high if p.cliprange_high is not None else p.cliprange
    return low, high


def generation_batch(cfg: RunConfig) -> int:
    """Prompts per generation pass (``generation.batch_size``, or the whole rollout batch)."""
    return cfg.generation.batch_size or cfg.ppo.batch_size


def field_bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """The inclusive ``(ge, le)`` bounds a field declares (None where it declares none), so code that
    proposes values (``rlhfkit.memopt.suggest``) stays within what validation accepts."""
    lo = hi = None
    for m in model.model_fields[name].metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def check_runtime(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` for settings this process cannot run (an optional package missing).

    Kept apart from validation: a config that names ``ppo.optimizer: adamw_8bit`` is valid on the
    service host even when only the workers have bitsandbytes.
    """
    import importlib.util

    if cfg.ppo.optimizer == "adamw_8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError([{"field": "ppo.optimizer", "type": "unavailable",
                            "message": "adamw_8bit needs the bitsandbytes package, which is not installed here "
                                       "(pip install bitsandbytes, or use ppo.optimizer=adamw)"}])


# ----------------------------------------------------------------------------- loading

class ConfigError(ValueError):
    """A config that does not validate; ``str()`` names every bad field and what is allowed."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("invalid config:\n" + "\n".join(f"  {e['field']}: {e['message']}" for e in errors))


_NAMED_FIELD = re.compile(r"Value error, ([a-z_]+(?:\.[a-z_]+)+) ")


def format_validation_error(exc: ValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = sorted(_fields_at(parent))
            msg = f"unknown key; allowed keys here: {', '.join(allowed)}"
        elif err["type"] == "literal_error" and "expected" in (err.get("ctx") or {}):
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "value_error":
            # a section's cross-field check ("ppo.mini_batch_size (5) must divide ppo.batch_size (32)")
            # belongs to the field its message names first, so a form can show it on that field
            named = _NAMED_FIELD.match(msg)
            if named and named[1].startswith(f"{loc}.") and named[1].count(".") == loc.count(".") + 1:
                loc = named[1]
        out.append({"field": loc, "message": msg, "type": err["type"]})
    return out


def _fields_at(path: tuple[Any, ...]) -> set[str]:
    model: type[BaseModel] = RunConfig
    for p in path:
        ann = model.model_fields[str(p)].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return set()
    return set(model.model_fields)


def validate_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value the way YAML would (``1e-5``, ``true``, ``[a, b]``, ``null``)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # yaml 1.1 reads 1e-5 as a string
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Apply dotted-key overrides: ``{"ppo.batch_size": 16}`` or ``["ppo.batch_size=16"]``."""
    out = copy.deepcopy(data)
    items: list[tuple[str, Any]]
    if isinstance(overrides, list):
        items = []
        for text in overrides:
            if "=" not in text:
                raise ConfigError([{"field": text, "message": "override must look like key.path=value", "type": "override"}])
            k, v = text.split("=", 1)
            items.append((k.strip(), parse_value(v)))
    else:
        items = list(overrides.items())
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError([{"field": key, "message": f"{p} is not a section", "type": "override"}])
            node = nxt
        node[parts[-1]] = value
    return out


def configs_dir() -> Path:
    env = os.environ.get("RLHFKIT_CONFIGS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError([{"field": "(root)", "message": f"{path} must hold a mapping", "type": "yaml"}])
    return data


def preset_data(name: str) -> dict[str, Any]:
    path = configs_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError([{"field": "preset", "message": f"unknown preset {name!r}; allowed: {', '.join(preset_names())}", "type": "preset"}])
    return load_yaml(path)


def load_config(source: str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """Load a config from a preset name, a YAML path or a dict, apply overrides, validate."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = source
    elif Path(source).suffix in (".yaml", ".yml") or Path(source).exists():
        if not Path(source).exists():
            raise ConfigError([{"field": "config", "message": f"no such file: {source}", "type": "file"}])
        data = load_yaml(source)
    else:
        data = preset_data(str(source))
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data)


def config_json_schema() -> dict[str, Any]:
    return RunConfig.model_json_schema()


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
