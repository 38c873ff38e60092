"""Typed hyperparameters for every engine job, validated before any model is loaded.

One dataclass per job. Each is saved as JSON beside the artifact it produced (and on the
training run's row), so a result can always be traced to the exact settings that made it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Precision = Literal["auto", "bf16", "fp32"]
Schedule = Literal["cosine", "linear", "constant"]
DPOLossType = Literal["sigmoid", "ipo", "robust", "hinge"]
ReferenceChoice = Literal["base", "init"]

CONFIG_FILE = "tandem_config.json"


class ConfigError(ValueError):
    """A hyperparameter is out of range; the message says which and how to fix it."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


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
    # Annotator strength becomes a margin in the loss: slight / clear / strong.
    strength_margins: dict[str, float] = field(
        default_factory=lambda: {"slight": 0.0, "clear": 0.5, "strong": 1.0}
    )
    learning_rate: float = 2e-4

    def validate(self) -> None:
        super().validate()
        _check(
            all(value >= 0 for value in self.strength_margins.values()),
            "strength_margins must not be negative.",
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

    def validate(self) -> None:
        super().validate()
        _check(self.beta > 0, f"beta={self.beta}: must be positive (0.1 is usual).")
        _check(
            self.loss_type in ("sigmoid", "ipo", "robust", "hinge"),
            f"loss_type={self.loss_type!r}: use sigmoid, ipo, robust or hinge.",
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


AnyConfig = TypeVar("AnyConfig", RewardConfig, DPOConfig, GenerationConfig, TrainingSettings)


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
        values["lora"] = LoraSettings(**values["lora"])
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
    classes = {cls.__name__: cls for cls in (RewardConfig, DPOConfig, GenerationConfig)}
    _check(kind in classes, f"{folder}: unknown config type {kind!r}.")
    return config_from_dict(classes[kind], data)
