"""Writes for the version registry: the base version, promotion and rollback."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_record
from config.errors import ApplicationError
from config.users import User
from registry.models import ModelKind, ModelVersion, PromotionAction, PromotionEvent, VersionStatus


def base_policy_create(*, project_id: int, base_model: str) -> ModelVersion:
    """Version 0 of a project's policy: the base model itself, active from the start."""
    return ModelVersion.objects.create(
        project_id=project_id,
        kind=ModelKind.POLICY,
        number=0,
        base_model=base_model,
        status=VersionStatus.ACTIVE,
        promoted_at=timezone.now(),
    )


@transaction.atomic
def version_promote(
    *,
    version: ModelVersion,
    actor: User | None = None,
    reason: str = "",
) -> ModelVersion:
    """Make `version` the active one of its kind; the previous active one is retired.

    Promoting a version older than the active one is a rollback and is recorded as such.
    """
    # Lock every version of this kind in the project, so two concurrent promotions serialize
    # here instead of one of them failing on the one-active constraint halfway through.
    siblings = list(
        ModelVersion.objects.select_for_update()
        .filter(project_id=version.project_id, kind=version.kind)
        .order_by("id")
    )
    version = next(v for v in siblings if v.pk == version.pk)
    current = next((v for v in siblings if v.status == VersionStatus.ACTIVE), None)
    if current is not None and current.pk == version.pk:
        raise ApplicationError(f"Version {version.number} is already active.", code="noop")
    if current is not None:
        current.status = VersionStatus.RETIRED
        current.save(update_fields=["status"])
    version.status = VersionStatus.ACTIVE
    version.promoted_at = timezone.now()
    version.promoted_by = actor
    version.save(update_fields=["status", "promoted_at", "promoted_by"])
    is_rollback = current is not None and version.number < current.number
    PromotionEvent.objects.create(
        version=version,
        replaced=current,
        action=PromotionAction.ROLLBACK if is_rollback else PromotionAction.PROMOTE,
        actor=actor,
        reason=reason,
    )
    audit_record(
        action=AuditAction.VERSION_ROLLED_BACK if is_rollback else AuditAction.VERSION_PROMOTED,
        actor=actor,
        project_id=version.project_id,
        target=f"{version.kind} v{version.number}",
        detail={"replaced": current.number if current else None, "reason": reason},
    )
    return version


def version_next_number(*, project_id: int, kind: str) -> int:
    last = ModelVersion.objects.filter(project_id=project_id, kind=kind).order_by("-number").first()
    return (last.number + 1) if last else 1
