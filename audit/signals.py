"""Failed sign-ins reach the trail from Django's own signal (django-axes counts them too)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from audit.context import client_address
from audit.models import AuditAction
from audit.services import audit_record


@receiver(user_login_failed)
def sign_in_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        action=AuditAction.SIGN_IN_FAILED,
        actor=None,
        target=f"user {username}",
        detail={"username": username},
        origin=client_address(request) if request is not None else "",
    )
