"""The audit trail: who changed what, when and from where. Rows are written, never edited."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class AuditAction(models.TextChoices):
    VERSION_PROMOTED = "version.promoted", "A version was promoted"
    VERSION_ROLLED_BACK = "version.rolled_back", "A version was rolled back to"
    ANNOTATOR_PAUSED = "annotator.paused", "An annotator was paused"
    ANNOTATOR_RESUMED = "annotator.resumed", "An annotator was resumed"
    MEMBERSHIP_SET = "membership.set", "A member was added or their role changed"
    MEMBERSHIP_REMOVED = "membership.removed", "A member was removed"
    TOKEN_ROTATED = "token.rotated", "An API token was made (the old one stopped working)"
    TOKEN_REVOKED = "token.revoked", "An API token was revoked"
    SIGN_IN_FAILED = "sign_in.failed", "A sign-in failed"
    PROJECT_UPDATED = "project.updated", "A project's settings were changed"


class AuditEvent(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    # Null for the system itself (automatic promotion, the quota trigger) or an unknown user.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept if the user goes.")
    origin = models.CharField(max_length=64, blank=True, help_text="The client's address.")
    # What was acted on, as plain values: the trail outlives the rows it names.
    project_id = models.BigIntegerField(null=True, blank=True)
    target = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project_id", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=AuditAction.values), name="auditevent_action_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} by {self.actor_name or 'system'}"
