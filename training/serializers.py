"""Input and output shapes of the model-lifecycle API."""

from rest_framework import serializers

from registry.models import ModelVersion
from training.models import MetricPoint, RunKind, RunStatus, TrainingRun


class TrainingRunCreateInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=RunKind.choices)
    config = serializers.JSONField(required=False, default=dict)
    round = serializers.IntegerField(required=False, help_text="Round number (generate runs).")
    version = serializers.IntegerField(
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
