"""Training runs and their metric points; the versions they read and write live in registry.

The run's database row, not a Celery result, is the source of truth for its state.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from registry.models import ModelVersion


class RunKind(models.TextChoices):
    GENERATE = "generate", "Generate a round's responses"
    SFT = "sft", "Fine-tune the policy on written demonstrations"
    REWARD = "reward", "Train the reward model"
    DPO = "dpo", "Train the policy with DPO"
    PPO = "ppo", "Train the policy with PPO"
    RLOO = "rloo", "Train the policy with RLOO"
    EVALUATE = "evaluate", "Evaluate a candidate"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class TrainingRun(models.Model):
    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="training_runs"
    )
    round = models.ForeignKey(
        "annotate.Round",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
    )
    kind = models.CharField(max_length=10, choices=RunKind.choices)
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Part of a round's chain ([sft ->] reward -> policy -> evaluate): on success it queues the
    # next step.
    chained = models.BooleanField(default=False)
    attempt = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="Host and pid of the claimer.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the worker was last asked for this run, and how often: a queued run whose message
    # the broker lost (a Redis restart without persistence) is asked for again (beat).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    enqueue_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    input_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    output_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=RunKind.values), name="run_kind_valid"),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(total_steps__isnull=True) | Q(step__lte=F("total_steps")),
                name="run_step_within_total",
            ),
            # A succeeded training run always names what it produced (evaluate/generate excepted).
            models.CheckConstraint(
                condition=~Q(status="succeeded", kind__in=["sft", "reward", "dpo", "ppo", "rloo"])
                | Q(output_version__isnull=False),
                name="run_succeeded_has_output",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES


class MetricPoint(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    split = models.CharField(max_length=10, default="train")
    name = models.CharField(max_length=100)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [
            # A resumed run rewrites a step it had logged; the row is replaced, never doubled.
            models.UniqueConstraint(
                fields=["run", "step", "split", "name"], name="metricpoint_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value:g} at step {self.step} ({self.split})"
