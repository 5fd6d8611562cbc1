"""``lynx-edge serve`` as a process an app can start, find and stop (a "sidecar").

* The socket is bound first (``--port 0``: a free port, picked by the system), then the model
  loads in the background: meanwhile ``/health`` answers 503 ``{"status": "loading"}`` and every
  other route 503 in its door's shape, so an app can poll either way.
* Once the model is loaded and the port listens, one JSON line goes to stdout —
  ``{"event": "ready", "url": …, "port": …, "model": …}`` — and nothing else ever does (logs go
  to stderr), so an app reads one line to learn where to talk.
* ``--parent-pid PID`` ends the server within a second of that process's death, and
  ``--exit-with-stdin`` when its stdin closes (the parent's end of a pipe goes away with it):
  a crashed app leaves no model in memory.
* SIGTERM / SIGINT (and the two above) first end every generation, so each open stream closes
  with its door's final event, then stop accepting and exit (uvicorn waits at most
  ``GRACE_SECONDS`` for connections).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lynx_edge.runtime.engine import Engine

log = logging.getLogger("lynx_edge.serve")
GRACE_SECONDS = 5  # uvicorn's wait for open connections after the generations were ended
WATCH_SECONDS = 0.2  # how often the parent process is looked at


@dataclass(frozen=True)
class Lifecycle:
    """What ties the server's life to the app that started it."""

    parent_pid: int | None = None
    exit_with_stdin: bool = False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Switch:
    """The ASGI app uvicorn serves: the loading app until the model is ready, then the real one.
    Lifespan events are answered here (the real app's resources are closed by ``run``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await self.app(scope, receive, send)


class Server(uvicorn.Server):
    """uvicorn's server, which first ends every generation when it is told to stop."""

    def __init__(self, config: uvicorn.Config, end_generations: Callable[[], None]) -> None:
        super().__init__(config)
        self.end_generations = end_generations

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.end_generations()
        super().handle_exit(sig, frame)

    def stop(self, why: str) -> None:
        log.warning("stopping: %s", why)
        self.end_generations()
        self.should_exit = True


def loading_app(label: str, guard: Callable[[Starlette], Any], refuse: Callable[[str, str, int], Any]) -> Any:
    """What answers while the model loads: /health 503 "loading", every other route 503."""

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "loading", "model": label}, status_code=503, headers={"Retry-After": "1"})

    async def other(request: Request) -> Any:
        return refuse(request.url.path, f"the model {label} is still loading: retry in a moment", 503)

    app = Starlette(routes=[Route("/health", health), Route("/{path:path}", other, methods=["GET", "POST", "OPTIONS"])])
    return guard(app)


def run(
    load: Callable[[], Engine],
    label: str,
    host: str,
    port: int,
    lifecycle: Lifecycle,
    *,
    make_app: Callable[[Engine], Any],
    name: Callable[[Engine], str],
    loading: Any,
    ready: Callable[[dict[str, Any]], None] = lambda line: print(json.dumps(line), flush=True),
) -> None:
    """Bind, answer "loading" while ``load`` runs, then serve ``make_app(engine)`` and say
    ``ready``; until a signal, the parent's death or stdin's end. Raises what ``load`` raised."""
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    switch = Switch(loading)
    engine_box: dict[str, Any] = {}
    config = uvicorn.Config(
        switch, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=GRACE_SECONDS
    )
    server = Server(config, lambda: _end_generations(switch.app))

    def load_then_serve() -> None:
        try:
            engine_box["engine"] = engine = load()
        except BaseException as exc:  # noqa: BLE001 - said on stderr by the CLI; the server stops
            engine_box["error"] = exc
            server.should_exit = True
            return
        switch.app = make_app(engine)
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if server.started:
            shown = f"[{host.strip('[]')}]" if ":" in host else host
            ready({"event": "ready", "url": f"http://{shown}:{bound}", "port": bound, "model": name(engine)})

    threading.Thread(target=load_then_serve, name="lynx-load", daemon=True).start()
    if lifecycle.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(lifecycle.parent_pid, server), daemon=True).start()
    if lifecycle.exit_with_stdin:
        threading.Thread(target=_watch_stdin, args=(server,), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        _end_generations(switch.app)
        batcher = getattr(getattr(switch.app, "state", None), "batcher", None)
        if batcher is not None:
            batcher.close()
        if "engine" in engine_box:
            engine_box["engine"].close()
        sock.close()
    if "error" in engine_box:
        raise engine_box["error"]


def _end_generations(app: Any) -> None:
    batcher = getattr(getattr(app, "state", None), "batcher", None)
    if batcher is not None:
        batcher.end_all()


def _watch_parent(pid: int, server: Server) -> None:
    while alive(pid):
        time.sleep(WATCH_SECONDS)
    server.stop(f"the parent process {pid} is gone")


def _watch_stdin(server: Server) -> None:
    stream = sys.stdin.buffer
    while stream.read(4096):
        pass
    server.stop("stdin closed")
