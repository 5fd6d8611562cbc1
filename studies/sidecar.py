"""The sidecar as an app meets it: how long from starting the process to its ready line, and how
much memory the idle server holds (resident set, after the ready line, nothing asked yet).

    python studies/sidecar.py --runs 5 --threads 2     # → studies/results/sidecar.json

Each run starts ``lynx-edge serve --port 0 --parent-pid <this process>`` on the embedded
default, reads the ready line, samples VmRSS from /proc, asks one question (so the figures are
of a server that works), and stops it with SIGTERM, timing the exit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_run(threads: int) -> dict[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lynx_edge", "serve", "--port", "0", "--threads", str(threads)]
        + ["--parent-pid", str(os.getpid())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ready = json.loads(proc.stdout.readline())
    ready_seconds = time.monotonic() - started
    time.sleep(1.0)  # idle
    idle = rss_mib(proc.pid)
    reply = httpx.post(
        f"{ready['url']}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "What is 17 * 3?"}], "max_tokens": 200, "temperature": 0},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text
    stopping = time.monotonic()
    proc.terminate()
    proc.wait(timeout=30)
    return {"ready_seconds": ready_seconds, "idle_rss_mib": idle, "exit_seconds": time.monotonic() - stopping}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "studies/results/sidecar.json")
    args = parser.parse_args()
    runs = [one_run(args.threads) for _ in range(args.runs)]
    summary = {
        key: {"median": round(statistics.median(r[key] for r in runs), 3), "max": round(max(r[key] for r in runs), 3)}
        for key in runs[0]
    }
    result = {"runs": args.runs, "threads": args.threads, "summary": summary, "each": runs}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
