"""``lynx-edge bench overhead``: what lynx-edge costs next to plain llama.cpp, in one run.

* P1 — decode speed of the loop with a probe armed at every cue but never exiting, over the
  same loop with exits off (goal ≥ 0.99);
* P2 — this loop with exits off over llama-cpp-python's ``create_completion`` with the same
  sampler settings, prompt, thread count and context size (goal ≥ 1.0);
* P3 — extra time per cue for feature capture (embeddings on, layer callback armed) plus the
  probe call (goal ≤ 1 ms);
* P4 — one training-free trial at the model's typical context length: the branch (no prefix
  re-decode), the exit text and a greedy answer, in ms and in decode-token equivalents;
* P5 — for a preset made by merging a shipped adapter into its base, decode speed of the
  merged model over the base model (goal ≥ 0.9).

Runs are interleaved and each figure is the median over ``repeats``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.events import result_of
from lynx_edge.lab.export import write_mlp_onnx
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.llama_backend import SamplingSettings, plain_llama
from lynx_edge.runtime.model_files import packaged_file, resolve_model
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.probe_card import ProbeCard, model_fingerprint
from lynx_edge.runtime.replay import AnswerAt, Replay

PROMPT = "Tom has 3 boxes with 14 pencils each. He gives away 9 pencils. How many are left?"
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 100, "seed": 1234}
N_CTX = 2048


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


def _loop_rate(engine: Engine, n_tokens: int, exit_policy: str) -> tuple[float, int]:
    """(generated tokens per second of decoding, probe calls) for one run."""
    options = GenerationOptions(max_tokens=n_tokens, exit=exit_policy, answer_reserve=0, **SAMPLING)
    r = result_of(engine.generate(PROMPT, options))
    return r.tokens_per_second, r.probe_calls


def _wall_rate(run: Any) -> float:
    start = time.perf_counter()
    generated = run()
    return generated / (time.perf_counter() - start)


def measure_overhead(
    model: str | None, *, n_tokens: int = 256, repeats: int = 15, n_threads: int | None = None
) -> dict[str, Any]:
    """Measure P1–P5 on ``model`` (default: the embedded model) and return a report dict."""
    resolved = resolve_model(model)
    path = resolved.path
    plain = Engine(path, probe=None, n_threads=n_threads, n_ctx=N_CTX)
    with tempfile.TemporaryDirectory() as tmp:
        armed = Engine(path, probe=_never_exit_probe(plain, Path(tmp)), n_threads=n_threads, n_ctx=N_CTX)
    threads = plain.backend.n_threads
    prompt = plain.backend.prompt_tokens(plain.render_prompt(PROMPT))
    llm = plain_llama(path, n_ctx=N_CTX, n_batch=512, n_threads=threads, n_threads_batch=threads)
    base_path = packaged_file(resolved.preset) if resolved.preset.adapter else None
    base = Engine(base_path, probe=None, n_threads=n_threads, n_ctx=N_CTX) if base_path else None

    def ours() -> int:
        return result_of(
            plain.generate(PROMPT, GenerationOptions(max_tokens=n_tokens, exit="none", answer_reserve=0, **SAMPLING))
        ).tokens.completion

    def theirs() -> int:
        out = llm.create_completion(
            prompt,
            max_tokens=n_tokens,
            temperature=0.6,
            top_p=0.95,
            top_k=100,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=SAMPLING["seed"],
        )
        return out["usage"]["completion_tokens"]

    p1_plain, p1_armed, p2_ours, p2_theirs, cues, p5_model, p5_base = [], [], [], [], [], [], []
    ours(), theirs(), _loop_rate(armed, 16, "probe")  # warm-up: first graph builds, first ORT run
    for _ in range(repeats):
        p1_plain.append(_loop_rate(plain, n_tokens, "none")[0])
        rate, calls = _loop_rate(armed, n_tokens, "probe")
        p1_armed.append(rate)
        cues.append(calls)
        p2_ours.append(_wall_rate(ours))
        p2_theirs.append(_wall_rate(theirs))
        if base is not None:
            p5_model.append(_decode_rate(plain, prompt, n_tokens))
            p5_base.append(_decode_rate(base, prompt, n_tokens))
    per_cue = _cue_cost(armed, prompt, repeats=max(20, repeats * 4))
    per_trial = _trial_cost(plain, repeats=max(10, repeats))
    med = statistics.median
    report = {
        "model": plain.model_name,
        "threads": threads,
        "tokens_per_run": n_tokens,
        "repeats": repeats,
        "P1": {
            "armed_tok_s": med(p1_armed),
            "plain_tok_s": med(p1_plain),
            "ratio": med(p1_armed) / med(p1_plain),
            "probe_calls_per_run": med(cues),
            "goal": ">= 0.99",
        },
        "P2": {
            "lynx_tok_s": med(p2_ours),
            "llama_cpp_tok_s": med(p2_theirs),
            "ratio": med(p2_ours) / med(p2_theirs),
            "goal": ">= 1.0",
        },
        "P3": {**per_cue, "goal": "<= 1 ms"},
        "P4": per_trial,
    }
    if base is not None:
        ratios = [m / b for m, b in zip(p5_model, p5_base)]
        report["P5"] = {
            "model_tok_s": med(p5_model),
            "base_tok_s": med(p5_base),
            "ratio": med(ratios),
            "base": base.model_name,
            "goal": ">= 0.9",
        }
    return report


def _decode_rate(engine: Engine, prompt: list[int], n_tokens: int) -> float:
    """Greedy decode speed over the same prompt tokens, end of text ignored (so two models
    that share a tokenizer decode exactly as many tokens)."""
    b = engine.backend
    b.clear(0)
    b.decode(prompt)
    sampler = b.sampler(SamplingSettings(temperature=0.0))
    start = time.perf_counter()
    for _ in range(n_tokens):
        b.decode([b.sample(sampler)])
    return n_tokens / (time.perf_counter() - start)


def _cue_cost(engine: Engine, prompt: list[int], repeats: int) -> dict[str, float]:
    """Median extra ms of a capture decode over a plain decode at the same position, and of
    one probe call. Each repeat times the two decodes back to back in alternating order, and
    the figure is the median of the paired differences (never below zero: a capture cannot
    be cheaper than the same decode without it; a negative median is noise)."""
    b = engine.backend
    b.truncate(0)
    b.decode(prompt[:-1])
    token = prompt[-1]
    diffs, probe = [], []
    feats = None
    for i in range(repeats):
        timed = {}
        for capture in (False, True) if i % 2 == 0 else (True, False):
            start = time.perf_counter()
            got = b.decode([token], capture=capture)
            timed[capture] = time.perf_counter() - start
            feats = got if capture else feats
            b.truncate(len(prompt) - 1)
        diffs.append(timed[True] - timed[False])
        start = time.perf_counter()
        engine.probe.score(feats)
        probe.append(time.perf_counter() - start)
    capture_ms = max(0.0, statistics.median(diffs) * 1e3)
    probe_ms = statistics.median(probe) * 1e3
    return {
        "capture_ms": capture_ms,
        "probe_ms": probe_ms,
        "per_cue_ms": capture_ms + probe_ms,
        "feature_dim": int(feats.shape[0]),
    }


def _trial_cost(engine: Engine, repeats: int) -> dict[str, float]:
    """One trial answer branched off a typical-length trace: ms, tokens, and that cost in
    decode-token equivalents; the main sequence is untouched."""
    result = result_of(engine.generate(PROMPT, GenerationOptions(exit="none", **SAMPLING)))
    held = [*result.prompt_ids, *result.token_ids]
    trial = [AnswerAt(len(held), engine.exit_text)]
    replay = Replay(engine)
    token_ms = 1e3 / result.tokens_per_second if result.tokens_per_second else 0.0

    def job(lane):  # noqa: ANN001, ANN202 - a replay Lane; a step
        yield from lane.hold(held)  # already cached: nothing is decoded
        return (yield from lane.answers(0, trial))[0]

    times, tokens = [], 0
    for _ in range(repeats):
        timed = replay.one(job)
        times.append(timed.seconds)
        tokens = timed.answer.tokens
    assert engine.backend.tokens == held
    ms = statistics.median(times) * 1e3
    return {
        "context_tokens": len(held),
        "trial_ms": ms,
        "trial_tokens": tokens,
        "decode_token_ms": token_ms,
        "in_decode_tokens": ms / token_ms if token_ms else 0.0,
    }


def format_table(report: dict[str, Any]) -> str:
    p1, p2, p3, p4 = report["P1"], report["P2"], report["P3"], report["P4"]
    head = f"model {report['model']} · {report['threads']} threads · {report['tokens_per_run']} tokens"
    rows = [
        f"{head} × {report['repeats']} (medians)",
        "| metric | value | goal |",
        "|---|---|---|",
        f"| P1 armed probe / plain loop | {p1['ratio']:.3f} ({p1['armed_tok_s']:.1f} vs {p1['plain_tok_s']:.1f} tok/s, "
        f"{p1['probe_calls_per_run']} cues/run) | ≥ 0.99 |",
        f"| P2 lynx loop / llama-cpp-python | {p2['ratio']:.3f} ({p2['lynx_tok_s']:.1f} vs "
        f"{p2['llama_cpp_tok_s']:.1f} tok/s) | ≥ 1.0 |",
        f"| P3 capture + probe per cue | {p3['per_cue_ms']:.3f} ms (capture {p3['capture_ms']:.3f}, "
        f"probe {p3['probe_ms']:.3f}; {p3['feature_dim']} dims) | ≤ 1 ms |",
        f"| P4 one trial answer at {p4['context_tokens']} tokens of context | {p4['trial_ms']:.1f} ms "
        f"({p4['trial_tokens']} tokens; = {p4['in_decode_tokens']:.1f} decoded tokens) | — |",
    ]
    if p5 := report.get("P5"):
        rows.append(
            f"| P5 merged model / base ({p5['base']}) | {p5['ratio']:.3f} ({p5['model_tok_s']:.1f} vs "
            f"{p5['base_tok_s']:.1f} tok/s) | ≥ 0.9 |"
        )
    return "\n".join(rows)
