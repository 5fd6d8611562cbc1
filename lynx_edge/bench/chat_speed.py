"""``lynx-edge bench chat``: does the chat UI slow generation down?

One engine answers one prompt (same seed, LYNX off, so every answer is the same tokens; a
prompt that keeps the model writing, so the rate is a steady state) through two paths: the
loop of ``lynx-edge run``, printing to the terminal as ``run`` does, and the Textual app
drawing every update. Where the OS has pseudo-terminals the measurement runs in a child
process on one, so the app goes through its real terminal driver (escape codes written and
read back, as a terminal emulator would); elsewhere the app runs headless.

Each round runs both paths back to back in a random order: a laptop's speed drifts by several
per cent within seconds, so only two runs that close in time compare fairly, and the order
must not favour either. The report gives the median over rounds of chat/run tokens/s with a
bootstrap 90 % interval.

Then the model switch: one chat app starts on the model, loads ``switch_to`` (the first load),
and switches back and forth between the two, both now loaded; each switch is timed from the
picker's choice to the app ready for the next prompt.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.chat.app import ChatApp
from lynx_edge.chat.store import ChatStore
from lynx_edge.errors import LynxError
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.presets import DEFAULT_PRESET
from lynx_edge.terminal import RunPrinter

SEED = 1234
TERMINAL = (120, 40)  # columns, rows of the pseudo-terminal and of the headless app


def _run_rate(engine: Engine, prompt: str, max_tokens: int) -> tuple[float, int]:
    """One answer through ``lynx-edge run``'s loop and printer; (tokens/s, tokens)."""
    printer = RunPrinter(as_json=False)
    for event in engine.generate(prompt, GenerationOptions(exit="none", max_tokens=max_tokens, seed=SEED)):
        printer.handle(event)
    printer.finish()
    result = printer.reply.result
    assert result is not None
    return result.tokens_per_second, result.tokens.total


async def _app_rate(
    engine: Engine, prompt: str, max_tokens: int, history: Path, headless: bool, model_thread: ThreadPoolExecutor
) -> tuple[float, int]:
    """The same answer typed into a fresh chat app; (tokens/s, tokens).

    The apps share one model thread, as one app's replies do in a session."""
    app = ChatApp(
        lambda _: engine,
        GenerationOptions(max_tokens=max_tokens, seed=SEED),
        store=ChatStore(history),
        measure_savings=False,
        model_thread=model_thread,
    )
    async with app.run_test(headless=headless, size=TERMINAL) as pilot:
        while app.engine is None:
            await pilot.pause(0.02)
        app.settings.lynx = False
        app.query_one("#prompt").value = prompt
        await pilot.press("enter")
        while app.chat.feed.running is None:
            await pilot.pause(0.01)
        turn = app.chat.feed.running
        await asyncio.to_thread(turn.finished.wait)  # the app alone runs while it generates
        while not turn.shown:  # leaving before the app has applied the end would race its teardown
            await pilot.pause(0.01)
        result = turn.view.result
        assert result is not None
        return result.tokens_per_second, result.tokens.total


async def _switch_seconds(
    model: str, other: str, n_threads: int | None, history: Path, headless: bool, switches: int = 4
) -> list[float]:
    """Seconds for each model switch in one chat app: ``other``'s first load, then
    ``switches`` more between the two, both loaded."""

    def load(spec: str) -> Engine:
        return Engine(spec, n_threads=n_threads)

    app = ChatApp(load, GenerationOptions(max_tokens=16), model=model, store=ChatStore(history), measure_savings=False)
    seconds = []
    async with app.run_test(headless=headless, size=TERMINAL) as pilot:
        while app.engine is None:
            await pilot.pause(0.01)
        for i in range(switches + 1):
            spec = other if i % 2 == 0 else model
            start = time.perf_counter()
            app.load_model(spec)  # what the picker does with a choice
            while app.loading is not None:
                await pilot.pause(0.005)
            if app.model_spec != spec:
                raise LynxError(f"bench chat: switching to {spec} failed")
            seconds.append(round(time.perf_counter() - start, 4))
    return seconds


def measure_rounds(
    model: str | None,
    prompt: str,
    *,
    max_tokens: int,
    rounds: int,
    n_threads: int | None,
    headless: bool,
    switch_to: str,
) -> dict[str, Any]:
    """Both paths, ``rounds`` times each, then the model switches, in this process."""
    engine = Engine(model, n_threads=n_threads)
    order = random.Random(SEED)
    rates: dict[str, list[float]] = {"run": [], "chat": []}
    start = time.perf_counter()
    model_thread = ThreadPoolExecutor(1)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _, expected = _run_rate(engine, prompt, max_tokens)  # warm-up: caches the prompt for both
            for i in range(rounds):
                for path in order.sample(["run", "chat"], 2):
                    if path == "run":
                        rate, tokens = _run_rate(engine, prompt, max_tokens)
                    else:
                        rate, tokens = asyncio.run(
                            _app_rate(engine, prompt, max_tokens, Path(tmp) / f"{i}.sqlite3", headless, model_thread)
                        )
                    if tokens != expected:
                        raise LynxError(
                            f"bench chat: the {path} path generated {tokens} tokens, not {expected}: "
                            "the two paths must answer alike"
                        )
                    rates[path].append(rate)
        finally:
            model_thread.shutdown()
            engine.close()
        switches = asyncio.run(
            _switch_seconds(model or DEFAULT_PRESET, switch_to, n_threads, Path(tmp) / "switch.sqlite3", headless)
        )
    return {
        "model": engine.model_name,
        "threads": engine.backend.n_threads,
        "rates": rates,
        "switch_seconds": switches,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _child_main() -> None:
    """Entry point of the measuring process on the pseudo-terminal: arguments as JSON in
    argv[1], the report (or the error) written to the file named in argv[2]."""
    settings, report_path = json.loads(sys.argv[1]), Path(sys.argv[2])
    try:
        report = measure_rounds(**settings, headless=False)
    except LynxError as exc:
        report = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which has the user's terminal
        report = {"error": f"bench chat failed: {exc!r}", "traceback": traceback.format_exc()}
    report_path.write_text(json.dumps(report))


def _in_pseudo_terminal(settings: dict[str, Any]) -> dict[str, Any]:
    """Run ``measure_rounds`` in a child process whose terminal is a pty; drain what it draws."""
    import fcntl
    import pty
    import struct
    import termios

    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL[1], TERMINAL[0], 0, 0))
        code = "from lynx_edge.bench.chat_speed import _child_main; _child_main()"
        child = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(settings), str(report_path)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        os.close(slave)
        try:
            while True:
                try:
                    if not os.read(master, 1 << 16):
                        break
                except OSError:  # the child closed the terminal
                    break
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
            os.close(master)
        if not report_path.exists():
            raise LynxError(f"bench chat: the measuring process ended without a report (exit {child.returncode})")
        return json.loads(report_path.read_text())


def measure_chat_speed(
    model: str | None, prompt: str, *, max_tokens: int, rounds: int, n_threads: int | None, switch_to: str
) -> dict[str, Any]:
    """The report: both paths' tokens/s per round, their medians and the chat/run ratio; the
    model switch's first load and the switches after it."""
    settings = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "n_threads": n_threads,
        "switch_to": switch_to,
    }
    if os.name == "posix":
        measured, terminal = _in_pseudo_terminal(settings), "pseudo-terminal"
    else:
        measured, terminal = measure_rounds(**settings, headless=True), "headless"
    if "error" in measured:
        raise LynxError(measured["error"])
    run, chat = measured["rates"]["run"], measured["rates"]["chat"]
    ratios = [c / r for c, r in zip(chat, run)]
    return {
        "model": measured["model"],
        "prompt": prompt,
        "max_tokens": max_tokens,
        "threads": measured["threads"],
        "terminal": terminal,
        "rounds": rounds,
        "run_tokens_per_s": run,
        "chat_tokens_per_s": chat,
        "median_run": statistics.median(run),
        "median_chat": statistics.median(chat),
        "chat_vs_run_per_round": [round(x, 3) for x in ratios],
        "chat_vs_run": round(statistics.median(ratios), 3),
        "chat_vs_run_90ci": _bootstrap_interval(ratios),
        "switch_to": switch_to,
        "switch_first_load_s": measured["switch_seconds"][0],
        "switch_loaded_s": measured["switch_seconds"][1:],
        "switch_loaded_max_s": max(measured["switch_seconds"][1:]),
        "seconds": measured["seconds"],
    }


def _bootstrap_interval(ratios: list[float], draws: int = 2000) -> list[float]:
    """5th and 95th percentile of the median ratio over rounds drawn with replacement."""
    rng = np.random.default_rng(SEED)
    medians = np.median(np.asarray(ratios)[rng.integers(0, len(ratios), size=(draws, len(ratios)))], axis=1)
    return [round(float(q), 3) for q in np.percentile(medians, [5, 95])]
