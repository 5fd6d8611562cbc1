"""Load and fuzz a real `lynx-edge serve` on 127.0.0.1 (issue-sized, bounded in time).

    python studies/serve_load.py --out studies/results/serve-load.json

Starts the server in a child process for each ``--parallel`` setting, then:

* load — ``--clients`` concurrent clients × ``--requests`` each (max_tokens 32, greedy, the
  embedded default): failures other than 503 + Retry-After, aggregate tokens/s, latency
  p50/p95; the ratio of aggregate tokens/s at each --parallel over --parallel 1;
* doors — ``--door-rounds`` rounds of the same greedy question through every door (chat,
  Responses, Messages, Ollama), interleaved: each door's throughput as a ratio to the chat
  endpoint's;
* fuzz — ``--fuzz`` randomised requests spread over every route (mutated JSON bodies: wrong
  types, out-of-range numbers, huge strings, deep nesting, unknown enum values, unicode; and a
  fifth junk at the HTTP layer, seeded): per route the statuses and the share that got past the
  HTTP gate to the route's schema; responses with status 500 (must be 0), tracebacks in the
  server log (must be 0), the server healthy afterwards.

Only loopback addresses are used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from lynx_edge.serve.openai_chat import UNSUPPORTED, ChatRequest

HOST = "127.0.0.1"
QUESTION = "Elena buys 8 cards for 23 dollars each and pays with 200 dollars. How much change does Elena get?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`lynx-edge serve` in a child process, its log in a temporary file."""

    def __init__(self, parallel: int, max_queue: int, threads: int | None) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        args = [
            sys.executable,
            "-m",
            "lynx_edge",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--parallel",
            str(parallel),
            "--max-queue",
            str(max_queue),
        ]
        if threads:
            args += ["--threads", str(threads)]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not start: {Path(self.log.name).read_text()[-2000:]}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/health", timeout=5).json()["status"] == "ready"
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def tracebacks(self) -> int:
        return Path(self.log.name).read_text().count("Traceback")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(server: Server, clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` threads each sending ``requests`` chat completions back to back."""

    def one(i: int) -> tuple[int, float, int, str]:
        start = time.perf_counter()
        try:
            r = httpx.post(
                f"{server.base}/v1/chat/completions",
                timeout=300,
                json={
                    "messages": [{"role": "user", "content": f"{QUESTION} ({i})"}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                },
            )
        except httpx.HTTPError as exc:
            return 0, time.perf_counter() - start, 0, type(exc).__name__
        tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
        retry = r.headers.get("retry-after", "") if r.status_code == 503 else ""
        return r.status_code, time.perf_counter() - start, tokens, retry

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients * requests)))
    wall = time.perf_counter() - start
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    latencies = sorted(r[1] for r in ok)
    return {
        "requests": len(results),
        "ok": len(ok),
        "busy_503": len(busy),
        "busy_without_retry_after": sum(1 for r in busy if not r[3]),
        "failures": len(results) - len(ok) - len(busy),
        "tokens": sum(r[2] for r in ok),
        "seconds": round(wall, 2),
        "tokens_per_s": round(sum(r[2] for r in ok) / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
    }


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


MODEL = "smollm2-135m-reasoner"
USER = [{"role": "user", "content": "hi"}]
VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2,
    1.5,
    10**30,
    -(10**30),
    1e-320,
    float("nan"),
    float("inf"),
    "",
    "x",
    "extreme",
    "🙂" * 50,
    "\u0000\ud7ff",
    "a" * 100_000,
    [],
    [1, 2],
    {},
    {"a": {"b": []}},
    [{"role": "user"}],
    [{"role": "user", "content": 7}],
    [{"role": "user", "content": [{"type": "image"}]}],
    [{"type": "input_image", "image_url": "x"}],
    {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"$ref": "#"}}}},
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "array"}}}},
    nested(200),
    nested(5000),
]


def _fields(model: type, *nested_paths: str) -> list[str]:
    return [*model.model_fields, *nested_paths]


def door_routes() -> dict[str, tuple[dict, list[str]]]:
    """Each route's smallest valid body, and the fields (dotted paths) the fuzz mutates: every
    field it reads, refuses or ignores, and the nested ones that carry the thinking."""
    from lynx_edge.serve import anthropic_messages, ollama, openai_responses

    options = ["options.temperature", "options.num_predict", "options.num_ctx", "options.mirostat", "options.stop"]
    return {
        "/v1/chat/completions": (
            {"messages": USER, "max_tokens": 2},
            _fields(ChatRequest, *UNSUPPORTED, "user", "lynx.alpha", "reasoning.effort", "response_format.type"),
        ),
        "/v1/responses": (
            {"input": "hi", "max_output_tokens": 2},
            _fields(
                openai_responses.ResponsesRequest,
                *openai_responses.UNSUPPORTED,
                *openai_responses.STATEFUL,
                "reasoning.effort",
                "text.format",
                "text.format.type",
            ),
        ),
        "/v1/messages": (
            {"model": MODEL, "max_tokens": 2, "messages": USER},
            _fields(
                anthropic_messages.MessagesRequest,
                *anthropic_messages.UNSUPPORTED,
                "thinking.type",
                "thinking.budget_tokens",
                "output_config.effort",
                "output_config.format",
            ),
        ),
        "/v1/messages/count_tokens": (
            {"model": MODEL, "messages": USER},
            _fields(anthropic_messages.CountRequest, "thinking.type"),
        ),
        "/api/chat": (
            {"model": MODEL, "messages": USER, "options": {"num_predict": 2}},
            _fields(ollama.ChatRequest, *options),
        ),
        "/api/generate": (
            {"model": MODEL, "prompt": "hi", "options": {"num_predict": 2}},
            _fields(ollama.GenerateRequest, *options),
        ),
        "/api/show": ({"model": MODEL}, ["model", "name"]),
    }


def _set(body: dict, path: str, value: object) -> None:
    head, _, rest = path.partition(".")
    if not rest:
        body[head] = value
        return
    body[head] = dict(body[head]) if isinstance(body.get(head), dict) else {}  # never into a shared value
    _set(body[head], rest, value)


def fuzz_bodies(rng: random.Random, n: int) -> list[tuple[str, bytes, dict]]:
    """Seeded random requests over every route: most are JSON bodies with mutated fields (wrong
    types, out-of-range numbers, huge strings, deep nesting, unknown enum values, unicode), the
    rest junk at the HTTP layer (truncated or random bytes, odd headers and content types)."""
    routes = door_routes()
    types = ["text/plain", "", "application/x-www-form-urlencoded", "multipart/form-data"]
    out = []
    for i in range(n):
        path = list(routes)[i % len(routes)]
        base, fields = routes[path]
        body = json.loads(json.dumps(base))
        for field in rng.sample(fields, min(len(fields), rng.randint(1, 4))):
            _set(body, field, rng.choice(VALUES))
        try:
            raw = json.dumps(body).encode()
        except RecursionError:
            raw = b"[" * 5000
        headers = {"Content-Type": rng.choice(["application/json", "application/json; charset=utf-8"])}
        kind = rng.random()
        if kind < 0.04:
            raw = raw[: rng.randint(0, len(raw))]  # truncated
        elif kind < 0.08:
            raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))  # junk
        elif kind < 0.10:
            raw = json.dumps(rng.choice(VALUES[:20])).encode()  # not an object
        elif kind < 0.14:
            headers["Content-Type"] = rng.choice(types)
        elif kind < 0.17:
            headers["Content-Length"] = rng.choice(["-1", "abc", "99999999999"])
        elif kind < 0.20:
            headers["Authorization"] = rng.choice(["Bearer", "bearer x", "Basic abc", "☃"])
        out.append((path, raw, headers))
    return out


GATE = ("not valid JSON", "Content-Type", "Content-Length", "API key", "byte limit", "JSON object")


def raw_post(
    port: int, path: str, raw: bytes, headers: dict[str, str], timeout: float = 60
) -> tuple[int | None, bytes]:
    """POST ``raw`` over a plain socket, headers exactly as given (an HTTP client would refuse a
    lying Content-Length); the response status (None when none came) and its bytes."""
    head = {"Host": f"{HOST}:{port}", "Connection": "close", "Content-Length": str(len(raw)), **headers}
    request = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request.encode("utf-8") + b"\r\n" + raw)
        sock.shutdown(socket.SHUT_WR)  # a body shorter than its Content-Length ends here
        reply = b""
        while len(reply) < 1_000_000 and (chunk := sock.recv(65536)):
            reply += chunk
    parts = reply.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), reply


def fuzz(server: Server, n: int, seed: int) -> dict:
    """Statuses per route, and how many requests got past the HTTP gate (key, Content-Type,
    size, JSON) to the route's own schema."""
    per_route: dict[str, dict] = {}
    start = time.perf_counter()
    for path, raw, headers in fuzz_bodies(random.Random(seed), n):
        try:
            status, reply = raw_post(server.port, path, raw, headers)
        except OSError:
            status, reply = None, b""
        route = per_route.setdefault(path, {"requests": 0, "statuses": {}, "reached_schema": 0, "no_status": 0})
        route["requests"] += 1
        if status is None:
            route["no_status"] += 1
            continue
        route["statuses"][status] = route["statuses"].get(status, 0) + 1
        body = reply.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
        if status != 500 and not (status in (400, 401, 413, 415) and any(g in body for g in GATE)):
            route["reached_schema"] += 1
    for route in per_route.values():
        route["statuses"] = dict(sorted(route["statuses"].items()))
        route["reached_schema_share"] = round(route["reached_schema"] / route["requests"], 3)
    return {
        "requests": n,
        "routes": per_route,
        "status_500": sum(r["statuses"].get(500, 0) for r in per_route.values()),
        "closed_without_status": sum(r["no_status"] for r in per_route.values()),
        "tracebacks_in_log": server.tracebacks(),
        "healthy_after": server.healthy(),
        "seconds": round(time.perf_counter() - start, 1),
    }


DOORS = {  # the same question, greedy, the same token cap, through each door
    "chat": ("/v1/chat/completions", lambda q, m: {"messages": [q], "max_tokens": m, "temperature": 0}),
    "responses": ("/v1/responses", lambda q, m: {"input": [q], "max_output_tokens": m, "temperature": 0}),
    "messages": ("/v1/messages", lambda q, m: {"model": MODEL, "messages": [q], "max_tokens": m, "temperature": 0}),
    "ollama": (
        "/api/chat",
        lambda q, m: {"model": MODEL, "messages": [q], "stream": True, "options": {"num_predict": m, "temperature": 0}},
    ),
}


def door_speed(server: Server, rounds: int, max_tokens: int) -> dict:
    """Throughput through each door on the same prompt, streamed: greedy with the same cap, every
    door generates the same tokens, so the ratio of wall times is the ratio of tokens/s. The
    doors are interleaved round by round so that the machine's drift hits them alike; each
    door's median seconds, and its throughput as a ratio to the chat endpoint's."""
    question = {"role": "user", "content": QUESTION}
    seconds: dict[str, list[float]] = {name: [] for name in DOORS}
    with httpx.Client(base_url=server.base, timeout=300) as client:
        for _ in range(rounds):
            for name, (path, body) in DOORS.items():
                body = body(question, max_tokens)
                if name != "ollama":
                    body["stream"] = True
                start = time.perf_counter()
                with client.stream("POST", path, json=body) as reply:
                    reply.raise_for_status()
                    for _ in reply.iter_bytes():
                        pass
                seconds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "rounds": rounds,
        "max_tokens": max_tokens,
        "median_seconds": {name: round(m, 3) for name, m in medians.items()},
        "throughput_ratio_to_chat": {name: round(medians["chat"] / m, 3) for name, m in medians.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--fuzz", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--door-rounds", type=int, default=5, help="Rounds of the per-door throughput check (0: skip).")
    ap.add_argument("--door-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, default=Path("serve-load.json"))
    args = ap.parse_args()
    report: dict = {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "max_queue": args.max_queue,
        "load": {},
    }
    for parallel in args.parallel:
        server = Server(parallel, args.max_queue, args.threads)
        try:
            report["load"][str(parallel)] = load(server, args.clients, args.requests, args.max_tokens)
            print(f"--parallel {parallel}: {json.dumps(report['load'][str(parallel)])}", flush=True)
            if parallel == args.parallel[-1] and args.door_rounds:
                report["doors"] = door_speed(server, args.door_rounds, args.door_tokens)
                print(f"doors: {json.dumps(report['doors'])}", flush=True)
            if parallel == args.parallel[-1] and args.fuzz:
                report["fuzz"] = fuzz(server, args.fuzz, args.seed)
                print(f"fuzz: {json.dumps(report['fuzz'])}", flush=True)
        finally:
            server.stop()
    base = report["load"].get("1")
    if base:
        report["speedup_over_parallel_1"] = {
            p: round(r["tokens_per_s"] / base["tokens_per_s"], 2)
            for p, r in report["load"].items()
            if base["tokens_per_s"]
        }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
