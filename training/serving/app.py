"""The policy server: an ASGI app (Starlette, run by uvicorn through `manage.py serve`).

  GET  /healthz                 the process answers
  GET  /readyz                  the base models in use are loaded (503 until then)
  GET  /v1/models               the names this token may ask for
  GET  /v1/models/{name}
  POST /v1/chat/completions     OpenAI's chat completions, streamed (SSE) or not
  POST /v1/rewards              a project's reward model scores (messages, answer) items

Every /v1 request carries `Authorization: Bearer <API token>` (the tokens of Tandem's API).
Requests of every client share one continuous batch per base model (training.engine.batcher);
the event loop only parses, authenticates and relays the batcher's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from annotate import services as annotate_services
from annotate.services import ServedAnswer
from training.engine.batcher import ChoiceEvent, RequestError, SamplingParams
from training.engine.batcher import Request as BatchRequest
from training.engine.data import Messages
from training.engine.models import POLICY_ADAPTER, ArtifactError, read_artifact
from training.engine.runtime import limit_threads
from training.serving import catalog
from training.serving.catalog import Caller, CatalogError, ServedVersion
from training.serving.engines import (
    EngineError,
    EnginePool,
    EngineSettings,
    RewardScorers,
)
from training.serving.protocol import (
    ChatRequest,
    Limits,
    OpenAIError,
    chunk_body,
    completion_body,
    completion_id,
    parse_chat_request,
    parse_json,
    sse,
    usage,
)
from training.serving.ratelimit import RateLimiter

logger = logging.getLogger("tandem.serving")

T = TypeVar("T")
# A token's access is read again after this long: a revoked token or a new membership counts
# within seconds without a query on every request.
CALLER_CACHE_SECONDS = 5.0
MAX_REWARD_ITEMS = 64


@dataclass
class ServerState:
    pool: EnginePool
    rewards: RewardScorers
    limits: Limits
    limiter: RateLimiter
    callers: dict[str, tuple[float, Caller | None]]
    # Adapters loaded by name through /v1/load_lora_adapter (vLLM's runtime LoRA API), as the
    # `openai` generation backend does with any server: name -> what it serves.
    runtime: dict[str, ServedVersion] = field(default_factory=dict)


def _db(function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    # One thread for the ORM, as Django's own async views do: connections are per thread.
    return sync_to_async(function, thread_sensitive=True)


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.serving
    return state


def error_response(error: OpenAIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


# --- authentication and limits -------------------------------------------------------------------


async def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not key.strip():
        raise OpenAIError(
            "Send an API token: Authorization: Bearer <token> (the dashboard's API token).",
            status=401, code="invalid_api_key",
        )  # fmt: skip
    key = key.strip()
    state = state_of(request)
    cached = state.callers.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < CALLER_CACHE_SECONDS:
        caller = cached[1]
    else:
        caller = await _db(catalog.caller_for_token)(key)
        state.callers[key] = (now, caller)
    if caller is None:
        raise OpenAIError("Invalid API token.", status=401, code="invalid_api_key")
    wait = state.limiter.take(key)
    if wait > 0:
        raise OpenAIError(
            f"Rate limit of {settings.SERVE_RATE_LIMIT_PER_MINUTE} requests per minute for this "
            f"token reached; retry in {wait:.1f} s.",
            status=429, code="rate_limit_exceeded",
        )  # fmt: skip
    return caller


async def _resolve_policy(state: ServerState, name: str, caller: Caller) -> ServedVersion:
    runtime = state.runtime.get(name)
    if runtime is not None and caller.is_staff:
        return runtime
    try:
        return await _db(catalog.resolve_policy)(name, caller)
    except CatalogError as error:
        raise _catalog_error(error) from None


def _catalog_error(error: CatalogError) -> OpenAIError:
    return OpenAIError(str(error), status=error.status, code=error.code, param="model")


# --- routes --------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    pool = state_of(request).pool
    ready = pool.preloaded.is_set() and not pool.errors
    body = {"status": "ready" if ready else "loading", "bases": pool.loaded, "errors": pool.errors}
    return JSONResponse(body, status_code=200 if ready else 503)


async def list_models(request: Request) -> Response:
    caller = await authenticate(request)
    models = await _db(catalog.models_visible)(caller)
    runtime = list(state_of(request).runtime.values()) if caller.is_staff else []
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": r.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "runtime",
                    "parent": r.base_model,
                    "root": r.artifact_path,
                }
                for r in runtime
            ]
            + [
                {
                    "id": m.id,
                    "object": "model",
                    "created": m.created,
                    "owned_by": m.owned_by,
                    "version": m.version,
                    "status": m.status,
                }
                for m in models
            ],
        }
    )


async def get_model(request: Request) -> Response:
    caller = await authenticate(request)
    name = request.path_params["name"]
    for model in await _db(catalog.models_visible)(caller):
        if model.id == name:
            return JSONResponse(
                {"id": model.id, "object": "model", "created": model.created,
                 "owned_by": model.owned_by, "version": model.version, "status": model.status}
            )  # fmt: skip
    try:
        await _db(catalog.resolve_policy)(name, caller)  # 403 or 404 with the reason
    except CatalogError as error:
        raise _catalog_error(error) from None
    raise OpenAIError(f"The model {name!r} does not exist.", status=404, code="model_not_found")


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_REQUEST_BYTES as the web API refuses it (413)."""
    limit = settings.MAX_REQUEST_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OpenAIError(f"The request body is over {limit} bytes.", status=413,
                          code="request_too_large")  # fmt: skip
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise OpenAIError(f"The request body is over {limit} bytes.", status=413,
                              code="request_too_large")  # fmt: skip
    return body


async def chat_completions(request: Request) -> Response:
    caller = await authenticate(request)
    state = state_of(request)
    chat = parse_chat_request(parse_json(await read_body(request)), state.limits)
    version = await _resolve_policy(state, chat.model, caller)
    try:
        engine = await state.pool.engine_for(version.base_model)
        adapter = await engine.adapter_for(version)
    except EngineError as error:
        raise OpenAIError(str(error), status=503, code="model_not_ready") from None
    try:
        prompt_ids = engine.encode(chat.messages)
    except Exception as error:  # a chat template can refuse an order of roles
        raise OpenAIError(f"messages: {error}", param="messages") from None
    room = engine.context - len(prompt_ids)
    max_tokens = chat.max_tokens or min(state.limits.max_tokens, room)
    if room < 1 or max_tokens > room:
        raise OpenAIError(
            f"This model's context is {engine.context} tokens; the messages take "
            f"{len(prompt_ids)} and max_tokens asks {max_tokens} more.",
            code="context_length_exceeded", param="messages",
        )  # fmt: skip
    params = SamplingParams(
        max_new_tokens=max_tokens, temperature=chat.temperature, top_p=chat.top_p,
        seed=chat.seed, stop=chat.stop,
    )  # fmt: skip
    relay = EventRelay(asyncio.get_running_loop(), chat.n)
    job = BatchRequest(prompt_ids, params, relay.push, n=chat.n, adapter=adapter)
    try:
        engine.batcher.submit(job)
    except RequestError as error:
        raise OpenAIError(str(error), code="context_length_exceeded") from None
    answer = Answer(completion_id(), version, chat, len(prompt_ids), time.perf_counter(), caller)
    if chat.stream:
        return StreamingResponse(
            stream_answer(answer, relay, job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await whole_answer(answer, relay, job)


async def rewards(request: Request) -> Response:
    caller = await authenticate(request)
    state = state_of(request)
    body = parse_json(await read_body(request))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("model is required: a project slug or <slug>@v<N>.", param="model")
    prompts, answers = _reward_items(body.get("items"))
    try:
        version = await _db(catalog.resolve_reward)(model, caller)
    except CatalogError as error:
        raise _catalog_error(error) from None
    started = time.perf_counter()
    try:
        scores = await asyncio.to_thread(state.rewards.score, version, prompts, answers)
    except Exception as error:
        logger.exception("reward scoring failed for %s", version.name)
        raise OpenAIError(
            f"{version.name} could not score: {error}", status=503, code="model_not_ready"
        ) from None
    logger.info(
        "scored items=%d model=%s version_id=%d seconds=%.2f token_user=%s",
        len(scores), version.name, version.version_id, time.perf_counter() - started,
        caller.username,
    )  # fmt: skip
    return JSONResponse(
        {
            "object": "list",
            "model": f"{version.project_slug}@v{version.number}",
            "data": [{"object": "reward", "index": i, "score": s} for i, s in enumerate(scores)],
        }
    )


def _reward_items(value: Any) -> tuple[list[Messages], list[str]]:
    if not isinstance(value, list) or not value:
        raise OpenAIError("items must be a non-empty list of {messages, answer}.", param="items")
    if len(value) > MAX_REWARD_ITEMS:
        raise OpenAIError(f"items takes at most {MAX_REWARD_ITEMS} per request.", param="items")
    prompts: list[Messages] = []
    answers: list[str] = []
    for i, item in enumerate(value):
        where = f"items[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("answer"), str):
            raise OpenAIError(f"{where} needs messages and an answer string.", param=where)
        chat = parse_chat_request(
            {"model": "-", "messages": item.get("messages")}, Limits(max_tokens=1, max_n=1)
        )
        prompts.append(chat.messages)
        answers.append(item["answer"])
    return prompts, answers


# --- vLLM's runtime LoRA endpoints --------------------------------------------------------------

RUNTIME_NAME = re.compile(r"^[-\w.]{1,200}$")


def _staff(caller: Caller) -> None:
    if not caller.is_staff:
        raise OpenAIError(
            "Loading adapters by path needs a staff token.", status=403, code="permission_denied"
        )


def _runtime_name(body: dict[str, Any]) -> str:
    name = body.get("lora_name")
    if not isinstance(name, str) or not RUNTIME_NAME.match(name):
        raise OpenAIError("lora_name must be 1-200 letters, digits, '-', '_' or '.'.",
                          param="lora_name")  # fmt: skip
    return name


async def load_lora_adapter(request: Request) -> Response:
    """vLLM's POST /v1/load_lora_adapter: an adapter under a new name, from a path inside
    ARTIFACTS_DIR (this server reads only artifacts Tandem wrote). Names are never reloaded."""
    caller = await authenticate(request)
    _staff(caller)
    state = state_of(request)
    body = parse_json(await read_body(request))
    name = _runtime_name(body)
    if name in state.runtime:
        raise OpenAIError(f"The lora adapter '{name}' has already been loaded.", param="lora_name")
    raw_path = body.get("lora_path")
    if not isinstance(raw_path, str) or not raw_path:
        raise OpenAIError("lora_path is required.", param="lora_path")
    path = Path(raw_path).resolve()
    root = Path(settings.ARTIFACTS_DIR).resolve()
    if not path.is_relative_to(root):
        raise OpenAIError(f"lora_path must be inside this server's ARTIFACTS_DIR ({root}).",
                          param="lora_path")  # fmt: skip
    try:
        info = read_artifact(path, expected=(POLICY_ADAPTER,))
    except (ArtifactError, OSError, ValueError) as error:
        raise OpenAIError(f"lora_path: {error}", param="lora_path") from None
    version = ServedVersion(
        requested=name, project_id=0, project_slug="", version_id=0, number=0, kind="policy",
        base_model=str(info.get("base_model", "")), artifact_path=str(path), runtime_name=name,
    )  # fmt: skip
    try:
        engine = await state.pool.engine_for(version.base_model)
        await engine.adapter_for(version)
    except EngineError as error:
        raise OpenAIError(str(error), status=503, code="model_not_ready") from None
    state.runtime[name] = version
    logger.info("loaded adapter %s from %s for %s", name, path, caller.username)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


async def unload_lora_adapter(request: Request) -> Response:
    caller = await authenticate(request)
    _staff(caller)
    state = state_of(request)
    name = _runtime_name(parse_json(await read_body(request)))
    version = state.runtime.pop(name, None)
    if version is None:
        raise OpenAIError(f"The lora adapter '{name}' cannot be found.", status=404,
                          code="not_found", param="lora_name")  # fmt: skip
    engine = await state.pool.engine_for(version.base_model)
    engine.forget(version.adapter_key)
    logger.info("unloaded adapter %s for %s", name, caller.username)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")


# --- relaying the batcher's events ---------------------------------------------------------------


class EventRelay:
    """Carries a request's events from the batcher's thread into the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, choices: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[ChoiceEvent] = asyncio.Queue()
        self.open = set(range(choices))

    def push(self, event: ChoiceEvent) -> None:  # the batcher's thread
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        while self.open:
            event = await self.queue.get()
            if event.finish_reason is not None:
                self.open.discard(event.choice)
            yield event


@dataclass
class Answer:
    id: str
    version: ServedVersion
    chat: ChatRequest
    prompt_tokens: int
    started: float
    caller: Caller

    def log(self, completion_tokens: int, reasons: list[str], streamed: bool) -> None:
        # Every answer's id and the version that wrote it, for audits and for the loop.
        logger.info(
            "answered id=%s model=%s version=%s version_id=%d prompt_tokens=%d "
            "completion_tokens=%d finish=%s stream=%s seconds=%.2f",
            self.id, self.chat.model, self.version.name, self.version.version_id,
            self.prompt_tokens, completion_tokens, ",".join(reasons), streamed,
            time.perf_counter() - self.started,
        )  # fmt: skip


def _failed(reasons: list[str]) -> bool:
    return "error" in reasons


async def whole_answer(answer: Answer, relay: EventRelay, job: BatchRequest) -> Response:
    n = answer.chat.n
    texts, reasons, tokens = [""] * n, ["length"] * n, [0] * n
    try:
        async for event in relay.events():
            texts[event.choice] += event.text
            tokens[event.choice] = event.token_count
            if event.finish_reason is not None:
                reasons[event.choice] = event.finish_reason
    finally:
        job.cancel()  # a client gone mid-answer frees its rows; a finished job ignores it
    answer.log(sum(tokens), reasons, streamed=False)
    if not _failed(reasons) and "cancelled" not in reasons:
        keep_exchange(answer, texts, tokens, reasons)
    if _failed(reasons):
        raise OpenAIError("The server failed while writing this answer.", status=500,
                          code="server_error")  # fmt: skip
    return JSONResponse(
        completion_body(
            id_=answer.id,
            model=answer.version.name,
            fingerprint=_fingerprint(answer.version),
            texts=texts,
            finish_reasons=reasons,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=sum(tokens),
        )
    )


async def stream_answer(
    answer: Answer, relay: EventRelay, job: BatchRequest
) -> AsyncIterator[bytes]:
    created = int(time.time())
    tokens = [0] * answer.chat.n
    reasons = [""] * answer.chat.n
    texts = [""] * answer.chat.n

    def chunk(choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> bytes:
        return sse(chunk_body(
            id_=answer.id, model=answer.version.name, fingerprint=_fingerprint(answer.version),
            created=created, choices=choices, usage_=usage_,
        ))  # fmt: skip

    try:
        yield chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "logprobs": None,
                }
                for i in range(answer.chat.n)
            ]
        )
        async for event in relay.events():
            tokens[event.choice] = event.token_count
            texts[event.choice] += event.text
            if event.finish_reason == "error":
                reasons[event.choice] = "error"
                yield sse(OpenAIError("The server failed while writing this answer.",
                                      status=500, code="server_error").body())  # fmt: skip
                break
            delta = {"content": event.text} if event.text else {}
            if event.finish_reason is not None:
                reasons[event.choice] = event.finish_reason
            if delta or event.finish_reason is not None:
                yield chunk([{"index": event.choice, "delta": delta,
                              "finish_reason": event.finish_reason, "logprobs": None}])  # fmt: skip
        if answer.chat.include_usage:
            yield chunk([], usage(answer.prompt_tokens, sum(tokens)))
        yield sse("[DONE]")
        if all(r in ("stop", "length") for r in reasons):
            keep_exchange(answer, texts, tokens, reasons)
    finally:
        job.cancel()
        answer.log(sum(tokens), reasons, streamed=True)


def keep_exchange(answer: Answer, texts: list[str], tokens: list[int], reasons: list[str]) -> None:
    """Hand a finished exchange to the loop where the project keeps served traffic (the
    member's opt-in is checked there, in the same transaction). Never delays the answer."""
    version = answer.version
    if version.served_traffic == "off" or version.runtime_name is not None:
        return
    answers = [
        ServedAnswer(text, count, reason == "stop")
        for text, count, reason in zip(texts, tokens, reasons, strict=True)
    ]
    keep = _db(annotate_services.served_exchange_keep)(
        project_id=version.project_id, user_id=answer.caller.user_id,
        messages=answer.chat.messages, answers=answers, version_id=version.version_id,
        request_id=answer.id, keep_pairs=version.served_traffic == "pairs",
    )  # fmt: skip
    task = asyncio.ensure_future(keep)
    _KEEPING.add(task)
    task.add_done_callback(_kept)


_KEEPING: set[asyncio.Future[Any]] = set()  # strong references until each is done


def _kept(task: asyncio.Future[Any]) -> None:
    _KEEPING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not keep a served exchange", exc_info=task.exception())


def _fingerprint(version: ServedVersion) -> str:
    return f"tandem-{version.project_slug}-v{version.number}"


# --- the app -------------------------------------------------------------------------------------


async def openai_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, OpenAIError)
    headers = {"Retry-After": "1"} if error.status == 429 else None
    return error_response(error, headers)


async def http_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = "No such endpoint." if error.status_code == 404 else str(error.detail)
    code = "not_found" if error.status_code == 404 else "method_not_allowed"
    return error_response(OpenAIError(message, status=error.status_code, code=code))


async def server_error_handler(request: Request, error: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path, exc_info=error)
    return error_response(OpenAIError("Internal server error.", status=500, code="server_error"))


def build_app(*, preload: bool = True) -> Starlette:
    engine_settings = EngineSettings(
        max_rows=settings.SERVE_MAX_BATCH_ROWS,
        adapters_in_memory=settings.SERVE_ADAPTERS_IN_MEMORY,
        precision=settings.SERVE_PRECISION,
        model_cache_dir=settings.MODEL_CACHE_DIR,
    )
    state = ServerState(
        pool=EnginePool(engine_settings),
        rewards=RewardScorers(engine_settings),
        limits=Limits(max_tokens=settings.SERVE_MAX_TOKENS, max_n=settings.SERVE_MAX_N),
        limiter=RateLimiter(settings.SERVE_RATE_LIMIT_PER_MINUTE),
        callers={},
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limit_threads(settings.SERVE_TORCH_THREADS)
        if preload:
            bases = await _db(catalog.base_models_in_use)()
            threading.Thread(target=state.pool.preload, args=(bases,), daemon=True).start()
        else:
            state.pool.preloaded.set()
        yield
        state.pool.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/v1/models", list_models),
            Route("/v1/models/{name:path}", get_model),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/rewards", rewards, methods=["POST"]),
            Route("/v1/load_lora_adapter", load_lora_adapter, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload_lora_adapter, methods=["POST"]),
        ],
        exception_handlers={
            OpenAIError: openai_error_handler,
            HTTPException: http_error_handler,
            Exception: server_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.serving = state
    return app
