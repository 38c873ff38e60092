"""The OpenAI wire format: request validation, response and chunk shapes, errors.

Only what Tandem serves is accepted; a parameter it cannot honour (logprobs, tools, penalties
other than 0) is refused with a 400 that names it rather than silently ignored, so a client
never believes it got what it asked for.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from config.safe_json import json_loads_checked
from training.engine.data import Messages

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4
# Accepted and ignored: they change nothing about the answer (user is a caller's own tag).
IGNORED = {"user", "stream_options", "metadata", "store", "service_tier", "parallel_tool_calls"}
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False}
REFUSED = {"tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias",
           "top_logprobs", "audio", "modalities", "prediction", "web_search_options"}  # fmt: skip


class OpenAIError(Exception):
    """An error as the OpenAI API answers it: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "invalid_request_error",
        param: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.param = message, status, code, param
        self.error_type = error_type or _type_for(status)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


def _type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


@dataclass(frozen=True)
class Limits:
    max_tokens: int
    max_n: int


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: Messages
    n: int
    temperature: float
    top_p: float
    max_tokens: int | None  # None: up to the model's context (and the server's cap)
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json_loads_checked(raw.decode("utf-8") or "null")
    except UnicodeDecodeError:
        raise OpenAIError("The request body is not UTF-8.") from None
    except ValueError as error:
        raise OpenAIError(f"The request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object.")
    return body


def parse_chat_request(body: dict[str, Any], limits: Limits) -> ChatRequest:
    for name in REFUSED:
        if body.get(name) not in (None, [], {}):
            raise OpenAIError(f"{name} is not supported by this server.", param=name)
    for name, neutral in NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise OpenAIError(f"{name} is not supported by this server.", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("model is required: a name from GET /v1/models.", param="model")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        max_tokens = _integer(max_tokens, "max_tokens", 1, limits.max_tokens)
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise OpenAIError("stream_options must be an object.", param="stream_options")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        n=_integer(body.get("n", 1), "n", 1, limits.max_n),
        temperature=_number(body.get("temperature", 1.0), "temperature", 0.0, 2.0),
        top_p=_top_p(body.get("top_p", 1.0)),
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        seed=None if body.get("seed") is None else _integer(body["seed"], "seed", -(2**63), 2**63),
        stream=_boolean(body.get("stream", False), "stream"),
        include_usage=_boolean(stream_options.get("include_usage", False), "include_usage"),
    )


def _messages(value: Any) -> Messages:
    if not isinstance(value, list) or not value:
        raise OpenAIError("messages must be a non-empty list.", param="messages")
    messages: Messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise OpenAIError(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise OpenAIError(f"{where}.role must be one of {', '.join(ROLES)}.", param=where)
        messages.append({"role": role, "content": _content(message.get("content"), where)})
    if not any(m["role"] == "user" for m in messages):
        raise OpenAIError("messages need at least one user message.", param="messages")
    return messages


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: text only
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise OpenAIError(f"{where}.content: only text parts are supported.", param=where)
            text = part.get("text")
            if not isinstance(text, str):
                raise OpenAIError(f"{where}.content: a text part needs text.", param=where)
            texts.append(text)
        return "".join(texts)
    raise OpenAIError(f"{where}.content must be a string or a list of text parts.", param=where)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIError(f"{name} must be an integer.", param=name)
    if not low <= value <= high:
        raise OpenAIError(f"{name}={value}: use a value from {low} to {high}.", param=name)
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise OpenAIError(f"{name} must be a number.", param=name)
    if not low <= value <= high:
        raise OpenAIError(f"{name}={value}: use a value from {low} to {high}.", param=name)
    return float(value)


def _top_p(value: Any) -> float:
    top_p = _number(value, "top_p", 0.0, 1.0)
    if top_p == 0:
        raise OpenAIError("top_p=0: use a value in (0, 1].", param="top_p")
    return top_p


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise OpenAIError(f"{name} must be true or false.", param=name)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError("stop must be a non-empty string or a list of them.", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise OpenAIError(f"stop takes at most {MAX_STOP_STRINGS} strings.", param="stop")
    return tuple(stops)


# --- responses -----------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    *,
    id_: str,
    model: str,
    fingerprint: str,
    texts: list[str],
    finish_reasons: list[str],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
            for i, (text, reason) in enumerate(zip(texts, finish_reasons, strict=True))
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_body(
    *,
    id_: str,
    model: str,
    fingerprint: str,
    created: int,
    choices: list[dict[str, Any]],
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
