"""Load and fuzz a real `lynx-edge serve` on 127.0.0.1 (issue-sized, bounded in time).

    python studies/serve_load.py --out studies/results/serve-load.json

Starts the server in a child process for each ``--parallel`` setting, then:

* load — ``--clients`` concurrent clients × ``--requests`` each (max_tokens 32, greedy, the
  embedded default): failures other than 503 + Retry-After, aggregate tokens/s, latency
  p50/p95; the ratio of aggregate tokens/s at each --parallel over --parallel 1;
* fuzz — ``--fuzz`` randomised requests (random JSON, wrong types, truncated bodies, odd
  headers and content types, seeded): responses with status 500 (must be 0), tracebacks in
  the server log (must be 0), the server healthy afterwards.

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

from lynx_edge.serve.api import UNSUPPORTED, ChatRequest

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
            return httpx.get(f"{self.base}/health", timeout=5).json()["status"] == "ok"
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


def fuzz_bodies(rng: random.Random, n: int) -> list[tuple[bytes, dict]]:
    """Seeded random requests: valid-ish bodies with wrong types, junk, truncation, odd headers."""
    values = [
        None,
        True,
        False,
        0,
        -1,
        2,
        1.5,
        1e308,
        -1e308,
        "",
        "x",
        "🙂" * 50,
        [],
        [1, 2],
        {},
        {"a": {"b": []}},
        [{"role": "user"}],
        [{"role": "user", "content": 7}],
        [{"role": "user", "content": [{"type": "image"}]}],
        "a" * 5000,
        [[[[[]]]]],
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": 5}},
    ]
    fields = [*ChatRequest.model_fields, *UNSUPPORTED, "user"]  # every field it reads, rejects or ignores
    types = [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    out = []
    for _ in range(n):
        body: dict = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for field in rng.sample(fields, rng.randint(0, 5)):
            body[field] = rng.choice(values)
        raw = json.dumps(body).encode()
        kind = rng.random()
        if kind < 0.15:
            raw = raw[: rng.randint(0, len(raw))]  # truncated
        elif kind < 0.25:
            raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))  # junk
        elif kind < 0.3:
            raw = json.dumps(rng.choice(values)).encode()  # not an object
        headers = {"Content-Type": rng.choice(types)}
        if rng.random() < 0.1:
            headers["Content-Length"] = rng.choice(["-1", "abc", "99999999999"])
        if rng.random() < 0.1:
            headers["Authorization"] = rng.choice(["Bearer", "bearer x", "Basic abc", "☃"])
        out.append((raw, headers))
    return out


def raw_post(port: int, raw: bytes, headers: dict[str, str], timeout: float = 30) -> int | None:
    """POST ``raw`` over a plain socket, headers exactly as given (an HTTP client would refuse a
    lying Content-Length), and return the response status, or None when none came."""
    head = {"Host": f"{HOST}:{port}", "Connection": "close", "Content-Length": str(len(raw)), **headers}
    request = "POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request.encode("utf-8") + b"\r\n" + raw)
        sock.shutdown(socket.SHUT_WR)  # a body shorter than its Content-Length ends here
        reply = b""
        while b"\r\n" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def fuzz(server: Server, n: int, seed: int) -> dict:
    statuses: dict[int, int] = {}
    no_reply = 0
    start = time.perf_counter()
    for raw, headers in fuzz_bodies(random.Random(seed), n):
        try:
            status = raw_post(server.port, raw, headers)
        except OSError:
            status = None
        if status is None:
            no_reply += 1
        else:
            statuses[status] = statuses.get(status, 0) + 1
    return {
        "requests": n,
        "statuses": dict(sorted(statuses.items())),
        "status_500": statuses.get(500, 0),
        "closed_without_status": no_reply,
        "tracebacks_in_log": server.tracebacks(),
        "healthy_after": server.healthy(),
        "seconds": round(time.perf_counter() - start, 1),
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
