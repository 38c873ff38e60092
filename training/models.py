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
    KTO = "kto", "Train the policy with KTO on rated answers"
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
                condition=~Q(
                    status="succeeded", kind__in=["sft", "reward", "dpo", "ppo", "rloo", "kto"]
                )
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


DEFAULT_JUDGE_INSTRUCTIONS = (
    "You compare two answers to the same prompt by the principles above. Reply with one JSON "
    'object and nothing else: {"better": "A" | "B" | "tie" | "both_bad", "reason": "<one '
    'sentence>"}. "both_bad" when neither answer is acceptable.'
)


class AiJudge(models.Model):
    """An annotator backed by a model: any OpenAI-compatible endpoint (Tandem's own policy
    server included) judging pairs by a written constitution. Its judgments are recorded under
    its own account (`user`, which can never sign in) with source "ai"."""

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="ai_judges"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ai_judge"
    )
    base_url = models.CharField(max_length=500, help_text="Ends in /v1.")
    model = models.CharField(max_length=200, help_text="The model name the endpoint serves.")
    # The key is read from the worker's environment by this name: never stored.
    api_key_env = models.CharField(max_length=100, blank=True)
    constitution = models.TextField(help_text="The principles the judge follows (Markdown).")
    instructions = models.TextField(default=DEFAULT_JUDGE_INSTRUCTIONS)
    # Off by default: an AI judgment neither completes a pair nor votes in its label, so
    # humans still judge every pair and the judge's agreement with them can be measured.
    counts_toward_quota = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"AI judge {self.user} ({self.model})"


class AiJudgment(models.Model):
    """What an AI judge said on one pair: the stored judgment, the constitution it followed
    (sha256), the model and its raw reply."""

    judgment = models.OneToOneField(
        "annotate.Judgment", on_delete=models.CASCADE, related_name="ai_judgment"
    )
    judge = models.ForeignKey(AiJudge, on_delete=models.CASCADE, related_name="judgments")
    constitution_sha256 = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    reply = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"AI judgment {self.judgment_id} by {self.judge_id}"
