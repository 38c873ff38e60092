"""Typed hyperparameters for every engine job, validated before any model is loaded.

One dataclass per job. Each is saved as JSON beside the artifact it produced (and on the
training run's row), so a result can always be traced to the exact settings that made it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

Precision = Literal["auto", "bf16", "fp32"]
Schedule = Literal["cosine", "linear", "constant"]
DPOLossType = Literal["sigmoid", "ipo", "robust", "hinge"]
# The DPO losses by name, for validation, losses.dpo_loss and the CLI: spelled once, above.
DPO_LOSS_TYPES: tuple[DPOLossType, ...] = get_args(DPOLossType)
ReferenceChoice = Literal["base", "init"]
KLEstimatorChoice = Literal["k1", "k3"]

CONFIG_FILE = "tandem_config.json"


class ConfigError(ValueError):
    """A hyperparameter is out of range; the message says which and how to fix it."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# In lora.target_modules: every linear layer of the backbone (engine.models resolves the names).
ALL_LINEAR = "all-linear"


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def validate(self) -> None:
        _check(self.r >= 1, f"lora.r={self.r}: the adapter rank must be at least 1 (try 8 or 16).")
        _check(self.alpha > 0, f"lora.alpha={self.alpha}: must be positive (commonly 2 x r).")
        _check(0 <= self.dropout < 1, f"lora.dropout={self.dropout}: use a value in [0, 1).")
        _check(
            bool(self.target_modules),
            "lora.target_modules is empty: name the layers to adapt, e.g. q_proj,v_proj.",
        )


@dataclass
class TrainingSettings:
    """What every training loop shares: optimisation, data shape, checkpoints, precision."""

    base_model: str = "smollm2-135m-instruct"
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accum_steps: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.1
    schedule: Schedule = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256
    max_prompt_length: int = 128
    eval_fraction: float = 0.1
    eval_every: int = 50
    checkpoint_every: int = 50
    seed: int = 0
    precision: Precision = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)

    def validate(self) -> None:
        _check(
            0 < self.learning_rate < 1,
            f"learning_rate={self.learning_rate}: use a small positive value such as 1e-4.",
        )
        _check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be at least 1.")
        _check(self.grad_accum_steps >= 1, "grad_accum_steps must be at least 1.")
        _check(
            self.max_steps is not None or self.epochs > 0,
            f"epochs={self.epochs}: must be positive (or set max_steps).",
        )
        _check(
            self.max_steps is None or self.max_steps >= 1,
            f"max_steps={self.max_steps}: must be at least 1, or unset to train by epochs.",
        )
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1).")
        _check(
            self.schedule in ("cosine", "linear", "constant"),
            f"schedule={self.schedule!r}: use cosine, linear or constant.",
        )
        _check(self.weight_decay >= 0, "weight_decay must not be negative.")
        _check(self.max_grad_norm > 0, "max_grad_norm must be positive (1.0 is usual).")
        _check(self.max_length >= 8, f"max_length={self.max_length}: too short to hold an answer.")
        _check(
            1 <= self.max_prompt_length < self.max_length,
            f"max_prompt_length={self.max_prompt_length} must be at least 1 and below "
            f"max_length={self.max_length}, leaving room for the answer.",
        )
        _check(0 <= self.eval_fraction < 1, "eval_fraction must be in [0, 1); 0 disables it.")
        _check(self.eval_every >= 1, "eval_every must be at least 1 step.")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be at least 1 step.")
        _check(
            self.precision in ("auto", "bf16", "fp32"),
            f"precision={self.precision!r}: use auto, bf16 or fp32.",
        )
        self.lora.validate()


@dataclass
class RewardConfig(TrainingSettings):
    """Bradley-Terry reward model: a sequence classifier with one output."""

    use_lora: bool = True  # False fine-tunes every weight (fine for small backbones like MiniLM)
    # Every linear layer, the MLP's too: on alpaca_eval's decided pairs the reward model's held-out
    # accuracy rose from 0.610 to 0.684 for 13% more training time (bench/reward_accuracy.py).
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(target_modules=[ALL_LINEAR]))
    # Annotator strength becomes a margin in the loss: slight / clear / strong.
    strength_margins: dict[str, float] = field(
        default_factory=lambda: {"slight": 0.0, "clear": 0.5, "strong": 1.0}
    )
    learning_rate: float = 2e-4
    # Bootstrap heads refitted on the trained model's features after training (engine.ensemble):
    # their disagreement is the doubt active pair selection asks about. 0: none.
    ensemble_heads: int = 0
    # The head's Laplace posterior fitted the same way (engine.ensemble.HeadPosterior): the doubt
    # the `information` pair selection asks about, in closed form.
    head_posterior: bool = False
    # Weight of the mean squared (r_chosen + r_rejected) added to the loss, which keeps rewards
    # centred on zero (0.01 is usual); 0: off, rewards free up to a shared offset.
    center_rewards: float = 0.0

    def validate(self) -> None:
        super().validate()
        _check(
            all(value >= 0 for value in self.strength_margins.values()),
            "strength_margins must not be negative.",
        )
        _check(
            0 <= self.center_rewards <= 1,
            f"center_rewards={self.center_rewards}: use a weight from 0 (off) to 1; 0.01 is usual.",
        )
        _check(
            self.ensemble_heads == 0 or 2 <= self.ensemble_heads <= 64,
            f"ensemble_heads={self.ensemble_heads}: use 0 (none) or 2 to 64 heads.",
        )


@dataclass
class DPOConfig(TrainingSettings):
    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    label_smoothing: float = 0.0
    # An iterative round starts from the previous round's adapter (init_adapter) and measures
    # KL against either the base model ("base") or that starting adapter ("init").
    init_adapter: str | None = None
    reference: ReferenceChoice = "base"
    learning_rate: float = 5e-5
    # Annotator strength weighs a pair in the loss (relative to the others in its batch). A
    # weight rather than the reward model's margin: a margin in DPO is an offset in implicit-
    # reward units, whose scale is set by beta and by how far the policy may drift, so one
    # offset means different things at different betas; a weight only says how much a pair counts.
    strength_weights: dict[str, float] = field(
        default_factory=lambda: {"slight": 0.5, "clear": 1.0, "strong": 1.5}
    )

    def validate(self) -> None:
        super().validate()
        _check(self.beta > 0, f"beta={self.beta}: must be positive (0.1 is usual).")
        _check(
            all(value > 0 for value in self.strength_weights.values()),
            "strength_weights must be positive (leave a strength out to weigh it 1).",
        )
        _check(
            self.loss_type in DPO_LOSS_TYPES,
            f"loss_type={self.loss_type!r}: use {', '.join(DPO_LOSS_TYPES[:-1])} or "
            f"{DPO_LOSS_TYPES[-1]}.",
        )
        _check(
            0 <= self.label_smoothing < 0.5,
            f"label_smoothing={self.label_smoothing}: use a value in [0, 0.5).",
        )
        _check(
            self.reference in ("base", "init"),
            f"reference={self.reference!r}: use base (adapter off) or init (starting adapter).",
        )
        _check(
            self.reference == "base" or self.init_adapter is not None,
            "reference=init needs init_adapter, the adapter this round starts from.",
        )


@dataclass
class SFTConfig(TrainingSettings):
    """Supervised fine-tuning on demonstrations: the mean negative log-likelihood of the answer
    tokens (the prompt is context only). The artifact is a policy adapter DPO can start from."""

    # Several short demonstrations share a row (attention kept inside each): the same loss with
    # fewer pad tokens. batch_size still counts demonstrations, packed or not.
    packing: bool = True
    init_adapter: str | None = None  # continue an earlier adapter instead of a fresh one
    learning_rate: float = 2e-4  # LoRA's usual SFT rate; the adapter starts from zero


@dataclass
class KTOConfig(TrainingSettings):
    """Kahneman-Tversky Optimization (Ethayarajh et al. 2024): the policy learns from answers
    judged on their own, desirable or not, against a reference like DPO's."""

    beta: float = 0.1
    # lambda_D and lambda_U. The paper keeps lambda_D * n_D / (lambda_U * n_U) in [1, 4/3]:
    # with fewer desirable answers than undesirable ones, raise desirable_weight.
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # A rating on the 1-7 scale counts as desirable from this score up (data.RatingRow).
    desirable_score: int = 5
    init_adapter: str | None = None
    reference: ReferenceChoice = "base"
    learning_rate: float = 5e-5

    def validate(self) -> None:
        super().validate()
        _check(self.beta > 0, f"beta={self.beta}: must be positive (0.1 is usual).")
        _check(
            self.desirable_weight > 0 and self.undesirable_weight > 0,
            "desirable_weight and undesirable_weight must be positive (1.0 is usual).",
        )
        _check(
            2 <= self.desirable_score <= 7,
            f"desirable_score={self.desirable_score}: use a score from 2 to 7 on the 1-7 scale "
            "(5 is usual), so that both kinds of answer can occur.",
        )
        _check(
            self.reference in ("base", "init"),
            f"reference={self.reference!r}: use base (adapter off) or init (starting adapter).",
        )
        _check(
            self.reference == "base" or self.init_adapter is not None,
            "reference=init needs init_adapter, the adapter this round starts from.",
        )


@dataclass
class OnlineRLSettings(TrainingSettings):
    """What PPO and RLOO share: rollouts from the policy, their reward, the KL penalty.

    One step is one iteration: sample answers for `prompts_per_iteration` prompts, score them,
    then `update_epochs` passes over those answers in minibatches of `batch_size`. `max_steps`
    sets the number of iterations; otherwise `epochs` passes over the prompt set. The reference
    is the base model with the adapter switched off.
    """

    init_adapter: str | None = None  # start from a previous round's adapter
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 1
    max_new_tokens: int = 64
    # Sampling is plain temperature sampling (no top-p/top-k), so the answers come from exactly
    # the distribution whose log-probs the update uses.
    temperature: float = 0.7
    generation_batch_size: int = 16
    reward_batch_size: int = 16
    update_epochs: int = 4
    cliprange: float = 0.2
    kl_coef: float = 0.05  # beta; the starting value when adaptive_kl is on
    kl_estimator: KLEstimatorChoice = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0  # nats per answer, what the adaptive controller aims at
    kl_horizon: int = 10000
    missing_eos_penalty: float = 1.0  # subtracted from the score of an answer that never ends
    reward_clip: float | None = None  # scores clipped to [-reward_clip, reward_clip]
    whiten_rewards: bool = False
    whiten_advantages: bool = True
    entropy_coef: float = 0.0  # entropy is always reported; > 0 also rewards it
    # TrainingSettings' defaults that suit online RL better: small minibatches, a constant rate,
    # every prompt used for training, checkpoints every few (slow) iterations.
    learning_rate: float = 5e-5
    batch_size: int = 8
    warmup_ratio: float = 0.0
    schedule: Schedule = "constant"
    eval_fraction: float = 0.0
    eval_every: int = 10
    checkpoint_every: int = 5

    def validate(self) -> None:
        super().validate()
        _check(
            self.prompts_per_iteration >= 1,
            f"prompts_per_iteration={self.prompts_per_iteration}: must be at least 1 (try 16).",
        )
        _check(self.samples_per_prompt >= 1, "samples_per_prompt must be at least 1.")
        _check(
            self.max_new_tokens >= 1,
            f"max_new_tokens={self.max_new_tokens}: must be at least 1 (64 is usual).",
        )
        _check(
            self.max_prompt_length + self.max_new_tokens <= self.max_length,
            f"max_prompt_length={self.max_prompt_length} + max_new_tokens={self.max_new_tokens} "
            f"exceeds max_length={self.max_length}: raise max_length or shorten one of them.",
        )
        _check(
            self.temperature > 0,
            f"temperature={self.temperature}: online RL samples, so it must be positive "
            "(0.7 to 1.0 is usual).",
        )
        _check(self.generation_batch_size >= 1, "generation_batch_size must be at least 1.")
        _check(self.reward_batch_size >= 1, "reward_batch_size must be at least 1.")
        _check(
            self.update_epochs >= 1,
            f"update_epochs={self.update_epochs}: must be at least 1 (4 is usual).",
        )
        _check(
            0 < self.cliprange < 1, f"cliprange={self.cliprange}: use a value in (0, 1), e.g. 0.2."
        )
        _check(self.kl_coef >= 0, f"kl_coef={self.kl_coef}: must not be negative (0.05 is usual).")
        _check(
            self.kl_estimator in ("k1", "k3"),
            f"kl_estimator={self.kl_estimator!r}: use k1 (log ratio) or k3 (never negative).",
        )
        _check(
            not self.adaptive_kl or self.kl_coef > 0,
            "adaptive_kl needs a positive kl_coef to start from (0.05 is usual).",
        )
        _check(self.kl_target > 0, f"kl_target={self.kl_target}: must be positive (nats).")
        _check(self.kl_horizon >= 1, f"kl_horizon={self.kl_horizon}: must be at least 1.")
        _check(
            self.missing_eos_penalty >= 0,
            f"missing_eos_penalty={self.missing_eos_penalty}: must not be negative (0 disables).",
        )
        _check(
            self.reward_clip is None or self.reward_clip > 0,
            f"reward_clip={self.reward_clip}: must be positive, or unset to not clip.",
        )
        _check(self.entropy_coef >= 0, "entropy_coef must not be negative (0 disables).")


@dataclass
class PPOConfig(OnlineRLSettings):
    """PPO with a value head on the policy's hidden states, GAE and clipped losses."""

    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.1
    cliprange_value: float = 0.2

    def validate(self) -> None:
        super().validate()
        _check(0 < self.gamma <= 1, f"gamma={self.gamma}: use a value in (0, 1] (1.0 is usual).")
        _check(0 <= self.lam <= 1, f"lam={self.lam}: use a value in [0, 1] (0.95 is usual).")
        _check(self.vf_coef > 0, f"vf_coef={self.vf_coef}: must be positive (0.1 is usual).")
        _check(
            self.cliprange_value > 0,
            f"cliprange_value={self.cliprange_value}: must be positive (0.2 is usual).",
        )


@dataclass
class RLOOConfig(OnlineRLSettings):
    """REINFORCE leave-one-out: k answers per prompt, each judged against the other k - 1; no
    value head. The default of 4 prompts x 4 answers costs what PPO's 16 x 1 does."""

    prompts_per_iteration: int = 4
    samples_per_prompt: int = 4

    def validate(self) -> None:
        super().validate()
        _check(
            self.samples_per_prompt >= 2,
            f"samples_per_prompt={self.samples_per_prompt}: RLOO compares each answer with the "
            "other answers to the same prompt, so it needs at least 2 (4 is usual).",
        )


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0  # 0 disables top-k
    samples_per_prompt: int = 2
    batch_size: int = 16
    max_prompt_length: int = 512
    seed: int = 0
    precision: Precision = "auto"

    def validate(self) -> None:
        _check(self.max_new_tokens >= 1, "max_new_tokens must be at least 1.")
        _check(
            self.temperature >= 0,
            f"temperature={self.temperature}: must be >= 0 (0 means greedy decoding).",
        )
        _check(0 < self.top_p <= 1, f"top_p={self.top_p}: use a value in (0, 1].")
        _check(self.top_k >= 0, "top_k must be >= 0 (0 disables it).")
        _check(self.samples_per_prompt >= 1, "samples_per_prompt must be at least 1.")
        _check(self.batch_size >= 1, "batch_size must be at least 1.")
        _check(self.max_prompt_length >= 1, "max_prompt_length must be at least 1.")
        _check(
            self.precision in ("auto", "bf16", "fp32"),
            f"precision={self.precision!r}: use auto, bf16 or fp32.",
        )


AnyConfig = TypeVar(
    "AnyConfig",
    RewardConfig,
    DPOConfig,
    SFTConfig,
    KTOConfig,
    PPOConfig,
    RLOOConfig,
    GenerationConfig,
    TrainingSettings,
)


def _default_lora(cls: type) -> LoraSettings:
    """The adapter settings `cls` starts from: its own `lora` field's default."""
    (lora,) = [f for f in dataclasses.fields(cls) if f.name == "lora"]
    assert callable(lora.default_factory)  # every config's lora is a default_factory field
    settings: LoraSettings = lora.default_factory()
    return settings


def config_from_dict(cls: type[AnyConfig], values: dict[str, Any]) -> AnyConfig:
    """Build and validate a config; unknown keys are an error, not silently ignored."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    _check(not unknown, f"Unknown {cls.__name__} setting(s): {', '.join(unknown)}.")
    values = dict(values)
    if "lora" in values and isinstance(values["lora"], dict):
        lora_known = {f.name for f in dataclasses.fields(LoraSettings)}
        bad = sorted(set(values["lora"]) - lora_known)
        _check(not bad, f"Unknown lora setting(s): {', '.join(bad)}.")
        # Over this config's own defaults: `{"r": 8}` keeps the reward model's every-linear-layer
        # targets rather than falling back to the attention-only ones every other config uses.
        values["lora"] = dataclasses.replace(_default_lora(cls), **values["lora"])
    config = cls(**values)
    config.validate()
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    return {"type": type(config).__name__, **asdict(config)}


def save_config(config: Any, folder: Path) -> Path:
    path = Path(folder) / CONFIG_FILE
    path.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return path


def load_config(folder: Path) -> Any:
    data = json.loads((Path(folder) / CONFIG_FILE).read_text())
    kind = data.pop("type")
    # Any: the saved type is only known when the file is read.
    classes: dict[str, type[Any]] = {
        cls.__name__: cls
        for cls in (
            RewardConfig,
            DPOConfig,
            SFTConfig,
            KTOConfig,
            PPOConfig,
            RLOOConfig,
            GenerationConfig,
        )
    }
    _check(kind in classes, f"{folder}: unknown config type {kind!r}.")
    return config_from_dict(classes[kind], data)
