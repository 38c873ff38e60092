"""Input and output shapes of the model-lifecycle API."""

from rest_framework import serializers

from training.models import MetricPoint, ModelVersion, RunKind, TrainingRun


class TrainingRunCreateInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=RunKind.choices)
    config = serializers.JSONField(required=False, default=dict)
    round = serializers.IntegerField(required=False, help_text="Round number (generate runs).")


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "status",
            "step",
            "total_steps",
            "progress",
            "cancel_requested",
            "attempt",
            "heartbeat_at",
            "error",
            "config",
            "round",
            "output_version",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_progress(self, run: TrainingRun) -> float | None:
        return run.step / run.total_steps if run.total_steps else None


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
