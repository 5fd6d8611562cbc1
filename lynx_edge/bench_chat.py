"""``lynx-edge bench chat``: does the chat UI slow generation down?

The same engine answers the same prompt (same seed, LYNX off so every run generates the same
tokens; a prompt that keeps the model writing, so the rate is measured in steady state) once through the plain event loop that ``lynx-edge run`` uses and once inside the
Textual app (headless, the UI thread draining and rendering events while the model runs),
interleaved over several repeats. The ratio of median tokens/s is the chat's cost.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lynx_edge.chat_app import ChatApp
from lynx_edge.chat_store import ChatStore
from lynx_edge.engine import Engine
from lynx_edge.events import result_of

SEED = 1234


def _plain_rate(engine: Engine, prompt: str, max_tokens: int) -> float:
    result = result_of(engine.generate(prompt, lynx=False, max_tokens=max_tokens, seed=SEED))
    return result.tokens_per_second


async def _app_rate(engine: Engine, prompt: str, max_tokens: int, history: Path) -> float:
    app = ChatApp(lambda: engine, store=ChatStore(history), measure_savings=False, max_tokens=max_tokens, seed=SEED)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.engine is None:
            await pilot.pause(0.02)
        app.lynx = False
        app.query_one("#prompt").value = prompt
        await pilot.press("enter")
        while app.running is None:
            await pilot.pause(0.01)
        await asyncio.to_thread(app.running.finished.wait)  # the app alone runs while it generates
        while app.turn.view.result is None:
            await pilot.pause(0.01)
        return app.turn.view.result.tokens_per_second


def measure_chat_speed(model: str | None, prompt: str, *, max_tokens: int, repeats: int, n_threads: int | None) -> dict[str, Any]:
    engine = Engine(model, n_threads=n_threads)
    plain, in_app = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _plain_rate(engine, prompt, max_tokens)  # warm-up: caches the prompt's prefix for both
            for i in range(repeats):
                plain.append(_plain_rate(engine, prompt, max_tokens))
                in_app.append(asyncio.run(_app_rate(engine, prompt, max_tokens, Path(tmp) / f"h{i}.sqlite3")))
        finally:
            engine.close()
    return {
        "model": engine.model_name,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "repeats": repeats,
        "run_tokens_per_s": plain,
        "chat_tokens_per_s": in_app,
        "median_run": statistics.median(plain),
        "median_chat": statistics.median(in_app),
        "chat_vs_run": round(statistics.median(in_app) / statistics.median(plain), 3),
        "seconds": round(time.perf_counter() - start, 1),
    }
