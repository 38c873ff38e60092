"""JSON from untrusted input, checked before and after parsing; pure Python, no Django.

- nesting deeper than MAX_JSON_DEPTH is refused before json.loads recurses (50,000 nested
  brackets raise RecursionError inside it);
- NaN and Infinity are refused (they are not JSON, and no client could read them back);
- a lone UTF-16 surrogate in any string is refused: no UTF-8 column can store one.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


ESCAPE = re.compile(r"\\.", re.DOTALL)
PLAIN_STRING = re.compile(r'"[^"]*"')
NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`, counted outside strings."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, at C speed
    # Escapes out first, then whole strings, then everything but brackets: each step runs in C.
    brackets = NOT_A_BRACKET.sub("", PLAIN_STRING.sub("", ESCAPE.sub("", text)))
    depth = 0
    for bracket in brackets:
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys too) holds a lone UTF-16 surrogate."""
    if isinstance(value, str):
        return LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_loads_checked(text: str) -> Any:
    """json.loads for untrusted input; ValueError for deep nesting, NaN or a lone surrogate."""
    if json_depth_exceeds(text):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not accepted.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # cannot happen after the depth check; a net, not a path
        raise ValueError("JSON nested too deeply.") from None
    # Text decoded from UTF-8 has no surrogates; only a \uD8xx-\uDFxx escape can bring one.
    if SURROGATE_ESCAPE.search(text) and has_lone_surrogate(value):
        raise ValueError(SURROGATE_MESSAGE)
    return value


SURROGATE_MESSAGE = "The text holds a lone UTF-16 surrogate (U+D800 to U+DFFF), which is not text."
