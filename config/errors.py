"""One application error type, and the one handler that turns errors into clean HTTP bodies.

Services raise ApplicationError with a message a user can act on; views never build error
responses themselves. Every API error body has the same shape: {"error": code, "detail": ...}.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A request that cannot be carried out, with a message meant for the caller."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        http_status: int = status.HTTP_400_BAD_REQUEST,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.extra = extra or {}


class NotFoundError(ApplicationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_found", http_status=status.HTTP_404_NOT_FOUND)


class ConflictError(ApplicationError):
    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(
            message, code="conflict", http_status=status.HTTP_409_CONFLICT, extra=extra
        )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response({"error": exc.code, "detail": exc.message, **exc.extra}, exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        too_big = f"The request body is larger than the limit of {limit} bytes (MAX_REQUEST_BYTES)."
        return Response(
            {"error": "too_large", "detail": too_big}, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, TooManyFieldsSent):
        too_many = "The request has more form fields than the server accepts."
        return Response({"error": "invalid", "detail": too_many}, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away mid-request (a restart, a failover, a dropped connection).
        # Django closes the broken connection when the request ends, so a retry reconnects;
        # with the same submission key a submit is stored exactly once.
        logger.warning("Database unavailable during a request: %s", exc)
        unavailable = "The database was unavailable; retry the request (with the same key)."
        return Response(
            {"error": "unavailable", "detail": unavailable},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, DataError):
        # The input layer (config.validation) keeps numbers and text storable; this is the net
        # under it, so a value it missed is still the caller's 400 and never a 500.
        logger.warning("A value the database refused reached it: %s", exc)
        out_of_range = "A value in the request is out of the range the server can store."
        return Response({"error": "invalid", "detail": out_of_range}, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django logs it and answers 500
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": response.data}
    elif isinstance(exc, exceptions.APIException):
        response.data = {"error": exc.default_code, "detail": response.data.get("detail")}
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404s: in the API's error shape under /api/, Django's plain page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "not_found", "detail": f"No such endpoint: {request.path}"}, status=404
        )
    return page_not_found(request, exception or Http404())
