"""``lynx-edge bench overhead``: what LYNX costs next to plain llama.cpp, in one run.

* P1 — decode speed of the loop with a probe armed at every cue but never exiting, over the
  same loop with LYNX off (goal ≥ 0.99);
* P2 — this loop with LYNX off over llama-cpp-python's ``create_completion`` with the same
  sampler settings, prompt, thread count and context size (goal ≥ 1.0);
* P3 — extra time per cue for feature capture (embeddings on, layer callback armed) plus the
  probe call (goal ≤ 1 ms).

Runs are interleaved and each figure is the median over ``repeats``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.engine import Engine
from lynx_edge.events import result_of
from lynx_edge.model_files import resolve_model
from lynx_edge.probe_card import ProbeCard, model_fingerprint
from lynx_edge.probe_export import write_mlp_onnx

PROMPT = "Tom has 3 boxes with 14 pencils each. He gives away 9 pencils. How many are left?"
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 100, "seed": 1234}


def _never_exit_probe(engine: Engine, directory: Path) -> Path:
    """A probe with the preset's feature layers whose score (≈0) never clears a threshold."""
    card = ProbeCard(
        model=model_fingerprint(engine.backend.info),
        layers=list(engine.preset.feature_layers),
        final_norm=True,
        cues=list(engine.cues),
        exit_text=engine.exit_text,
        calibration={"per_cue": [{"delta": 0.1, "q_pos": 0.5, "q_neg": 0.5}]},
    )
    card.save(directory / "card.json")
    hidden = np.random.default_rng(0).normal(0, 1e-3, (card.feature_dim, 64))
    write_mlp_onnx(directory / "probe.onnx", [(hidden, np.zeros(64)), (np.zeros((64, 1)), np.array([-20.0]))])
    return directory


def _loop_rate(engine: Engine, n_tokens: int, lynx: bool) -> tuple[float, int]:
    """(generated tokens per second of decoding, probe calls) for one run."""
    r = result_of(engine.generate(PROMPT, max_tokens=n_tokens, lynx=lynx, **SAMPLING))
    return r.tokens_per_second, r.probe_calls


def _wall_rate(run: Any) -> float:
    start = time.perf_counter()
    generated = run()
    return generated / (time.perf_counter() - start)


def measure_overhead(
    model: str | None, *, n_tokens: int = 256, repeats: int = 15, n_threads: int | None = None
) -> dict[str, Any]:
    """Measure P1–P3 on ``model`` (default: the embedded model) and return a report dict."""
    from llama_cpp import Llama

    path = resolve_model(model).path
    plain = Engine(path, probe=None, n_threads=n_threads, n_ctx=2048)
    with tempfile.TemporaryDirectory() as tmp:
        armed = Engine(path, probe=_never_exit_probe(plain, Path(tmp)), n_threads=n_threads, n_ctx=2048)
    threads = plain.backend.n_threads
    prompt = plain.backend.prompt_tokens(plain.render_prompt(PROMPT))
    llm = Llama(str(path), n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)

    def ours() -> int:
        r = result_of(plain.generate(PROMPT, max_tokens=n_tokens, lynx=False, **SAMPLING))
        return r.tokens["thinking"] + r.tokens["answer"]

    def theirs() -> int:
        out = llm.create_completion(
            prompt, max_tokens=n_tokens, temperature=0.6, top_p=0.95, top_k=100, min_p=0.0,
            repeat_penalty=1.0, seed=SAMPLING["seed"],
        )
        return out["usage"]["completion_tokens"]

    p1_plain, p1_armed, p2_ours, p2_theirs, cues = [], [], [], [], []
    ours(), theirs(), _loop_rate(armed, 16, True)  # warm-up: first graph builds, first ORT run
    for _ in range(repeats):
        p1_plain.append(_loop_rate(plain, n_tokens, False)[0])
        rate, calls = _loop_rate(armed, n_tokens, True)
        p1_armed.append(rate)
        cues.append(calls)
        p2_ours.append(_wall_rate(ours))
        p2_theirs.append(_wall_rate(theirs))
    per_cue = _cue_cost(armed, prompt, repeats=max(20, repeats * 4))
    med = statistics.median
    return {
        "model": plain.model_name,
        "threads": threads,
        "tokens_per_run": n_tokens,
        "repeats": repeats,
        "P1": {"armed_tok_s": med(p1_armed), "plain_tok_s": med(p1_plain), "ratio": med(p1_armed) / med(p1_plain), "probe_calls_per_run": med(cues), "goal": ">= 0.99"},
        "P2": {"lynx_tok_s": med(p2_ours), "llama_cpp_tok_s": med(p2_theirs), "ratio": med(p2_ours) / med(p2_theirs), "goal": ">= 1.0"},
        "P3": {**per_cue, "goal": "<= 1 ms"},
    }


def _cue_cost(engine: Engine, prompt: list[int], repeats: int) -> dict[str, float]:
    """Median extra ms of a capture decode over a plain decode at the same position, and of
    one probe call."""
    b = engine.backend
    b.truncate(0)
    b.decode(prompt[:-1])
    token = prompt[-1]
    plain, captured, probe = [], [], []
    feats = None
    for _ in range(repeats):
        start = time.perf_counter()
        b.decode([token])
        plain.append(time.perf_counter() - start)
        b.truncate(len(prompt) - 1)
        start = time.perf_counter()
        feats = b.decode([token], capture=True)
        captured.append(time.perf_counter() - start)
        b.truncate(len(prompt) - 1)
        start = time.perf_counter()
        engine.probe.score(feats)
        probe.append(time.perf_counter() - start)
    med = statistics.median
    capture_ms = (med(captured) - med(plain)) * 1e3
    probe_ms = med(probe) * 1e3
    return {"capture_ms": capture_ms, "probe_ms": probe_ms, "per_cue_ms": capture_ms + probe_ms, "feature_dim": int(feats.shape[0])}


def format_table(report: dict[str, Any]) -> str:
    p1, p2, p3 = report["P1"], report["P2"], report["P3"]
    rows = [
        f"model {report['model']} · {report['threads']} threads · {report['tokens_per_run']} tokens × {report['repeats']} (medians)",
        "| metric | value | goal |",
        "|---|---|---|",
        f"| P1 armed probe / plain loop | {p1['ratio']:.3f} ({p1['armed_tok_s']:.1f} vs {p1['plain_tok_s']:.1f} tok/s, {p1['probe_calls_per_run']} cues/run) | ≥ 0.99 |",
        f"| P2 lynx loop / llama-cpp-python | {p2['ratio']:.3f} ({p2['lynx_tok_s']:.1f} vs {p2['llama_cpp_tok_s']:.1f} tok/s) | ≥ 1.0 |",
        f"| P3 capture + probe per cue | {p3['per_cue_ms']:.3f} ms (capture {p3['capture_ms']:.3f}, probe {p3['probe_ms']:.3f}; {p3['feature_dim']} dims) | ≤ 1 ms |",
    ]
    return "\n".join(rows)
