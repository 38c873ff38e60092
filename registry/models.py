"""The version registry: every policy and reward model a project has had, and who promoted which.

It sits below feedback collection (a round and its answers name the policy version that wrote
them) and knows projects only through their foreign key. The tables kept the names they had
when the registry was part of the training app.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class ModelKind(models.TextChoices):
    POLICY = "policy", "Policy"
    REWARD = "reward", "Reward model"


class VersionStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ModelVersion(models.Model):
    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=8, choices=ModelKind.choices)
    number = models.PositiveIntegerField(help_text="0 is the base model, without an adapter.")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    base_model = models.CharField(max_length=500)
    artifact_path = models.CharField(
        max_length=1000, blank=True, help_text="Adapter folder; empty for the base model itself."
    )
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    gate_results = models.JSONField(default=dict, blank=True)
    # What trained it: the comparison ids (and counts) it saw, so any version can be audited.
    training_data = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=10, choices=VersionStatus.choices, default=VersionStatus.CANDIDATE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        db_table = "training_modelversion"
        ordering = ["project", "kind", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "number"], name="modelversion_unique_number"
            ),
            # At most one active version of each kind per project; the promote service swaps the
            # old and new one in a single transaction, so there is always exactly one policy.
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status="active"),
                name="modelversion_one_active_per_kind",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=ModelKind.values), name="modelversion_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=VersionStatus.values), name="modelversion_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(parent=F("id")), name="modelversion_not_own_parent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.kind} v{self.number} ({self.status})"


class PromotionAction(models.TextChoices):
    PROMOTE = "promote", "Promote"
    ROLLBACK = "rollback", "Roll back"


class PromotionEvent(models.Model):
    """Who made which version active, and which one it replaced."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotions")
    replaced = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=8, choices=PromotionAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "training_promotionevent"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} of {self.version} by {self.actor or 'the system'}"
