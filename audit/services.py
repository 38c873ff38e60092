"""Writing the audit trail: one function, called where the audited action is taken."""

from __future__ import annotations

from typing import Any

from audit.context import request_origin
from audit.models import AuditEvent
from config.users import User


def audit_record(
    *,
    action: str,
    actor: User | None,
    project_id: int | None = None,
    target: str = "",
    detail: dict[str, Any] | None = None,
    origin: str | None = None,
) -> AuditEvent:
    """Record one audited action (in the caller's transaction: it is kept only if that is)."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        origin=request_origin.get() if origin is None else origin[:64],
        project_id=project_id,
        target=target[:200],
        detail=detail or {},
    )
