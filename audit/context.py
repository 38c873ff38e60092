"""Where the current request comes from, for the audit trail; set by AuditOriginMiddleware.

A context variable instead of a parameter: the services that write audit events are called
from views, tasks and management commands alike, and only a view knows a client address.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

request_origin: ContextVar[str] = ContextVar("request_origin", default="")


def client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR is the peer; behind a proxy, put the proxy's address handling in front.
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


class AuditOriginMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = request_origin.set(client_address(request))
        try:
            return self.get_response(request)
        finally:
            request_origin.reset(token)
