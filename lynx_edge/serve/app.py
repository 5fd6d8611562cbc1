"""``lynx-edge serve``: an OpenAI-compatible chat-completions server on Starlette + uvicorn.

HTTP only: the wire format is in ``api.py``, the batching in ``batcher.py``.

* Bodies must be ``application/json`` (anything else is 415: a web page can POST text/plain
  to a local server without a preflight, and must not start a generation that way).
* Browsers: ``--cors-origin`` names the web origins that may call the API; preflights are
  answered for those only (none by default).
* ``--api-key``: every route but ``/health`` needs ``Authorization: Bearer KEY`` (scheme in any
  case, compared in constant time). ``/health`` answers ``{"status": "ok"}`` to anyone (for
  process monitors); the model name and queue length only with the key.
* A client that disconnects, streaming or not, stops its generation within one token (the
  connection is polled while waiting); a queued request whose client left never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lynx_edge.errors import ContextOverflowError, SettingError
from lynx_edge.events import AnswerDelta, Done, Reply, ThinkingDelta
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.serve.api import ApiError, ChatRequest, Completion, StopFilter, finish_reason, lynx_stats, parse_request
from lynx_edge.serve.batcher import END, Batcher, Busy, Job

log = logging.getLogger("lynx_edge.serve")
MAX_BODY_BYTES = 2 * 1024 * 1024
POLL_SECONDS = 0.1  # how often a waiting handler checks that its client is still there


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_queue: int = 32
    cors_origins: tuple[str, ...] = ()
    defaults: GenerationOptions = field(default_factory=GenerationOptions)  # for requests that name none (--alpha)


def _api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, SettingError):
        return ApiError(400, str(exc), code="invalid_value")
    log.error("generation failed: %s", exc)
    return ApiError(500, "generation failed (see the server log)", kind="server_error", code="internal_error")


def _error_response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def key_matches(header: str, api_key: str) -> bool:
    """``Bearer KEY`` with the scheme in any case, compared in constant time."""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode())


class GateMiddleware:
    """API key on every route but /health, and JSON bodies only (plain ASGI, so streaming
    and disconnects pass through untouched)."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
            error = None
            if (
                self.api_key
                and scope["path"] != "/health"
                and not key_matches(headers.get(b"authorization", ""), self.api_key)
            ):
                error = ApiError(
                    401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key"
                )
            elif (
                scope["method"] == "POST"
                and headers.get(b"content-type", "").split(";")[0].strip().lower() != "application/json"
            ):
                error = ApiError(
                    415,
                    "the body must be sent as Content-Type: application/json",
                    param="content-type",
                    code="unsupported_media_type",
                )
            if error:
                await _error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def model_id(engine: Engine) -> str:
    """The name clients pass as ``model``: the preset's, or the GGUF file's stem."""
    return engine.preset.name if engine.preset.name != "generic" else Path(engine.backend.info.path).stem


def create_app(engine: Engine, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving ``engine`` (its ``parallel`` requests at a time)."""
    settings = settings or ServerSettings()
    batcher = Batcher(engine, settings.max_queue)
    served = model_id(engine)

    async def health(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ok"}
        key = settings.api_key
        if not key or key_matches(request.headers.get("authorization", ""), key):
            body.update(model=served, running=batcher.running, queued=batcher.pending - batcher.running)
        return JSONResponse(body)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "lynx-edge"}]}
        )

    async def chat(request: Request) -> Response:
        try:
            body = await _read_json(request)
            chat_request = parse_request(body)
            if chat_request.model not in (None, served, "default"):
                raise ApiError(
                    404,
                    f"model {chat_request.model!r} is not served here: use {served!r} (GET /v1/models)",
                    param="model",
                    code="model_not_found",
                )
            job = Job(chat_request.chat(), chat_request.options(settings.defaults), asyncio.get_running_loop())
            batcher.submit(job)
        except ApiError as exc:
            return _error_response(exc)
        except SettingError as exc:
            return _error_response(ApiError(400, str(exc), code="invalid_value"))
        except Busy as exc:
            return _error_response(ApiError(503, str(exc), code="server_busy", kind="server_error"))
        first = await _next(request, job)
        if first is END:
            return Response(status_code=499)  # the client left while queued
        if isinstance(first, BaseException):
            await job.queue.get()  # the end marker
            return _error_response(_api_error(first))
        completion = Completion(
            served, logprobs=chat_request.logprobs, show_reasoning=not chat_request.thinking_asked().exclude
        )
        if chat_request.stream:
            return StreamingResponse(
                _stream(job, chat_request, first, completion),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(request, job, chat_request, first, completion)

    middleware = [Middleware(GateMiddleware, api_key=settings.api_key)]
    if settings.cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            ),
        )
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ],
        middleware=middleware,
        lifespan=_lifespan(batcher),
    )
    app.state.batcher = batcher
    return app


def _lifespan(batcher: Batcher) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        batcher.close()

    return lifespan


async def _read_json(request: Request) -> Any:
    try:
        size = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "the Content-Length header is not a number", code="invalid_value") from None
    if size > MAX_BODY_BYTES:
        raise ApiError(
            413, f"request body of {size} bytes is over the {MAX_BODY_BYTES}-byte limit", code="request_too_large"
        )
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is over the {MAX_BODY_BYTES}-byte limit", code="request_too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({str(exc)[:80]})", code="invalid_json") from None


async def _next(request: Request, job: Job) -> Any:
    """The job's next item; a client that disconnected cancels the job (the connection is
    looked at every POLL_SECONDS, also while items keep coming)."""
    while True:
        try:
            item = await asyncio.wait_for(job.queue.get(), timeout=POLL_SECONDS)
        except asyncio.TimeoutError:
            item = None
        now = asyncio.get_running_loop().time()
        if now - job.checked >= POLL_SECONDS:
            job.checked = now
            if await request.is_disconnected():
                job.cancel()
        if item is not None:
            return item


class _Collected:
    """A job's reply, with the answer cut at stop strings."""

    def __init__(self, stops: list[str]) -> None:
        self.reply = Reply()
        self.stop = StopFilter(stops)
        self.answer = ""
        self.error: BaseException | None = None

    def take(self, item: Any) -> tuple[str, str, list, list]:
        """(thinking, answer text, answer logprobs, reasoning logprobs) this item adds."""
        if isinstance(item, BaseException):
            self.error = item
            return "", "", [], []
        self.reply.fold(item)
        if isinstance(item, ThinkingDelta):
            return item.text, "", [], list(item.logprobs)
        if isinstance(item, AnswerDelta):
            text = self.stop.feed(item.text)
            self.answer += text
            return "", text, list(item.logprobs) if text else [], []
        if isinstance(item, Done):
            tail = self.stop.flush()
            self.answer += tail
            return "", tail, [], []
        return "", "", [], []


async def _stream(job: Job, request: ChatRequest, first: Any, completion: Completion) -> AsyncIterator[str]:
    got = _Collected(request.stops)
    try:
        yield _sse(completion.chunk({"role": "assistant", "content": ""}))
        item = first
        while item is not END:
            thinking, answer, answer_lp, thinking_lp = got.take(item)
            if thinking and completion.show_reasoning:
                yield _sse(
                    completion.chunk({"reasoning_content": thinking, "reasoning": thinking}, reasoning_lp=thinking_lp)
                )
            if answer:
                yield _sse(completion.chunk({"content": answer}, answer_lp=answer_lp))
            if got.stop.stopped:
                job.cancel()
            item = await job.queue.get()
        if got.error is not None or got.reply.result is None:
            yield _sse(_api_error(got.error or RuntimeError("generation ended without a result")).body())
        else:
            result = got.reply.result
            yield _sse(completion.chunk({}, finish_reason(result, got.stop.stopped), lynx=lynx_stats(got.reply)))
            if request.include_usage:
                yield _sse(completion.usage_chunk(result))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # the client went away (or we are done): free the slot at once


async def _complete(http: Request, job: Job, request: ChatRequest, first: Any, completion: Completion) -> Response:
    got = _Collected(request.stops)
    item = first
    while item is not END:
        got.take(item)
        if got.stop.stopped:
            job.cancel()
        item = await _next(http, job)
    if got.error is not None or got.reply.result is None:
        return _error_response(_api_error(got.error or RuntimeError("generation ended without a result")))
    return JSONResponse(completion.response(got.reply, got.answer, got.stop.stopped))


def serve(engine: Engine, settings: ServerSettings) -> None:
    """Run the server until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(engine, settings), host=settings.host, port=settings.port, log_level="info")
