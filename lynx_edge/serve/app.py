"""``lynx-edge serve``: one engine behind the doors apps knock on, on Starlette + uvicorn.

Routes: OpenAI ``/v1/chat/completions``, ``/v1/responses`` and ``/v1/models``; Anthropic
``/v1/messages`` and ``/v1/messages/count_tokens``; Ollama ``/api/chat``, ``/api/generate``,
``/api/tags``, ``/api/show``, ``/api/ps`` and ``/api/version``; ``/health``. Each door's module
parses its body into one ``Ask`` and writes the events back in its API's shapes
(``serve.wire.Writer``); the queue, the generation, stop strings and disconnects below are
the same for all of them. HTTP only here: the batching is in ``batcher.py``.

* Bodies must be ``application/json`` (anything else is 415: a web page can POST text/plain
  to a local server without a preflight, and must not start a generation that way). The
  Ollama routes also take a form-typed body from a client that sends no ``Origin`` (``curl
  -d``, as Ollama's own docs do): browsers always send one.
* Browsers: ``--cors-origin`` names the web origins that may call the API; preflights are
  answered for those only (none by default).
* ``Host`` and ``Origin`` (``serve.guard``): on loopback, only requests naming a loopback host
  (or an ``--allowed-host``) and only local pages (or a ``--cors-origin``) are served, every
  other one is 403: the DNS-rebinding hole a local server otherwise leaves open.
* ``--api-key``: every route but ``/health`` needs ``Authorization: Bearer KEY`` (scheme in any
  case) or ``x-api-key: KEY`` (Anthropic's clients), compared in constant time. ``/health``
  answers ``{"status": "ready"}`` to anyone (503 ``"loading"`` while the model loads: see
  ``sidecar``); the model name and queue length only with the key.
* Errors come in the shape of the door they came through (OpenAI's, Anthropic's, Ollama's).
* A client that disconnects, streaming or not, stops its generation within one token (the
  connection is polled while waiting); a queued request whose client left never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lynx_edge.errors import ContextOverflowError, SettingError
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.serve import anthropic_messages, ollama, openai_chat, openai_responses, sidecar
from lynx_edge.serve.batcher import END, Batcher, Busy, Job
from lynx_edge.serve.guard import HostGuardMiddleware, HostPolicy
from lynx_edge.serve.sidecar import Lifecycle
from lynx_edge.serve.wire import ApiError, Ask, Collected, Served, Writer, error_body

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
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides the loopback ones ("*": any)

    @property
    def policy(self) -> HostPolicy:
        return HostPolicy(self.host, self.allowed_hosts, self.cors_origins)


# what a door makes of a body: the ask, and the writer of its reply
Start = Callable[[Any, GenerationOptions, Served], tuple[Ask, Writer]]
# a door's error shape: (status, body)
Shape = Callable[[ApiError], tuple[int, dict[str, Any]]]


def _openai_shape(error: ApiError) -> tuple[int, dict[str, Any]]:
    return error.status, error_body(error)


def shape_for(path: str) -> Shape:
    """The error shape of the door at ``path``."""
    if path.startswith("/api/"):
        return ollama.error_shape
    if path.startswith("/v1/messages"):
        return anthropic_messages.error_shape
    return _openai_shape


def _api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, SettingError):
        return ApiError(400, str(exc), code="invalid_value")
    log.error("generation failed: %s", exc)
    return ApiError(500, "generation failed (see the server log)", kind="server_error", code="internal_error")


def _error_response(error: ApiError, shape: Shape) -> JSONResponse:
    status, body = shape(error)
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


def refusal(path: str, message: str, status: int = 403) -> JSONResponse:
    """A request turned away before any door reads it (a foreign host, or still loading), in
    the shape of the door at ``path``."""
    kind, code = ("permission_error", "forbidden") if status == 403 else ("overloaded_error", "model_loading")
    return _error_response(ApiError(status, message, code=code, kind=kind), shape_for(path))


def guarded(app: Any, settings: ServerSettings) -> Any:
    """``app`` behind the Host/Origin checks of ``settings``."""
    return HostGuardMiddleware(app, settings.policy, refusal)


def key_matches(headers: dict[str, str], api_key: str) -> bool:
    """``Authorization: Bearer KEY`` (scheme in any case) or ``x-api-key: KEY``, compared in
    constant time."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    bearer = scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode())
    return bearer or secrets.compare_digest(headers.get("x-api-key", "").strip().encode(), api_key.encode())


class GateMiddleware:
    """API key on every route but /health, and JSON bodies only (plain ASGI, so streaming
    and disconnects pass through untouched)."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            path = scope["path"]
            error = None
            if self.api_key and path != "/health" and not key_matches(headers, self.api_key):
                error = ApiError(
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key> (or x-api-key: <key>)",
                    code="invalid_api_key",
                    kind="authentication_error",
                )
            elif scope["method"] == "POST" and not _json_body(path, headers):
                error = ApiError(
                    415,
                    "the body must be sent as Content-Type: application/json",
                    param="content-type",
                    code="unsupported_media_type",
                )
            if error:
                await _error_response(error, shape_for(path))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json_body(path: str, headers: dict[str, str]) -> bool:
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return True
    form = kind in ("", "application/x-www-form-urlencoded")
    return path.startswith("/api/") and form and "origin" not in headers


def model_id(engine: Engine) -> str:
    """The name clients pass as ``model``: the preset's, or the GGUF file's stem."""
    return engine.describe().served_name


def create_app(engine: Engine, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving ``engine`` (its ``parallel`` requests at a time)."""
    settings = settings or ServerSettings()
    batcher = Batcher(engine, settings.max_queue)
    described = engine.describe()
    served = described.served_name
    names = (None, "default", served, f"{served}:latest")
    model = Served(served, described.n_ctx, described.thinks)

    async def health(request: Request) -> JSONResponse:
        body: dict[str, Any] = {"status": "ready"}
        key = settings.api_key
        if not key or key_matches({k.lower(): v for k, v in request.headers.items()}, key):
            body.update(model=served, running=batcher.running, queued=batcher.pending - batcher.running)
        return JSONResponse(body)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "lynx-edge"}]}
        )

    async def generate(request: Request, start: Start, shape: Shape, body: Any = None) -> Response:
        try:
            if body is None:
                body = await _read_json(request)
            ask, writer = start(body, settings.defaults, model)
            if ask.model not in names:
                raise ApiError(
                    404,
                    f"model {ask.model!r} is not served here: use {served!r}",
                    param="model",
                    code="model_not_found",
                    kind="not_found_error",
                )
            job = Job(ask.messages, ask.options, asyncio.get_running_loop())
            batcher.submit(job)
        except ApiError as exc:
            return _error_response(exc, shape)
        except SettingError as exc:
            return _error_response(ApiError(400, str(exc), code="invalid_value"), shape)
        except Busy as exc:
            return _error_response(ApiError(503, str(exc), code="server_busy", kind="overloaded_error"), shape)
        first = await _next(request, job)
        if first is END:
            return Response(status_code=499)  # the client left while queued
        if isinstance(first, BaseException):
            await job.queue.get()  # the end marker
            return _error_response(_api_error(first), shape)
        if ask.stream:
            return StreamingResponse(
                _stream(job, ask, first, writer),
                media_type=writer.media_type,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        got = await _collect(request, job, ask, first)
        if got.error is not None or got.reply.result is None:
            return _error_response(_api_error(got.error or RuntimeError("generation ended without a result")), shape)
        return JSONResponse(writer.response(got))

    def door(start: Start, shape: Shape) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await generate(request, start, shape)

        return endpoint

    async def ollama_generation(request: Request) -> Response:
        """Ollama's chat and generate: an empty prompt only loads the model, as Ollama's does."""
        try:
            body = await _read_json(request)
        except ApiError as exc:
            return _error_response(exc, ollama.error_shape)
        route = ollama.ROUTES[request.url.path]
        if ollama.only_loads(body, route):
            return JSONResponse(ollama.loaded(body, route))
        return await generate(request, route.start, ollama.error_shape, body)

    async def ollama_show(request: Request) -> Response:
        try:
            name = ollama.shown_model(await _read_json(request))
            if name not in names:
                raise ApiError(404, f"model '{name}' not found: use {served!r}", param="model")
        except ApiError as exc:
            return _error_response(exc, ollama.error_shape)
        return JSONResponse(ollama.show(described))

    async def count_tokens(request: Request) -> Response:
        try:
            messages, think, tools = anthropic_messages.counted(await _read_json(request))
            prompt = await asyncio.to_thread(engine.prompt_tokens, messages, think=think, tools=tools)
        except ApiError as exc:
            return _error_response(exc, anthropic_messages.error_shape)
        return JSONResponse({"input_tokens": len(prompt)})

    middleware = [Middleware(GateMiddleware, api_key=settings.api_key)]
    middleware.insert(0, Middleware(HostGuardMiddleware, policy=settings.policy, refuse=refusal))
    if settings.cors_origins:
        middleware.insert(
            1,
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "x-api-key", "anthropic-version"],
            ),
        )
    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", door(openai_chat.start, _openai_shape), methods=["POST"]),
            Route("/v1/responses", door(openai_responses.start, _openai_shape), methods=["POST"]),
            Route("/v1/messages", door(anthropic_messages.start, anthropic_messages.error_shape), methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/api/version", lambda _: JSONResponse({"version": ollama.VERSION})),
            Route("/api/tags", lambda _: JSONResponse({"models": [ollama.listed(described)]})),
            Route("/api/ps", lambda _: JSONResponse({"models": [ollama.running(described)]})),
            Route("/api/show", ollama_show, methods=["POST"]),
            Route("/api/chat", ollama_generation, methods=["POST"]),
            Route("/api/generate", ollama_generation, methods=["POST"]),
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


async def _stream(job: Job, ask: Ask, first: Any, writer: Writer) -> AsyncIterator[str]:
    got = Collected(ask.stops)
    try:
        for frame in writer.opening():
            yield frame
        item = first
        while item is not END:
            piece = got.take(item)
            frames = (writer.thinking(piece) if ask.show_thinking else writer.keepalive()) if piece.thinking else []
            if piece.answer:
                frames += writer.answer(piece)
            for frame in frames:
                yield frame
            if got.stop.stopped:
                job.cancel()
            item = await job.queue.get()
        if got.error is not None or got.reply.result is None:
            frames = writer.failed(_api_error(got.error or RuntimeError("generation ended without a result")))
        else:
            frames = writer.closing(got)
        for frame in frames:
            yield frame
    finally:
        job.cancel()  # the client went away (or we are done): free the slot at once


async def _collect(http: Request, job: Job, ask: Ask, first: Any) -> Collected:
    got = Collected(ask.stops)
    item = first
    while item is not END:
        got.take(item)
        if got.stop.stopped:
            job.cancel()
        item = await _next(http, job)
    return got


def serve(load: Callable[[], Engine], label: str, settings: ServerSettings, lifecycle: Lifecycle) -> None:
    """Run the server (``sidecar.run``): "loading" while ``load`` runs, then the doors, until a
    signal, the parent's death or stdin's end."""
    sidecar.run(
        load,
        label,
        settings.host,
        settings.port,
        lifecycle,
        make_app=lambda engine: create_app(engine, settings),
        name=model_id,
        loading=sidecar.loading_app(label, lambda app: guarded(app, settings), refusal),
    )
