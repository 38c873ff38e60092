"""Input and output shapes of the loop's API: runs, versions, training settings."""

from __future__ import annotations

import dataclasses
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from rest_framework import serializers

from config.validation import BoundedIntegerField
from registry.models import ModelVersion
from training.models import MetricPoint, RunKind, RunStatus, TrainingRun
from training.project_settings import (
    ENGINE_SECTIONS,
    POLICY_DATA_SCOPES,
    SET_BY_THE_RUNNER,
    EvaluationSettings,
)


class TrainingRunCreateInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=RunKind.choices)
    config = serializers.JSONField(required=False, default=dict)
    round = BoundedIntegerField(required=False, help_text="Round number (generate runs).")
    version = BoundedIntegerField(
        required=False, help_text="Id of the policy version an evaluate run measures."
    )
    chain = serializers.BooleanField(
        required=False,
        default=False,
        help_text="On success, queue the next step of the round's chain "
        "(reward -> policy -> evaluate -> promotion when the project auto-promotes).",
    )


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    eta_seconds = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "status",
            "step",
            "total_steps",
            "progress",
            "eta_seconds",
            "cancel_requested",
            "chained",
            "attempt",
            "heartbeat_at",
            "error",
            "config",
            "round",
            "input_version",
            "output_version",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_progress(self, run: TrainingRun) -> float | None:
        return run.step / run.total_steps if run.total_steps else None

    def get_eta_seconds(self, run: TrainingRun) -> float | None:
        """Time left at the pace so far; None until a running run has made a step."""
        if run.status != RunStatus.RUNNING or not run.total_steps or not run.step:
            return None
        if run.started_at is None or run.heartbeat_at is None:
            return None
        elapsed = (run.heartbeat_at - run.started_at).total_seconds()
        return round(elapsed / run.step * (run.total_steps - run.step), 1)


class MetricPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = MetricPoint
        fields = ["step", "split", "name", "value"]


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "kind",
            "number",
            "parent",
            "base_model",
            "status",
            "config",
            "metrics",
            "gate_results",
            "created_at",
            "promoted_at",
        ]


class PromoteInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


# --- Training settings: serializers drawn from the dataclasses, so the schema shows defaults --


def _settings_field(hint: Any, default: Any) -> serializers.Field[Any, Any, Any, Any]:
    """A DRF field for one dataclass field's annotation, with its default for the schema (the
    view validates with training.project_settings, which gives the errors their field names)."""
    optional = get_origin(hint) in (Union, UnionType) and type(None) in get_args(hint)
    if optional:
        hint = next(arm for arm in get_args(hint) if arm is not type(None))
    options: dict[str, Any] = {"required": False, "allow_null": optional}
    if default is not dataclasses.MISSING and not dataclasses.is_dataclass(default):
        options["default"] = default
    origin = get_origin(hint)
    if origin is Literal:
        return serializers.ChoiceField(choices=list(get_args(hint)), **options)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return settings_serializer(hint)(required=False)
    if origin is list:
        return serializers.ListField(child=serializers.CharField(), **options)
    if origin is dict:
        return serializers.DictField(**options)
    simple = {bool: serializers.BooleanField, int: serializers.IntegerField}
    simple |= {float: serializers.FloatField, str: serializers.CharField}
    return simple.get(hint, serializers.JSONField)(**options)


# One class per dataclass, so the schema has one component for each (LoraSettings, say).
_settings_serializers: dict[tuple[str, frozenset[str]], type[serializers.Serializer[Any]]] = {}


def settings_serializer(
    cls: type, exclude: frozenset[str] = frozenset()
) -> type[serializers.Serializer[Any]]:
    """A serializer class whose fields mirror the dataclass `cls` (for docs and the UI form)."""
    key = (cls.__qualname__, exclude)
    if key in _settings_serializers:
        return _settings_serializers[key]
    hints = get_type_hints(cls)
    fields = {
        f.name: _settings_field(
            hints[f.name],
            f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(cls)
        if f.name not in exclude
    }
    made = type(f"{cls.__name__}Serializer", (serializers.Serializer,), fields)
    _settings_serializers[key] = made
    return made


def training_settings_serializer() -> type[serializers.Serializer[Any]]:
    sections: dict[str, serializers.Field[Any, Any, Any, Any]] = {
        section: settings_serializer(cls, SET_BY_THE_RUNNER)(required=False)
        for section, cls in ENGINE_SECTIONS.items()
    }
    sections["evaluation"] = settings_serializer(EvaluationSettings)(required=False)
    sections["policy_data"] = serializers.ChoiceField(
        choices=list(POLICY_DATA_SCOPES), required=False, default="round"
    )
    return type("ProjectTrainingSettingsSerializer", (serializers.Serializer,), sections)


TrainingSettingsSerializer = training_settings_serializer()


class TrainingSettingsViewSerializer(serializers.Serializer[Any]):
    values = TrainingSettingsSerializer(help_text="What a run would use: overrides over defaults.")
    overrides = serializers.DictField(help_text="The project's own settings, as last written.")
    defaults = TrainingSettingsSerializer()


class AiJudgeInputSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=40, help_text="Its account is ai-<project>-<name>.")
    base_url = serializers.URLField(max_length=500, help_text="An OpenAI-compatible /v1 URL.")
    model = serializers.CharField(max_length=200)
    constitution = serializers.CharField(max_length=50_000, help_text="The principles to judge by.")
    api_key_env = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default="",
        help_text="The worker's environment variable holding the key (never stored).",
    )  # fmt: skip
    counts_toward_quota = serializers.BooleanField(required=False, default=False)


class AiJudgeOutputSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    annotator_id = serializers.IntegerField(source="user_id")
    username = serializers.CharField(source="user.username")
    base_url = serializers.CharField()
    model = serializers.CharField()
    constitution = serializers.CharField()
    constitution_sha256 = serializers.CharField()
    counts_toward_quota = serializers.BooleanField()
    enabled = serializers.BooleanField()
    judgments = serializers.IntegerField(help_text="Pairs it has judged.")
    created_at = serializers.DateTimeField()


class AiJudgeRunInputSerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField(min_value=1, max_value=500, default=20)
