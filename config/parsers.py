"""The API's JSON parser: DRF's, behind config.safe_json's depth and text checks."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from config.safe_json import json_loads_checked


class CheckedJSONParser(JSONParser):
    """DRF's JSON parser behind the checks above, for every API view."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ParseError(f"The body is not UTF-8 (byte {error.start}).") from None
        try:
            return json_loads_checked(text)
        except ValueError as error:
            raise ParseError(f"JSON parse error: {error}") from None
