"""The OpenAPI schema documents the errors every operation can answer, in the one error shape.

drf-spectacular describes each view's successes; what config.errors turns into 4xx bodies is
the same for every view, so it is added here once: 400 (bad input), 401/403 (not signed in,
not allowed), 404 (an id in the path or the body), 409 (a conflict with the current state),
413 (a body too large), 429 (a locked-out sign-in), 503 (the database away for a moment).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ERROR_DESCRIPTIONS = {
    "400": "The input is invalid; `detail` says which part and why.",
    "401": "Not signed in (no session, no valid token).",
    "403": "Signed in, but this role may not do this.",
    "404": "Nothing with this id, or not visible to you.",
    "409": "Conflicts with the current state (already done, closed, taken).",
    "413": "The body or upload is over the server's limit.",
    "429": "Too many failed sign-ins; locked for a while.",
    "503": "The database was unavailable for a moment; retry (a submit with the same key).",
}


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error body: a code to branch on and a message for people."""

    error = serializers.CharField(help_text="A short code: invalid, not_found, conflict, ...")
    detail = serializers.JSONField(help_text="What went wrong: a message, or per-field messages.")


class TandemAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = ERROR_DESCRIPTIONS[code]
                responses[code] = response
        return responses

    def _error_codes(self) -> list[str]:
        codes = ["400", "503"]
        if not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if "{" in self.path:
            codes.append("404")
        if self.method in UNSAFE_METHODS:
            codes += ["404", "409", "413"]  # a body can name an id too (a project, a user)
        if self.path.rstrip("/").endswith("/login"):
            codes += ["403", "429"]
        return sorted(set(codes))
