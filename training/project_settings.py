"""A project's training settings, typed: the only reader and writer of Project.training_settings.

annotate stores the JSON without knowing its shape (it sits below the loop); everything here
checks it, so a typo such as {"dpoo": ...} or {"dpo": {"beta": "high"}} is refused with a
message naming the field when it is written, never at the moment a worker picks a run up.

    {"sft": {...SFTConfig overrides}, "reward": {...RewardConfig overrides},
     "dpo" / "ppo" / "rloo" / "kto": {...their config's},
     "evaluation": {...EvaluationSettings},  "policy_data": "round" | "all",
     "generation_backend": {...GenerationBackendSettings},
     "served_traffic": "off" | "prompts" | "pairs",
     "label_resolution": "majority" | "crowd", "auto_pause_below": float | null,
     "pairing": {...PairingSettings}, "ratings_train_reward": bool}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from django.db import transaction

from annotate.models import Project
from annotate.selectors import LabelResolution
from config.errors import ApplicationError
from training.engine.config import (
    ConfigError,
    DPOConfig,
    GenerationConfig,
    KTOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
    SFTConfig,
    TrainingSettings,
    config_from_dict,
)

PolicyDataScope = Literal["round", "all"]
# What the policy server keeps of the requests of members who opted in: nothing, their
# prompts (answered by the next round), or also the first two answers as a pair to judge.
ServedTraffic = Literal["off", "prompts", "pairs"]
POLICY_DATA_SCOPES: tuple[str, ...] = get_args(PolicyDataScope)
# Each section overrides one engine config; the runner fills in what the project decides
# (base model, starting adapter), so those are not settings.
ENGINE_SECTIONS: dict[str, type[TrainingSettings]] = {
    "sft": SFTConfig,
    "reward": RewardConfig,
    "dpo": DPOConfig,
    "ppo": PPOConfig,
    "rloo": RLOOConfig,
    "kto": KTOConfig,
}
SET_BY_THE_RUNNER = frozenset({"base_model", "init_adapter"})


@dataclass(frozen=True)
class EvaluationSettings:
    """How candidates are measured before promotion."""

    heldout_fraction: float = 0.2  # share of prompts never trained on
    max_prompts: int = 32  # held-out prompts sampled for the win rate and KL
    samples_per_prompt: int = 1
    max_new_tokens: int | None = None  # default: the project's generation setting
    seed: int = 1234

    def validate(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ApplicationError("evaluation.heldout_fraction must be in [0, 1).")
        if self.max_prompts < 1 or self.samples_per_prompt < 1:
            raise ApplicationError("evaluation.max_prompts and samples_per_prompt must be >= 1.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ApplicationError("evaluation.max_new_tokens must be at least 1.")


BackendKind = Literal["local", "openai"]
AdapterLoading = Literal["vllm", "tandem", "none"]


@dataclass(frozen=True)
class GenerationBackendSettings:
    """Who writes a round's answers (and the gates' evaluation samples).

    local: the worker's in-process sampler. openai: any OpenAI-compatible server at
    `base_url`, with the version's adapter loaded the way `adapters` says: vllm (through
    /v1/load_lora_adapter under a fresh name per version; vLLM and Tandem's own server),
    tandem (a Tandem policy server that has the registry: `<slug>@v<N>`), or none (the server
    serves `model` only, so only the base model, v0, can write through it). The key is read
    from the worker's environment variable `api_key_env`, never stored.
    """

    kind: BackendKind = "local"
    base_url: str = ""
    model: str = ""  # the server's name for the base model (vllm / none)
    adapters: AdapterLoading = "vllm"
    api_key_env: str = ""
    timeout_seconds: float = 120.0
    concurrency: int = 8
    max_retries: int = 4

    def validate(self) -> None:
        if self.kind == "local":
            return
        if not self.base_url.startswith(("http://", "https://")):
            raise ApplicationError(
                "generation_backend.base_url must be an http(s) URL ending in /v1."
            )
        if self.adapters in ("vllm", "none") and not self.model:
            raise ApplicationError(
                "generation_backend.model must name the base model as the server serves it."
            )
        if self.timeout_seconds <= 0 or self.concurrency < 1 or self.max_retries < 0:
            raise ApplicationError(
                "generation_backend: timeout_seconds > 0, concurrency >= 1 and "
                "max_retries >= 0, please."
            )


PairingStrategy = Literal["random", "uncertainty", "disagreement", "information"]
PAIRING_STRATEGIES = ("random", "uncertainty", "disagreement", "information")


@dataclass(frozen=True)
class PairingSettings:
    """Which two of a prompt's answers are judged (training.pairing)."""

    strategy: PairingStrategy = "random"
    answers_per_prompt: int = 4  # k, written per prompt when the reward model chooses
    random_share: float = 0.2  # of the training prompts, still paired at random
    # Under `disagreement`, the reward model's bootstrap heads whose disagreement is asked about.
    ensemble_heads: int = 8

    @property
    def chooses(self) -> bool:
        """Whether the reward model chooses the pairs (so the round writes k answers)."""
        return self.strategy != "random"

    def reward_doubt(self) -> dict[str, Any]:
        """The RewardConfig settings that train the doubt this strategy asks about."""
        if self.strategy == "disagreement":
            return {"ensemble_heads": self.ensemble_heads}
        if self.strategy == "information":
            return {"head_posterior": True}
        return {}

    def validate(self) -> None:
        if self.strategy not in PAIRING_STRATEGIES:
            raise ApplicationError(
                f"pairing.strategy {self.strategy!r}: use {', '.join(PAIRING_STRATEGIES)}."
            )
        if not 2 <= self.ensemble_heads <= 64:
            raise ApplicationError("pairing.ensemble_heads must be from 2 to 64.")
        if not 2 <= self.answers_per_prompt <= 16:
            raise ApplicationError("pairing.answers_per_prompt must be from 2 to 16.")
        if not 0 <= self.random_share <= 1:
            raise ApplicationError("pairing.random_share must be in [0, 1].")


@dataclass(frozen=True)
class ProjectTrainingSettings:
    sft: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    rloo: dict[str, Any] = field(default_factory=dict)
    kto: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    # Which pairs train the policy: the latest round's (on-policy, the default since each round
    # starts from the serving adapter) or every resolved pair so far.
    policy_data: PolicyDataScope = "round"
    generation_backend: GenerationBackendSettings = field(default_factory=GenerationBackendSettings)
    served_traffic: ServedTraffic = "off"
    label_resolution: LabelResolution = "majority"
    # Pause an annotator automatically once the crowd model puts their reliability below this
    # (on enough votes); None leaves every pause to an admin. At most 0.5: chance.
    auto_pause_below: float | None = None
    pairing: PairingSettings = field(default_factory=PairingSettings)
    # Ratings also train the reward model, as pairs whose target follows their scores'
    # difference (runner.rating_pair_rows); off, they train KTO only.
    ratings_train_reward: bool = False

    def overrides(self, section: str) -> dict[str, Any]:
        return dict(getattr(self, section))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- checking values against a dataclass's annotations ------------------------------------


def _matches(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a field's annotation (the shapes the engine configs use)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(arm, value) for arm in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        (item, *_) = get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    if origin is dict:
        _key, item = get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_matches(item, v) for v in value.values())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return True  # a type this checker does not know: the config's own validate() decides


def _describe(hint: Any) -> str:
    """A field's type as a person reads it: float, int | None, 'sigmoid' | 'ipo', ..."""
    if get_origin(hint) is Literal:
        return " | ".join(repr(v) for v in get_args(hint))
    if isinstance(hint, type):
        return "an object" if dataclasses.is_dataclass(hint) else hint.__name__
    return str(hint).replace("typing.", "")


def field_type_errors(cls: type, values: Mapping[str, Any], *, prefix: str) -> list[str]:
    """One message per unknown key or badly typed value; nested dataclasses are checked too."""
    hints = typing.get_type_hints(cls)
    errors = []
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in hints:
            known = ", ".join(sorted(hints))
            errors.append(f"{name}: unknown setting (known: {known}).")
        elif not _matches(hints[key], value):
            errors.append(f"{name}: expected {_describe(hints[key])}, got {value!r}.")
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            errors.extend(field_type_errors(hints[key], value, prefix=name))
    return errors


def engine_config_errors(
    cls: type[TrainingSettings] | type[GenerationConfig], values: Mapping[str, Any], prefix: str
) -> list[str]:
    """Type errors first; then the engine's own range checks on the whole config."""
    errors = field_type_errors(cls, values, prefix=prefix)
    if errors:
        return errors
    try:
        config_from_dict(cls, dict(values))  # type: ignore[type-var]
    except (ConfigError, TypeError, ValueError) as error:
        return [f"{prefix}: {error}"]
    return []


# --- parse, read, write ---------------------------------------------------------------------


def _raise(errors: list[str]) -> None:
    if errors:
        raise ApplicationError(" ".join(errors), code="invalid_settings", extra={"errors": errors})


def training_settings_parse(raw: Any) -> ProjectTrainingSettings:
    """Validate the JSON form; raises ApplicationError (400) listing every bad field."""
    if not isinstance(raw, Mapping):
        raise ApplicationError("training_settings must be an object.", code="invalid_settings")
    errors = field_type_errors(
        ProjectTrainingSettings,
        {k: v for k, v in raw.items() if k not in ENGINE_SECTIONS},
        prefix="training_settings",
    )
    for section, cls in ENGINE_SECTIONS.items():
        values = raw.get(section, {})
        name = f"training_settings.{section}"
        if not isinstance(values, Mapping):
            errors.append(f"{name}: expected an object of {cls.__name__} settings.")
            continue
        reserved = sorted(SET_BY_THE_RUNNER & set(values))
        if reserved:
            errors.append(f"{name}: {', '.join(reserved)} come from the project, not settings.")
            continue
        errors.extend(engine_config_errors(cls, values, name))
    _raise(errors)
    evaluation = EvaluationSettings(**raw.get("evaluation", {}))
    evaluation.validate()
    backend = GenerationBackendSettings(**raw.get("generation_backend", {}))
    backend.validate()
    pairing = PairingSettings(**raw.get("pairing", {}))
    pairing.validate()
    return ProjectTrainingSettings(
        **{section: dict(raw.get(section, {})) for section in ENGINE_SECTIONS},
        evaluation=evaluation,
        policy_data=raw.get("policy_data", "round"),
        generation_backend=backend,
        served_traffic=raw.get("served_traffic", "off"),
        label_resolution=raw.get("label_resolution", "majority"),
        auto_pause_below=_auto_pause_below(raw.get("auto_pause_below")),
        pairing=pairing,
        ratings_train_reward=bool(raw.get("ratings_train_reward", False)),
    )


def _auto_pause_below(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 0.5:
        raise ApplicationError(
            "training_settings.auto_pause_below must be in (0, 0.5] (0.5 is chance), or null.",
            code="invalid_settings",
        )
    return value


def served_traffic_of(project: Project) -> ServedTraffic:
    """The one setting the policy server reads on every request, without parsing the rest
    (the whole JSON was checked when it was written); an unknown value keeps nothing."""
    value = project.training_settings.get("served_traffic", "off")
    return value if value in get_args(ServedTraffic) else "off"


def training_settings_of(project: Project) -> ProjectTrainingSettings:
    return training_settings_parse(project.training_settings)


@transaction.atomic
def training_settings_update(*, project: Project, values: Mapping[str, Any]) -> Project:
    """Replace the project's training settings with `values`, once they have been checked."""
    settings = training_settings_parse(values)
    project.training_settings = {
        key: value for key, value in settings.to_json().items() if key in values
    }
    project.save(update_fields=["training_settings"])
    return project


def run_config_errors(kind: str, config: Mapping[str, Any]) -> list[str]:
    """A run's own overrides, checked when the run is created (not when a worker claims it)."""
    if kind in ENGINE_SECTIONS:
        return engine_config_errors(ENGINE_SECTIONS[kind], config, "config")
    if kind == "generate":
        errors = field_type_errors(_GenerateRunConfig, config, prefix="config")
        generation = config.get("generation", {})
        if not errors and generation:
            errors = field_type_errors(GenerationConfig, generation, prefix="config.generation")
        return errors
    return [f"config.{key}: {kind} runs take no settings." for key in config]


@dataclass(frozen=True)
class _GenerateRunConfig:
    """What a generate run's config may hold."""

    max_prompts: int | None = None
    generation: dict[str, Any] = field(default_factory=dict)


def training_settings_view(project: Project) -> dict[str, Any]:
    """The settings as the API and the dashboard's form show them: the values a run would
    use, the project's own overrides, and the defaults they override."""
    return {
        "values": training_settings_effective(training_settings_of(project)),
        "overrides": dict(project.training_settings),
        "defaults": training_settings_effective(ProjectTrainingSettings()),
    }


def training_settings_effective(settings: ProjectTrainingSettings) -> dict[str, Any]:
    """Every setting with the value a run would use: the project's overrides over the defaults."""
    effective: dict[str, Any] = {}
    for section, cls in ENGINE_SECTIONS.items():
        config = config_from_dict(cls, settings.overrides(section))
        values = dataclasses.asdict(config)
        effective[section] = {k: v for k, v in values.items() if k not in SET_BY_THE_RUNNER}
    effective["evaluation"] = dataclasses.asdict(settings.evaluation)
    effective["policy_data"] = settings.policy_data
    effective["generation_backend"] = dataclasses.asdict(settings.generation_backend)
    effective["served_traffic"] = settings.served_traffic
    effective["label_resolution"] = settings.label_resolution
    effective["auto_pause_below"] = settings.auto_pause_below
    effective["pairing"] = dataclasses.asdict(settings.pairing)
    return effective
