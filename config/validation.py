"""One input layer for what the database and the parsers cannot take: ids, integers, JSON.

Every number a request carries ends in a 64-bit database column, every body in a JSON parser
and every text in a UTF-8 column, so each of these is checked once, here, and refused with a
400 (or a 404 for an id in a path) instead of failing deep inside as a 500:

- ids in URL paths: the `id` path converter matches 1 to 2^63 - 1 only (else the URL is a 404);
- integers in bodies and query strings: `BoundedIntegerField` and `query_int` keep them in the
  64-bit range and read only ASCII digits (`str.isdigit()` also accepts superscripts and
  Arabic-Indic digits);
- JSON: nesting too deep for the parser and lone UTF-16 surrogates (which no UTF-8 column can
  store) are refused wherever JSON arrives (config.safe_json, used by the API's parser and the
  file importers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from config.errors import ApplicationError

MAX_DB_INTEGER = 2**63 - 1
MIN_DB_INTEGER = -(2**63)
# Django's PositiveIntegerField is a 32-bit column on PostgreSQL.
MAX_POSITIVE_INTEGER = 2**31 - 1
ASCII_DIGITS = re.compile(r"[0-9]+")


# --- ids in paths ---------------------------------------------------------------------------


class IdConverter:
    """`<id:name>`: a database id (1 .. 2^63 - 1); anything else does not match (404)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_DB_INTEGER:
            raise ValueError("not a database id")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


# --- integers -------------------------------------------------------------------------------


class BoundedIntegerField(serializers.IntegerField):
    """An IntegerField that never hands the database a number its columns cannot hold."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", MAX_DB_INTEGER)
        kwargs.setdefault("min_value", MIN_DB_INTEGER)
        super().__init__(**kwargs)


def query_int(
    params: Mapping[str, str],
    name: str,
    *,
    minimum: int = 0,
    maximum: int = MAX_DB_INTEGER,
) -> int | None:
    """An optional integer query parameter: ASCII digits within [minimum, maximum], else 400."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not ASCII_DIGITS.fullmatch(raw) or len(raw) > 19:
        raise ApplicationError(f"{name} must be a whole number from {minimum} to {maximum}.")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApplicationError(f"{name} must be a whole number from {minimum} to {maximum}.")
    return value


# --- request sizes --------------------------------------------------------------------------

# Slack for the multipart envelope around the file when judging Content-Length up front.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def too_large(limit: int, what: str = "The upload") -> ApplicationError:
    return ApplicationError(
        f"{what} is larger than the limit of {limit} bytes; split it into parts.",
        code="too_large",
        http_status=413,
    )


def refuse_declared_oversize(meta: Mapping[str, Any], limit: int) -> None:
    """Refuse an upload whose declared length is over the limit before its body is read."""
    declared = str(meta.get("CONTENT_LENGTH") or "0")
    if ASCII_DIGITS.fullmatch(declared) and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise too_large(limit)
