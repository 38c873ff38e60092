"""Generation through an OpenAI-compatible server (vLLM, SGLang, Tandem's own policy server).

The in-process sampler (generate.py) suits a small model on the worker; a 7B policy on GPUs is
served by an engine built for it. This client writes a round's answers there instead:

  check()                         the server answers /v1/models (and, for vLLM adapters, has its
                                  runtime LoRA endpoints), or a message says which flag is missing
  load_adapter(prefix, path)      the version's adapter under a fresh name (never reloaded in
                                  place: vLLM keeps prefix-cache entries per name), reused if one
                                  of this prefix is loaded already
  unload(name)                    an adapter of a retired version goes
  generate(model, prompts, cfg)   n answers per prompt, `concurrency` requests at a time, each
                                  retried with exponential backoff on connection errors, 429
                                  and 5xx; a request that still fails raises RemoteError

Plain HTTP (httpx), no Django: the runner decides which version and which server.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from training.engine.config import GenerationConfig
from training.engine.generate import Prompt, row_seed

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 16.0


class RemoteError(RuntimeError):
    """The server could not be used: unreachable, refused, or missing a feature."""


@dataclass(frozen=True)
class RemoteBackend:
    base_url: str  # ends in /v1, e.g. http://vllm:8000/v1
    api_key: str = ""
    timeout_seconds: float = 120.0
    concurrency: int = 8
    max_retries: int = 4
    backoff_seconds: float = 0.5  # the first retry's wait; doubles per retry


@dataclass(frozen=True)
class RemoteAnswer:
    text: str
    finished: bool  # False when cut at max_tokens (finish_reason "length")


def _root(base_url: str) -> str:
    """vLLM's adapter endpoints live beside /v1/models, under the same /v1."""
    return base_url.rstrip("/")


class RemoteGenerator:
    def __init__(
        self, backend: RemoteBackend, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.backend = backend
        headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
        timeout = httpx.Timeout(backend.timeout_seconds, connect=min(10.0, backend.timeout_seconds))
        self.client = httpx.Client(
            base_url=_root(backend.base_url), headers=headers, timeout=timeout,
            limits=httpx.Limits(max_connections=backend.concurrency * 2), transport=transport,
        )  # fmt: skip

    def close(self) -> None:
        self.client.close()

    # --- requests with retries -------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """One call, retried on what a restarting or busy server answers; other statuses are
        returned for the caller to read."""
        wait = self.backend.backoff_seconds
        for attempt in range(self.backend.max_retries + 1):
            try:
                response = self.client.request(method, path, json=body)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem = f"HTTP {response.status_code}: {_message(response)}"
                wait = max(wait, _retry_after(response))
            if attempt == self.backend.max_retries:
                raise RemoteError(
                    f"{self.backend.base_url}{path} failed after {attempt + 1} tries: {problem}"
                )
            logger.warning(
                "%s%s: %s; retrying in %.1f s", self.backend.base_url, path, problem, wait
            )
            time.sleep(wait)
            wait = min(wait * 2, MAX_BACKOFF_SECONDS)
        raise AssertionError("unreachable")

    # --- checks and adapters ---------------------------------------------------------------------

    def served_models(self) -> list[dict[str, Any]]:
        response = self._request("GET", "/models")
        if response.status_code in (401, 403):
            raise RemoteError(
                f"{self.backend.base_url} refused the API key (HTTP {response.status_code}): "
                "set the project's generation_backend.api_key_env to a variable holding its key."
            )
        if response.status_code != 200:
            raise RemoteError(
                f"{self.backend.base_url}/models answered HTTP {response.status_code}: "
                f"{_message(response)}"
            )
        data = response.json().get("data")
        if not isinstance(data, list):
            raise RemoteError(f"{self.backend.base_url}/models did not list models.")
        return [m for m in data if isinstance(m, dict)]

    def check(self, *, adapters: bool) -> None:
        """Fail early, with the fix in the message, if the server cannot do what a round needs."""
        self.served_models()
        if not adapters:
            return
        probe = f"tandem-probe-{secrets.token_hex(4)}"
        response = self._request("POST", "/unload_lora_adapter", {"lora_name": probe})
        if response.status_code in (404, 405) and not _is_api_error(response):
            raise RemoteError(
                f"{self.backend.base_url} has no runtime LoRA endpoints (/v1/load_lora_adapter): "
                "start vLLM with --enable-lora and the environment variable "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
            )

    def load_adapter(self, prefix: str, path: str) -> str:
        """A served name for the adapter at `path`: one already loaded under `prefix`, or a
        fresh `prefix-<random>` loaded now."""
        for model in self.served_models():
            name = str(model.get("id", ""))
            if name.startswith(f"{prefix}-"):
                return name
        name = f"{prefix}-{secrets.token_hex(3)}"
        response = self._request(
            "POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if response.status_code != 200:
            hint = ""
            if response.status_code in (404, 405) and not _is_api_error(response):
                hint = " Start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
            elif "lora" in _message(response).lower() and "enable" in _message(response).lower():
                hint = " Start vLLM with --enable-lora (and --max-lora-rank at least the rank)."
            raise RemoteError(
                f"loading the adapter {path} as {name!r} failed (HTTP {response.status_code}): "
                f"{_message(response)}.{hint} The path must be readable by the server."
            )
        return name

    def unload(self, name: str) -> bool:
        """Unload one adapter; False if the server did not have it."""
        response = self._request("POST", "/unload_lora_adapter", {"lora_name": name})
        return response.status_code == 200

    # --- generation ------------------------------------------------------------------------------

    def generate(
        self,
        model: str,
        prompts: Sequence[Prompt],
        config: GenerationConfig,
        *,
        on_answer: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[list[RemoteAnswer]] | None:
        """`config.samples_per_prompt` answers per prompt, in order; None if should_stop asked
        to stop (what was written is dropped: the caller stores whole chunks only)."""
        config.validate()
        done = 0
        lock = threading.Lock()
        stopped = threading.Event()

        def one(index: int) -> list[RemoteAnswer]:
            nonlocal done
            if stopped.is_set() or (should_stop is not None and should_stop()):
                stopped.set()
                return []
            answers = self._complete(
                model, prompts[index], config, seed=row_seed(config.seed, index, 0)
            )
            with lock:
                done += 1
                if on_answer is not None:
                    on_answer(done, len(prompts))
            return answers

        with ThreadPoolExecutor(max_workers=self.backend.concurrency) as pool:
            results = list(pool.map(one, range(len(prompts))))
        return None if stopped.is_set() else results

    def _complete(
        self, model: str, prompt: Prompt, config: GenerationConfig, *, seed: int
    ) -> list[RemoteAnswer]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "n": config.samples_per_prompt,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": seed % (2**31),
        }
        if config.top_k > 0:
            body["top_k"] = config.top_k  # vLLM's extension; others refuse or ignore it
        response = self._request("POST", "/chat/completions", body)
        if response.status_code != 200:
            raise RemoteError(
                f"{self.backend.base_url}/chat/completions answered HTTP {response.status_code}: "
                f"{_message(response)}"
            )
        choices = sorted(response.json().get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != config.samples_per_prompt:
            raise RemoteError(
                f"asked {config.samples_per_prompt} answers (n), the server gave {len(choices)}."
            )
        return [
            RemoteAnswer(
                text=(choice.get("message") or {}).get("content") or "",
                finished=choice.get("finish_reason") != "length",
            )
            for choice in choices
        ]


def api_key_from(variable: str) -> str:
    """The key from the worker's environment: keys are never stored in the database."""
    if not variable:
        return ""
    value = os.environ.get(variable)
    if value is None:
        raise RemoteError(f"generation_backend.api_key_env names {variable}, which is not set.")
    return value


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in body:
            return str(body["message"])
        if "detail" in body:
            return str(body["detail"])
    return str(body)[:300]


def _is_api_error(response: httpx.Response) -> bool:
    """An error the endpoint itself wrote, as opposed to a router's bare "Not Found"."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and ("error" in body or "object" in body or "message" in body)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), MAX_BACKOFF_SECONDS)
    except ValueError:
        return 0.0
