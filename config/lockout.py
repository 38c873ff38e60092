"""What a locked-out sign-in gets back (django-axes calls this): the API's error shape for the
API, a plain page for the admin's form. Admins see and lift lockouts in the admin (Axes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


def lockout_message() -> str:
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return (
        f"Too many failed sign-ins for this account from your address: signing in is locked "
        f"for {minutes} minutes. An admin can lift the lock sooner."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    message = lockout_message()
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "locked_out", "detail": message}, status=429)
    return HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
