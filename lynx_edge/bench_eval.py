"""``lynx-edge bench``: every exit method on the same trace of each problem.

Phase 1 generates each problem's full trace once (seeded) with the runtime's own loop, LYNX
off and a feature sink, and scores every cue's features with the probe — the scores the
runtime would have computed. Phase 2 puts the trace back in the KV cache and generates only
the forced answers the methods need (``TraceReplayer``), each once even when several methods
cut at the same place. Both phases append one line per problem, so a stopped run resumes;
phase 2 is redone for problems whose budgets moved because more problems were added.

Layout of ``--out``::

    manifest.json     model, probe, data, seed and method settings (a resume must match)
    traces.jsonl      phase 1: trace tokens, full answer, cue scores, timings
    problems.jsonl    phase 2: per problem and method: cut, answer, right/wrong, tokens, seconds
    summary.json  table.md  pareto.png
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
import numpy as np

from lynx_edge.bench_methods import (
    FULL,
    CueRecord,
    budget_cut,
    budget_key,
    budget_tokens,
    deer_exit,
    deer_key,
    lynx_exit,
    lynx_key,
    median_thinking,
    summarize,
)
from lynx_edge.engine import BOXED_ANSWER_TOKENS, CueFeatures, Engine
from lynx_edge.errors import SettingError
from lynx_edge.events import result_of
from lynx_edge.forced_exit import ForcedAnswer, TraceReplayer
from lynx_edge.grading import grade
from lynx_edge.policy import card_rules
from lynx_edge.probe_card import model_fingerprint
from lynx_edge.run_dir import RunDir
from lynx_edge.tasks import Problem, trace_seed

TRACES, PROBLEMS = "traces.jsonl", "problems.jsonl"
DEER_TRIAL_TEXT = "\n**Final Answer**\n\\boxed"


@dataclass(frozen=True)
class BenchSettings:
    """What a bench run compares; stored in the manifest so a resume compares the same."""

    seed: int = 0
    max_tokens: int | None = None  # None: the preset's
    temperature: float | None = None
    top_p: float | None = None
    answer_tokens: int = BOXED_ANSWER_TOKENS  # cap on a forced answer after an exit, as the runtime's
    deer_lambdas: tuple[float, ...] = (0.95,)
    deer_cues: tuple[str, ...] = ()  # empty: every cue of the model's cue list
    deer_tokens: int = 20  # cap on a DEER trial answer
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)

    def __post_init__(self) -> None:
        """Refuse settings no run can use, before any model is loaded."""
        if not all(0 < lam < 1 for lam in self.deer_lambdas):
            raise SettingError(f"DEER λ must lie in (0, 1), got {list(self.deer_lambdas)}: pass e.g. --deer-lambda 0.95")
        if not all(0 < f < 1 for f in self.budgets):
            raise SettingError(f"budgets are fractions in (0, 1), got {list(self.budgets)}: pass e.g. --budget 0.5")
        if min(self.answer_tokens, self.deer_tokens) < 1:
            raise SettingError("answer and DEER trial caps must be at least 1 token")


class BenchDir(RunDir):
    what = "bench output"
    made = "benchmarked"
    make_hint = "run `lynx-edge bench --data FILE --out DIR` first"


class Bench:
    """Traces and simulated methods for one engine (model + probe) and settings."""

    def __init__(self, engine: Engine, settings: BenchSettings) -> None:
        self.engine = engine
        self.s = settings
        self.rules = card_rules(engine.card.calibration) if engine.card else []
        self.max_tokens = settings.max_tokens or engine.preset.max_tokens
        self.deer_exit_text = f"\n{engine.think_close}\n\n{DEER_TRIAL_TEXT.lstrip()}"

    @property
    def keys(self) -> list[str]:
        """Method settings in table order."""
        return (
            [FULL]
            + [lynx_key(r) for r in self.rules]
            + [deer_key(lam) for lam in self.s.deer_lambdas]
            + [budget_key(f) for f in self.s.budgets]
        )

    def manifest(self, data: Sequence[str]) -> dict[str, Any]:
        e = self.engine
        return {
            "model": model_fingerprint(e.backend.info),
            "probe": e.probe_name,
            "calibration": e.card.calibration if e.card else None,
            "exit_text": e.exit_text,
            "cues": list(e.cues),
            "data": list(data),
            "settings": {**asdict(self.s), "max_tokens": self.max_tokens},
        }

    # ---- phase 1 -------------------------------------------------------------------
    def trace(self, problem: Problem) -> dict[str, Any]:
        """The problem's full trace, its grade, and the probe's score at each cue."""
        e = self.engine
        sink: list[CueFeatures] = []
        result = result_of(
            e.generate(
                problem.prompt,
                max_tokens=self.max_tokens,
                temperature=self.s.temperature,
                top_p=self.s.top_p,
                seed=trace_seed(self.s.seed, problem.id),
                lynx=False,
                feature_sink=sink.append,
            )
        )
        start = time.perf_counter()
        scores = e.probe.score_batch(np.stack([c.features for c in sink])).tolist() if e.probe and sink else [None] * len(sink)
        probe_seconds = time.perf_counter() - start
        generated = result.tokens["thinking"] + result.tokens["answer"]
        per_token = 1.0 / result.tokens_per_second if result.tokens_per_second else 0.0
        g = grade(result.answer, problem.gold, problem.kind)
        return {
            "id": problem.id,
            "source": problem.source,
            "gold": problem.gold,
            "trace": e.backend.tokens[result.tokens["prompt"] :],
            "answer": g.extracted,
            "correct": g.correct,
            "thinking_tokens": result.tokens["thinking"],
            "tokens": generated,
            "finish_reason": result.finish_reason,
            "cues": [{"cue": c.cue, "cut": c.cut, "score": s} for c, s in zip(sink, scores)],
            "seconds": result.seconds,
            "prefill_seconds": max(0.0, result.seconds - generated * per_token),
            "seconds_per_token": per_token,
            "probe_seconds_per_cue": probe_seconds / len(sink) if sink else 0.0,
        }

    # ---- phase 2 -------------------------------------------------------------------
    def simulate(self, problem: Problem, trace: dict[str, Any], median: float) -> dict[str, Any]:
        """Every method's outcome on one recorded trace."""
        e = self.engine
        prompt = e.backend.prompt_tokens(e.render_prompt(problem.prompt))
        answers = _Answers(TraceReplayer(e.backend, prompt, trace["trace"], e.think_close))
        cues = [CueRecord(**c) for c in trace["cues"]]
        ends = {FULL: None}
        lynx_at = {lynx_key(rule): lynx_exit(rule, cues) for rule in self.rules}  # index of the exit cue
        for key, i in lynx_at.items():
            ends[key] = None if i is None else cues[i].cut
        for f in self.s.budgets:
            ends[budget_key(f)] = budget_cut(trace["thinking_tokens"], budget_tokens(median, f))
        deer_at = [c for c in cues if not self.s.deer_cues or c.cue in self.s.deer_cues]
        answers.prepare(
            [(cut, e.exit_text, self.s.answer_tokens) for cut in ends.values() if cut is not None]
            + [(c.cut, DEER_TRIAL_TEXT, self.s.deer_tokens) for c in deer_at]
        )
        methods = {key: self._outcome(problem, trace, answers, cut, e.exit_text) for key, cut in ends.items()}
        trials = [answers.get(c.cut, DEER_TRIAL_TEXT, self.s.deer_tokens) for c in deer_at]
        for lam in self.s.deer_lambdas:
            j = deer_exit([t[0].mean_prob for t in trials], lam)
            paid = trials if j is None else trials[: j + 1]
            cut = None if j is None else deer_at[j].cut
            outcome = self._outcome(problem, trace, answers, cut, self.deer_exit_text)
            outcome["seconds"] = round(outcome["seconds"] + sum(s for _, s in paid), 4)
            outcome["extra_tokens"] = sum(t.tokens for t, _ in paid)
            methods[deer_key(lam)] = outcome
        for key, i in lynx_at.items():
            scored = len(cues) if i is None else i + 1
            methods[key]["seconds"] = round(methods[key]["seconds"] + scored * trace["probe_seconds_per_cue"], 4)
        return {"id": problem.id, "source": problem.source, "gold": problem.gold, "budget_base": median,
                "methods": methods}

    def _outcome(
        self, problem: Problem, trace: dict[str, Any], answers: _Answers, cut: int | None, exit_text: str
    ) -> dict[str, Any]:
        if cut is None:
            return {"exited": False, "cut": None, "answer": trace["answer"], "correct": trace["correct"],
                    "tokens": trace["tokens"], "seconds": round(trace["seconds"], 4), "extra_tokens": 0}
        forced, seconds = answers.get(cut, exit_text, self.s.answer_tokens)
        g = grade(forced.text, problem.gold, problem.kind)
        kept = trace["prefill_seconds"] + cut * trace["seconds_per_token"]
        return {"exited": True, "cut": cut, "answer": g.extracted, "correct": g.correct,
                "tokens": cut + forced.tokens, "seconds": round(kept + seconds, 4), "extra_tokens": 0}


class _Answers:
    """Forced answers of one trace, each generated once and timed alone (the cache is
    moved to the cut before the clock starts)."""

    def __init__(self, replayer: TraceReplayer) -> None:
        self.replayer = replayer
        self.done: dict[tuple[int, str, int], tuple[ForcedAnswer, float]] = {}

    def prepare(self, wanted: Sequence[tuple[int, str, int]]) -> None:
        """Generate ``wanted`` from the last cut back, so the cache only ever shrinks."""
        for key in sorted(set(wanted), key=lambda k: -k[0]):
            self.get(*key)

    def get(self, cut: int, text: str, max_tokens: int) -> tuple[ForcedAnswer, float]:
        key = (cut, text, max_tokens)
        if key not in self.done:
            self.replayer.keep(cut)
            start = time.perf_counter()
            forced = self.replayer.answer_at(cut, text, max_tokens=max_tokens)
            self.done[key] = (forced, time.perf_counter() - start)
        return self.done[key]


def run_bench(
    engine: Engine,
    problems: Sequence[Problem],
    settings: BenchSettings,
    store: BenchDir,
    data: Sequence[str],
    *,
    progress: Callable[[Sequence[Problem], str], Iterator[Problem]] | None = None,
) -> dict[str, Any]:
    """Trace, simulate (both resumable) and summarize ``problems``; returns the summary."""
    bench = Bench(engine, settings)
    store.start(bench.manifest(data), may_change=("data",))
    walk = progress or (lambda items, label: iter(items))
    start = time.perf_counter()
    traces = {t["id"]: t for t in store.read(TRACES)}
    for problem in walk([p for p in problems if p.id not in traces], "traces"):
        traces[problem.id] = bench.trace(problem)
        store.append(TRACES, [traces[problem.id]])
    mine = [traces[p.id] for p in problems]
    median = median_thinking([t["thinking_tokens"] for t in mine])
    kept = [r for r in store.read(PROBLEMS) if r["budget_base"] == median]
    store.rewrite(PROBLEMS, kept)
    outcomes = {r["id"]: r for r in kept}
    for problem in walk([p for p in problems if p.id not in outcomes], "methods"):
        outcomes[problem.id] = bench.simulate(problem, traces[problem.id], median)
        store.append(PROBLEMS, [outcomes[problem.id]])
    records = [outcomes[p.id] for p in problems]
    return {
        "model": engine.model_name,
        "probe": engine.probe_name,
        "data": list(data),
        "problems": len(records),
        "seed": settings.seed,
        "median_thinking_tokens": median,
        "budget_tokens": {budget_key(f): budget_tokens(median, f) for f in settings.budgets},
        "deer": {"trial_text": DEER_TRIAL_TEXT, "lambdas": list(settings.deer_lambdas),
                 "cues": list(settings.deer_cues) or list(engine.cues), "trial_tokens": settings.deer_tokens},
        "rows": summarize(records, bench.keys),
        "seconds_this_run": round(time.perf_counter() - start, 1),
    }


def click_progress(items: Sequence[Problem], label: str) -> Iterator[Problem]:
    """A progress bar with ETA on stderr (hidden when stderr is not a terminal)."""
    with click.progressbar(items, label=f"{label:8}", show_eta=True, show_pos=True, file=sys.stderr) as bar:
        yield from bar
