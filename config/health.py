"""Liveness and readiness for load balancers and compose health checks. No login needed."""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def health(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database_ok = True
    except Exception:  # any failure means "not ready"; the message is in the server log
        database_ok = False
    body = {
        "status": "ok" if database_ok else "unavailable",
        "database": connection.vendor if database_ok else "unreachable",
        "broker": urlparse(settings.CELERY_BROKER_URL).scheme,
    }
    return JsonResponse(body, status=200 if database_ok else 503)
