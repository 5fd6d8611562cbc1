"""The server as desktop apps embed it: only local apps get in (Host and Origin checks against
DNS rebinding and foreign pages), and a sidecar an app starts on a free port, finds by its ready
line, talks to, and that goes away with the app."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from live import KEY, MODEL, QUESTION, free_port
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from lynx_edge.serve import sidecar
from lynx_edge.serve.app import refusal
from lynx_edge.serve.guard import HostPolicy, host_name

ROUTES = [
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/api/version"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/show"),
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
]
FOREIGN_HOSTS = [
    "evil.example.com",
    "evil.example.com:8080",
    "localhost.evil.com",
    "localhost.evil.com:11434",
    "127.0.0.1.nip.io",
    "10.0.0.5",
    "10.0.0.5:8080",
    "192.168.1.20",
    "172.16.0.1:80",
    "8.8.8.8",
    "[2001:db8::1]",
    "[2001:db8::1]:8080",
    "0.0.0.0",
    "0.0.0.0:8080",
    "",
    "localhost@evil.com",
    "evil.localhost.com",
    "local",
    "example.com.",
    "[::ffff:10.0.0.1]:80",
]
LOCAL_HOSTS = ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:9", "127.8.9.1", "[::1]:8080", "app.localhost"]
LYNX = [sys.executable, "-m", "lynx_edge"]


def test_host_names_are_read_as_the_server_sees_them() -> None:
    assert host_name("[::1]:8080") == "::1" and host_name("LocalHost:80") == "localhost"
    policy = HostPolicy("127.0.0.1", allowed_hosts=("my-box.lan",), cors_origins=("https://app.example",))
    assert all(policy.host_ok(h) for h in [*LOCAL_HOSTS, "my-box.lan:8080"])
    assert not any(policy.host_ok(h) for h in FOREIGN_HOSTS)
    assert (
        policy.origin_ok(None) and policy.origin_ok("http://localhost:5173") and policy.origin_ok("https://app.example")
    )
    assert not policy.origin_ok("https://evil.example.com") and not policy.origin_ok("null")
    assert HostPolicy("127.0.0.1", allowed_hosts=("*",)).host_ok("evil.example.com")
    assert HostPolicy("192.168.1.20").host_ok("192.168.1.20:8080")  # bound elsewhere: its own address


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_refuses_foreign_hosts_in_its_doors_shape(server: dict, method: str, path: str) -> None:
    """20 foreign Host values on every route: 403 (never 500), in the door's own error shape."""
    for host in FOREIGN_HOSTS:
        reply = httpx.request(
            method,
            f"{server['base']}{path}",
            headers={"Host": host, "Authorization": f"Bearer {KEY}"},
            json={} if method == "POST" else None,
        )
        assert reply.status_code == 403, (host, reply.text)
        body = reply.json()
        if path.startswith("/api/"):
            assert "is not served here" in body["error"]
        elif path.startswith("/v1/messages"):
            assert body["type"] == "error" and body["error"]["type"] == "permission_error"
        else:
            assert "is not served here" in body["error"]["message"]


def test_local_hosts_are_served_and_foreign_pages_are_not(server: dict) -> None:
    for host in LOCAL_HOSTS:
        reply = httpx.get(f"{server['base']}/v1/models", headers={"Host": host, "Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 200 and reply.json()["data"][0]["id"] == MODEL
    simple = httpx.post(  # a "simple" cross-origin request, sent without a preflight
        f"{server['base']}/api/generate",
        content=json.dumps({"model": MODEL, "prompt": "hi"}),
        headers={"Origin": "https://evil.example.com", "Authorization": f"Bearer {KEY}"},
    )
    assert simple.status_code == 403 and "may not call this server" in simple.json()["error"]


def start_sidecar(*args: str) -> tuple[subprocess.Popen, dict, float]:
    """`lynx-edge serve --port 0 …` as an app starts it; waits for its ready line."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [*LYNX, "serve", "--port", "0", "--threads", "2", "--n-ctx", "1024", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()  # blocks until the model is loaded and the port listens
    assert line, "the server ended before its ready line"
    return proc, json.loads(line), time.monotonic() - started


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (as servers bind: past TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_sidecar_starts_on_a_free_port_says_ready_and_dies_with_its_parent(tmp_path: Path) -> None:
    """Plays the app: a parent process starts the server with --parent-pid, reads the ready
    line, asks through the openai client; the parent dies → the server is gone within 2 s."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    proc, ready, _ = start_sidecar("--parent-pid", str(parent.pid))
    try:
        assert ready["event"] == "ready" and ready["model"] == MODEL
        assert ready["url"] == f"http://127.0.0.1:{ready['port']}"
        health = httpx.get(f"{ready['url']}/health").json()
        assert health["status"] == "ready" and health["model"] == MODEL
        client = openai.OpenAI(base_url=f"{ready['url']}/v1", api_key="none")
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=300
        )
        assert "16" in reply.choices[0].message.content
        parent.kill()
        parent.wait()
        died = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - died < 2.0
        assert port_free(ready["port"])
        assert proc.stdout.read() == ""  # nothing on stdout but the ready line
    finally:
        parent.kill()
        proc.kill()


def test_sigterm_ends_open_streams_properly_and_exits(tmp_path: Path) -> None:
    """A stream in flight when the server is told to stop ends with its final event (finish
    reason and the lynx object), and the process is gone within 5 s."""
    proc, ready, _ = start_sidecar()
    try:
        client = openai.OpenAI(base_url=f"{ready['url']}/v1", api_key="none")
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
            max_tokens=4000,
            stream=True,
            extra_body={"lynx": {"enabled": False}},
        )
        chunks = iter(stream)
        next(chunks)  # it is running
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        last = list(chunks)[-1]
        assert last.choices[0].finish_reason is not None and "lynx" in last.model_extra
        proc.wait(timeout=30)
        assert time.monotonic() - stopped < 5.0 and proc.returncode is not None
    finally:
        proc.kill()


def test_exit_with_stdin_stops_when_the_pipe_closes() -> None:
    proc = subprocess.Popen(
        [*LYNX, "serve", "--port", "0", "--threads", "2", "--n-ctx", "512", "--exit-with-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready"
        proc.stdin.close()
        proc.wait(timeout=30)
        assert port_free(ready["port"])
    finally:
        proc.kill()


def test_loading_is_503_until_ready() -> None:
    """While the model loads, /health is 503 "loading" and the doors 503 in their own shapes
    (apps poll either); once loaded, the ready line and 200 "ready"."""
    gate, lines, port = threading.Event(), [], free_port()

    class Loaded:
        def close(self) -> None:
            pass

    def load() -> Loaded:
        gate.wait(120)
        return Loaded()

    ready_app = Starlette(routes=[Route("/health", lambda _: JSONResponse({"status": "ready"}))])
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    runner = threading.Thread(
        target=sidecar.run,
        args=(load, "stub-model", "127.0.0.1", port, sidecar.Lifecycle(parent_pid=parent.pid)),
        kwargs={
            "make_app": lambda _: ready_app,
            "name": lambda _: "stub-model",
            "loading": sidecar.loading_app("stub-model", lambda app: app, refusal),
            "ready": lines.append,
        },
        daemon=True,
    )
    runner.start()
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_for_answer(f"{base}/health")
        assert health.status_code == 503 and health.json() == {"status": "loading", "model": "stub-model"}
        chat = httpx.post(f"{base}/v1/chat/completions", json={})
        assert chat.status_code == 503 and "still loading" in chat.json()["error"]["message"]
        claude = httpx.post(f"{base}/v1/messages", json={})
        assert claude.status_code == 529 and claude.json()["error"]["type"] == "overloaded_error"  # Anthropic's busy
        assert lines == []
        gate.set()
        deadline = time.monotonic() + 120
        while not lines:
            assert time.monotonic() < deadline, "no ready line"
            time.sleep(0.01)
        assert lines == [{"event": "ready", "url": base, "port": port, "model": "stub-model"}]
        assert httpx.get(f"{base}/health").json() == {"status": "ready"}
    finally:
        gate.set()
        parent.kill()
        parent.wait()
        runner.join(timeout=30)
    assert not runner.is_alive()


def wait_for_answer(url: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx.get(url)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.01)
