"""``lynx-edge serve``: an OpenAI-compatible chat-completions server on Starlette + uvicorn.

One engine (one model) serves one generation at a time on a worker thread; requests wait in
a bounded queue (full → 503 with Retry-After). A client that disconnects, or a stop string
that matches, cancels its generation at the next token. The wire format lives in
``openai_api.py``; this module only moves it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lynx_edge.engine import Engine
from lynx_edge.errors import ContextOverflowError, LynxError, SettingError
from lynx_edge.events import AnswerDelta, Done, Savings, ThinkingDelta
from lynx_edge.openai_api import (
    ApiError,
    ChatRequest,
    Completion,
    StopFilter,
    finish_reason,
    lynx_stats,
    parse_request,
)

log = logging.getLogger("lynx_edge.server")
MAX_BODY_BYTES = 2 * 1024 * 1024
_END = object()


class Job:
    """One request's generation: events flow from the worker thread into an asyncio queue."""

    def __init__(self, request: ChatRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Worker:
    """Runs jobs one at a time on a single thread; refuses new ones when the queue is full."""

    def __init__(self, engine: Engine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.pending = 0  # queued + running; touched on the event loop only
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lynx-generate")
        self._lock = threading.Lock()
        self._current: Job | None = None

    def submit(self, job: Job) -> None:
        if self.pending >= self.max_queue + 1:
            raise ApiError(503, f"the server is busy ({self.pending} requests queued or running): retry shortly",
                           code="server_busy", kind="server_error")
        self.pending += 1
        future = self._executor.submit(self._run, job)
        future.add_done_callback(lambda _: job.loop.call_soon_threadsafe(self._finished))

    def _finished(self) -> None:
        self.pending -= 1

    def cancel(self, job: Job) -> None:
        """Stop ``job`` at its next token (or skip it if it has not started)."""
        job.cancelled.set()
        with self._lock:
            if self._current is job:
                self.engine.cancel()

    def _run(self, job: Job) -> None:
        if job.cancelled.is_set():
            job.put(_END)
            return
        with self._lock:
            self._current = job
        r = job.request
        try:
            events = self.engine.generate(
                r.messages, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                lynx=r.lynx, alpha=r.alpha, measure_savings=r.measure_savings,
            )
            for event in events:
                if job.cancelled.is_set():
                    self.engine.cancel()
                job.put(event)
        except LynxError as exc:
            job.put(exc)
        except Exception as exc:  # noqa: BLE001 — reported to the client; the server keeps serving
            log.error("generation failed: %s", exc)
            job.put(ApiError(500, f"generation failed: {exc}", kind="server_error", code="internal_error"))
        finally:
            with self._lock:
                self._current = None
            job.put(_END)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, SettingError):
        return ApiError(400, str(exc), code="invalid_value")
    return ApiError(500, str(exc), kind="server_error", code="internal_error")


def _error_response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class ApiKeyMiddleware:
    """Bearer key on every route but /health (plain ASGI, so streaming and disconnects pass
    through untouched)."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.api_key and scope["type"] == "http" and scope["path"] != "/health":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if auth != f"Bearer {self.api_key}":
                error = ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key")
                await _error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def model_id(engine: Engine) -> str:
    """The name clients pass as ``model``: the preset's, or the GGUF file's stem."""
    return engine.preset.name if engine.preset.name != "generic" else Path(engine.backend.info.path).stem


def create_app(engine: Engine, *, api_key: str | None = None, max_queue: int = 8) -> Starlette:
    """The ASGI app serving ``engine``."""
    worker = Worker(engine, max_queue)
    served = model_id(engine)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": served, "queued": worker.pending})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "lynx-edge"}]})

    async def chat(request: Request) -> Response:
        try:
            body = await _read_json(request)
            chat_request = parse_request(body)
            if chat_request.model not in (None, served, "default"):
                raise ApiError(404, f"model {chat_request.model!r} is not served here: use {served!r} (GET /v1/models)",
                               param="model", code="model_not_found")
            job = Job(chat_request, asyncio.get_running_loop())
            worker.submit(job)
        except ApiError as exc:
            return _error_response(exc)
        first = await _next(request, worker, job)
        if first is _END:
            return Response(status_code=499)  # the client left while queued
        if isinstance(first, Exception):
            await job.queue.get()  # the end marker
            return _error_response(_api_error(first))
        completion = Completion(served)
        if chat_request.stream:
            return StreamingResponse(
                _stream(worker, job, first, completion), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(request, worker, job, first, completion)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ],
        middleware=[Middleware(ApiKeyMiddleware, api_key=api_key)],
        lifespan=_lifespan(worker),
    )
    app.state.worker = worker
    return app


def _lifespan(worker: Worker) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        worker.close()

    return lifespan


async def _read_json(request: Request) -> Any:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY_BYTES:
        raise ApiError(413, f"request body of {size} bytes is over the {MAX_BODY_BYTES}-byte limit", code="request_too_large")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is over the {MAX_BODY_BYTES}-byte limit", code="request_too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})", code="invalid_json") from None


class _Collected:
    """What the events of one job add up to."""

    def __init__(self, stops: list[str]) -> None:
        self.thinking: list[str] = []
        self.answer: list[str] = []
        self.stop = StopFilter(stops)
        self.result = None
        self.error: Exception | None = None

    def take(self, item: Any) -> tuple[str, str]:
        """(thinking text, answer text) this item adds, after stop strings."""
        if isinstance(item, ThinkingDelta):
            self.thinking.append(item.text)
            return item.text, ""
        if isinstance(item, AnswerDelta):
            text = self.stop.feed(item.text)
            self.answer.append(text)
            return "", text
        if isinstance(item, Done):
            self.result = item.result
            tail = self.stop.flush()
            self.answer.append(tail)
            return "", tail
        if isinstance(item, Savings) and self.result is not None:
            self.result.tokens_saved = item.tokens_saved
            self.result.natural_tokens = item.natural_tokens
        elif isinstance(item, Exception):
            self.error = item
        return "", ""


async def _stream(worker: Worker, job: Job, first: Any, completion: Completion) -> AsyncIterator[str]:
    got = _Collected(job.request.stop)
    try:
        yield _sse(completion.chunk({"role": "assistant", "content": ""}))
        item = first
        while item is not _END:
            thinking, answer = got.take(item)
            if thinking:
                yield _sse(completion.chunk({"reasoning_content": thinking, "reasoning": thinking}))
            if answer:
                yield _sse(completion.chunk({"content": answer}))
            if got.stop.stopped:
                worker.cancel(job)
            item = await job.queue.get()
        if got.error is not None or got.result is None:
            error = _api_error(got.error or LynxError("generation ended without a result"))
            yield _sse(error.body())
        else:
            yield _sse(completion.chunk({}, finish_reason(got.result, got.stop.stopped), lynx=lynx_stats(got.result)))
            if job.request.include_usage:
                yield _sse(completion.usage_chunk(got.result))
        yield "data: [DONE]\n\n"
    finally:
        worker.cancel(job)  # the client went away (or we are done): free the slot at once


async def _next(request: Request, worker: Worker, job: Job) -> Any:
    """The job's next item; a client that disconnects meanwhile cancels the job."""
    while True:
        try:
            return await asyncio.wait_for(job.queue.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                worker.cancel(job)


async def _complete(request: Request, worker: Worker, job: Job, first: Any, completion: Completion) -> Response:
    got = _Collected(job.request.stop)
    item = first
    while item is not _END:
        got.take(item)
        if got.stop.stopped:
            worker.cancel(job)
        item = await _next(request, worker, job)
    if got.error is not None or got.result is None:
        return _error_response(_api_error(got.error or LynxError("generation ended without a result")))
    return JSONResponse(completion.response("".join(got.thinking), "".join(got.answer), got.result, got.stop.stopped))


def serve(engine: Engine, *, host: str, port: int, api_key: str | None, max_queue: int) -> None:
    """Run the server until Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(engine, api_key=api_key, max_queue=max_queue), host=host, port=port, log_level="info")
