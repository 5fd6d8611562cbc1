"""``lynx-edge bench``: every exit method on the same trace of each problem.

Phase 1 generates each problem's full trace once (seeded) with the runtime's own loop, exits
off and a feature sink, and scores every cue's features with the probe — the scores the
runtime would have computed. Phase 2 puts the trace back in the KV cache and generates, at
each cut the methods need, what the runtime writes there (the runtime's replay door, one
problem at a time so that each answer is timed alone): the exit in the run's exit style
(``conclude``, the runtime's default: the close tag, then the model's own greedy answer; or
``boxed``) for LYNX, the oracle and the budgets, and
the boxed trial answer for the training-free methods' trials. Budgets cut twice: softly, as the
runtime's thinking budget does (the first line or sentence end within a small grace after the
budget, else the last word gap there, back to the last sentence end only with no room ahead),
and raw, at exactly the budget's token (llama.cpp's ``--reasoning-budget``). Both phases
append one line per problem, so a stopped run resumes. Phase 1 depends only on the model,
probe files and trace settings; phase 2 is redone for problems whose budgets moved (more
problems were added) or whose method settings or calibration changed — so trial knobs,
budgets or a recalibrated card are compared on the traces already made.

Seconds per problem are measured for full thinking and estimated for every exit: the trace's
measured prefill and per-token rate up to the cut, plus the measured answer after the cut,
every measured trial a training-free method paid for, and the probe calls. Token columns
count the output (thinking kept, exit text, answer); ``decoded`` adds the trial tokens.

Layout of ``--out``::

    manifest.json     model, probe, data, seed and method settings (a resume must match)
    traces.jsonl      phase 1: trace tokens, full answer, cue scores, timings
    problems.jsonl    phase 2: per problem and method: cut, answer, right/wrong, tokens, seconds
    summary.json  table.md  pareto.png
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
import numpy as np

from lynx_edge.errors import SettingError
from lynx_edge.events import result_of
from lynx_edge.lab.grading import grade, same_answer
from lynx_edge.lab.methods import (
    FULL,
    LOOP_GUARD,
    ORACLE,
    CueRecord,
    budget_cut,
    budget_key,
    budget_tokens,
    consistency_key,
    deer_key,
    first_cut,
    lynx_key,
    median_thinking,
    oracle_exit,
    summarize,
    within_budget_key,
)
from lynx_edge.lab.problems import Problem, data_label, trace_seed
from lynx_edge.lab.run_dir import RunDir
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.forced_answers import BOXED_ANSWER_TOKENS, ForcedAnswer
from lynx_edge.runtime.generation import CueFeatures
from lynx_edge.runtime.limits import CutWindow, find_loop
from lynx_edge.runtime.options import ExitStyle, GenerationOptions, Promise
from lynx_edge.runtime.policies import TrialExit, first_trial_exit
from lynx_edge.runtime.probe_card import model_fingerprint
from lynx_edge.runtime.replay import AnswerAt, Replay, TimedAnswer
from lynx_edge.runtime.rules import first_exit

TRACES, PROBLEMS = "traces.jsonl", "problems.jsonl"
FORMAT = 3  # traces carry their prompt's token ids, each promise kind's score and the answer's kind


@dataclass(frozen=True)
class BenchSettings:
    """What a bench run compares; stored in the manifest so a resume compares the same."""

    seed: int = 0
    max_tokens: int | None = None  # None: the preset's
    temperature: float | None = None
    top_p: float | None = None
    answer_tokens: int = BOXED_ANSWER_TOKENS  # cap on a forced answer after an exit, as the runtime's
    exit_style: ExitStyle = "conclude"  # what an exit writes, as the runtime's default
    deer_lambdas: tuple[float, ...] = (0.95,)
    deer_cues: tuple[str, ...] = ()  # cues where trial methods try an answer; empty: every cue
    consistency_ks: tuple[int, ...] = (2,)
    trial_min_tokens: int = 0  # no trial before this many thinking tokens
    trial_gap: int = 0  # thinking tokens between two trials
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    promise: Promise | None = None  # the kind of the default rule the budget rows pair with (None: the card's)

    TRACE_FIELDS = ("seed", "max_tokens", "temperature", "top_p")

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(settings the traces depend on, settings only the simulated methods depend on)."""
        both = asdict(self)
        return {k: both[k] for k in self.TRACE_FIELDS}, {k: v for k, v in both.items() if k not in self.TRACE_FIELDS}

    def __post_init__(self) -> None:
        """Refuse settings no run can use, before any model is loaded."""
        if not all(0 < lam < 1 for lam in self.deer_lambdas):
            raise SettingError(
                f"DEER λ must lie in (0, 1), got {list(self.deer_lambdas)}: pass e.g. --deer-lambda 0.95"
            )
        if not all(k >= 2 for k in self.consistency_ks):
            raise SettingError(
                f"consistency k must be at least 2, got {list(self.consistency_ks)}: pass e.g. --consistency-k 2"
            )
        if not all(0 < f < 1 for f in self.budgets):
            raise SettingError(f"budgets are fractions in (0, 1), got {list(self.budgets)}: pass e.g. --budget 0.5")
        if self.answer_tokens < 1:
            raise SettingError("the answer cap must be at least 1 token")
        GenerationOptions(exit_style=self.exit_style)  # the request schema's own check


class BenchDir(RunDir):
    what = "bench output"
    made = "benchmarked"
    make_hint = "run `lynx-edge bench --data FILE --out DIR` first"


class Bench:
    """Traces and simulated methods for one engine (model + probe) and settings."""

    def __init__(self, engine: Engine, settings: BenchSettings) -> None:
        self.engine = engine
        self.s = settings
        self.rules = engine.rules() if engine.probe else []
        self.default_rule = engine.rule_for(promise=settings.promise) if engine.probe else None  # the default level
        self.replay = Replay(engine)
        self.max_tokens = settings.max_tokens or engine.preset.max_tokens
        trace_settings, method_settings = settings.split()
        self.trace_settings = {**trace_settings, "max_tokens": self.max_tokens}
        # what a phase-2 record was simulated with; records with another stamp are redone
        self.stamp = json.loads(
            json.dumps({**method_settings, "calibration": engine.card.calibration if engine.card else None})
        )

    @property
    def keys(self) -> list[str]:
        """Method settings in table order."""
        return (
            [FULL]
            + [lynx_key(r) for r in self.rules]
            + [deer_key(lam) for lam in self.s.deer_lambdas]
            + [consistency_key(k) for k in self.s.consistency_ks]
            + [budget_key(f) for f in self.s.budgets]
            + [budget_key(f, raw=True) for f in self.s.budgets]
            + ([within_budget_key(self.default_rule, f) for f in self.s.budgets] if self.default_rule else [])
            + [LOOP_GUARD, ORACLE]
        )

    def manifest(self, data: Sequence[str]) -> dict[str, Any]:
        e = self.engine
        onnx = e.card.onnx_path if e.card else None
        return {
            "format": FORMAT,
            "model": model_fingerprint(e.backend.info),
            "probe": e.probe_name,
            "probe_sha256": hashlib.sha256(onnx.read_bytes()).hexdigest() if onnx else None,
            "exit_text": e.exit_text,
            "cues": list(e.cues),
            "data": [data_label(d) for d in data],
            "settings": self.trace_settings,
            "prompt": "question + the card's user suffix" if self.user_suffix is not None else "question + instruction",
        }

    @property
    def user_suffix(self) -> str | None:
        """What follows a question in the card's calibration conditions (None: no card with
        conditions, so problems are prompted as benchmarks are, with their instruction)."""
        conditions = self.engine.card.conditions if self.engine.card else None
        return None if conditions is None else str(conditions.get("user_suffix", ""))

    def prompt(self, problem: Problem) -> str:
        """A problem as the bench asks it: as a user would, in the card's conditions (the risk
        levels are measured where they are promised), else with the benchmark's instruction."""
        suffix = self.user_suffix
        return problem.prompt if suffix is None else f"{problem.question}{suffix}"

    # ---- phase 1 -------------------------------------------------------------------
    def trace(self, problem: Problem) -> dict[str, Any]:
        """The problem's full trace, its grade, and the probe's score at each cue."""
        e = self.engine
        sink: list[CueFeatures] = []
        options = GenerationOptions(
            exit="none",
            answer_reserve=0,
            loop_guard=False,
            max_tokens=self.max_tokens,
            temperature=self.s.temperature,
            top_p=self.s.top_p,
            seed=trace_seed(self.s.seed, problem.id),
        )
        result = result_of(e.generate(self.prompt(problem), options, feature_sink=sink.append))
        start = time.perf_counter()
        features = np.stack([c.features for c in sink]) if sink else None
        scores = {p: probe.score_batch(features).tolist() for p, probe in e.probes.items()} if sink else {}
        default = scores.get(e.card.promises[0]) if e.card and scores else None
        probe_seconds = (time.perf_counter() - start) / max(len(scores), 1)  # the runtime scores one kind
        generated = result.tokens.completion
        per_token = 1.0 / result.tokens_per_second if result.tokens_per_second else 0.0
        g = grade(result.answer, problem.gold, problem.kind)
        return {
            "id": problem.id,
            "source": problem.source,
            "kind": problem.kind,
            "gold": problem.gold,
            "prompt": list(result.prompt_ids),
            "trace": list(result.token_ids),
            "answer": g.extracted,
            "correct": g.correct,
            "thinking_tokens": result.tokens.thinking,
            "tokens": generated,
            "finish_reason": result.finish_reason,
            "cues": [
                {
                    "cue": c.cue,
                    "cut": c.cut,
                    "score": default[i] if default else None,
                    "scores": {p: v[i] for p, v in scores.items()},
                }
                for i, c in enumerate(sink)
            ],
            "seconds": result.seconds,
            "prefill_seconds": max(0.0, result.seconds - generated * per_token),
            "seconds_per_token": per_token,
            "probe_seconds_per_cue": probe_seconds / len(sink) if sink else 0.0,
        }

    # ---- phase 2 -------------------------------------------------------------------
    def simulate(self, problem: Problem, trace: dict[str, Any], median: float) -> dict[str, Any]:
        """Every method's outcome on one recorded trace."""
        e = self.engine
        pieces = e.token_texts(trace["trace"])
        answers = _Answers(self._exit_text(pieces), e.exit_text, self._answer_cap)
        cues = [CueRecord(**c) for c in trace["cues"]]
        thinking = trace["thinking_tokens"]
        budgets: dict[str, int | None] = {}
        for f in self.s.budgets:
            tokens = budget_tokens(median, f)
            budgets[budget_key(f)] = _inside(CutWindow.budget(tokens).cut(pieces[:thinking]), thinking)
            budgets[budget_key(f, raw=True)] = budget_cut(thinking, tokens)
        loop = find_loop(trace["trace"][:thinking])
        budgets[LOOP_GUARD] = _inside(loop.window().cut(pieces[:thinking]), thinking) if loop else None
        tried = self._tried(cues)
        answers.prepare(
            self.replay,
            trace,
            [c.cut for c in cues] + [cut for cut in budgets.values() if cut is not None],
            [cues[j].cut for j in tried],
        )
        graded = [self._graded(problem, answers.get(c.cut)[0]) for c in cues]
        methods = {FULL: self._outcome(trace, answers, None, None)}
        for rule in self.rules:
            i = first_exit(rule, [c.score_for(rule.promise) for c in cues])
            outcome = self._outcome(
                trace, answers, cues[i].cut if i is not None else None, graded[i] if i is not None else None
            )
            scored = len(cues) if i is None else i + 1
            outcome["seconds"] = round(outcome["seconds"] + scored * trace["probe_seconds_per_cue"], 4)
            methods[lynx_key(rule)] = outcome
            if rule == self.default_rule:
                lynx_cut = cues[i].cut if i is not None else None
                for f in self.s.budgets:
                    budgets[within_budget_key(rule, f)] = first_cut(lynx_cut, budgets[budget_key(f)])
        trials = [answers.trial(cues[j].cut) for j in tried]
        judged = [(t.text, t.mean_prob) for t, _ in trials]
        for key, policy in self._trial_policies():
            methods[key] = self._trial_outcome(
                trace, answers, cues, graded, tried, trials, first_trial_exit(policy, judged)
            )
        for key, cut in budgets.items():
            methods[key] = self._outcome(
                trace, answers, cut, self._graded(problem, answers.get(cut)[0]) if cut is not None else None
            )
        j = oracle_exit([g[1] for g in graded])
        methods[ORACLE] = self._outcome(
            trace, answers, cues[j].cut if j is not None else None, graded[j] if j is not None else None
        )
        looped = loop is not None and trace["finish_reason"] == "length"
        for outcome in methods.values():
            outcome["looped"] = looped and not outcome["exited"]
        return {
            "id": problem.id,
            "source": problem.source,
            "gold": problem.gold,
            "budget_base": median,
            "stamp": self.stamp,
            "methods": methods,
        }

    def _answer_cap(self, cut: int, text: str) -> tuple[int, bool]:
        """(token cap, stop once boxed) for the answer after ``text`` at ``cut``: a boxed exit
        or trial stops at its closing brace within ``answer_tokens``, as the runtime's; a
        conclude exit writes on until the model ends or the trace's token cap is reached."""
        if text == self.engine.exit_text:
            return self.s.answer_tokens, True
        return max(1, self.max_tokens - cut - len(self.engine.backend.tokenize(text))), False

    def _exit_text(self, pieces: Sequence[str]) -> Callable[[int], str]:
        """What the runtime writes when it exits at a cut of this trace, in the run's style."""
        return lambda cut: self.engine.exit_text_for(self.s.exit_style, "".join(pieces[:cut]))

    def _trial_policies(self) -> list[tuple[str, TrialExit]]:
        """The training-free settings compared, as the runtime's policies (table keys first)."""
        knobs = {"min_thinking": self.s.trial_min_tokens, "min_gap": self.s.trial_gap}
        return [(deer_key(lam), TrialExit("deer", lam, **knobs)) for lam in self.s.deer_lambdas] + [
            (consistency_key(k), TrialExit("consistency", k, **knobs)) for k in self.s.consistency_ks
        ]

    def _tried(self, cues: list[CueRecord]) -> list[int]:
        """The cues where a training-free method writes a trial: the chosen cue words, and
        where the runtime's trial policy wants one (``trial_min_tokens``, ``trial_gap``)."""
        gate = TrialExit("deer", 0.5, min_thinking=self.s.trial_min_tokens, min_gap=self.s.trial_gap)
        tried: list[int] = []
        for j, c in enumerate(cues):
            if self.s.deer_cues and c.cue not in self.s.deer_cues:
                continue
            if gate.wants_trial(c.cut, cues[tried[-1]].cut if tried else None):
                tried.append(j)
        return tried

    @staticmethod
    def _graded(problem: Problem, forced: ForcedAnswer) -> tuple[str | None, bool]:
        g = grade(forced.text, problem.gold, problem.kind)
        return g.extracted, g.correct

    def _trial_outcome(
        self,
        trace: dict[str, Any],
        answers: _Answers,
        cues: list[CueRecord],
        graded: list,
        tried: list[int],
        trials: list[tuple[ForcedAnswer, float]],
        at: int | None,
    ) -> dict[str, Any]:
        """A training-free method that exits at trial ``at``: it paid for every trial up to
        there, then exits there as the runtime does (in boxed style, the same tokens as that
        trial)."""
        paid = trials if at is None else trials[: at + 1]
        j = None if at is None else tried[at]
        outcome = self._outcome(
            trace, answers, cues[j].cut if j is not None else None, graded[j] if j is not None else None
        )
        outcome["seconds"] = round(outcome["seconds"] + sum(s for _, s in paid), 4)
        outcome["extra_tokens"] = sum(t.tokens for t, _ in paid)
        return outcome

    def _outcome(
        self, trace: dict[str, Any], answers: _Answers, cut: int | None, graded: tuple[str | None, bool] | None
    ) -> dict[str, Any]:
        """What a method that cuts at ``cut`` (None: never) gives: its answer and grade, whether
        it is the full-thinking answer, its tokens and (estimated) seconds."""
        if cut is None:
            return {
                "exited": False,
                "cut": None,
                "answer": trace["answer"],
                "correct": trace["correct"],
                "tokens": trace["tokens"],
                "thinking": trace["thinking_tokens"],
                "seconds": round(trace["seconds"], 4),
                "extra_tokens": 0,
                "same_as_full": True,
            }
        forced, seconds = answers.get(cut)
        kept = trace["prefill_seconds"] + cut * trace["seconds_per_token"]
        return {
            "exited": True,
            "cut": cut,
            "answer": graded[0],
            "correct": graded[1],
            "tokens": cut + forced.tokens,
            "thinking": cut,
            "seconds": round(kept + seconds, 4),
            "extra_tokens": 0,
            "same_as_full": same_answer(graded[0], trace["answer"], trace.get("kind", "number")),
        }


class _Answers:
    """What the runtime writes after each cut of one trace — the exit (``exit_text(cut)``,
    then a greedy answer) and the trial answer (the boxed exit text) — each generated once,
    on a branch of the trace, with the problem alone in the batch (so each is timed alone)."""

    def __init__(
        self,
        exit_text: Callable[[int], str],
        trial_text: str,
        cap: Callable[[int, str], tuple[int, bool]],
    ) -> None:
        self.exit_text = exit_text
        self.trial_text = trial_text
        self.cap = cap
        self.done: dict[tuple[int, str], tuple[ForcedAnswer, float]] = {}

    def prepare(self, replay: Replay, trace: dict[str, Any], exits: Sequence[int], trials: Sequence[int]) -> None:
        """Generate the exit at every cut in ``exits`` and the trial at every cut in ``trials``."""
        wanted = sorted({(cut, self.exit_text(cut)) for cut in exits} | {(cut, self.trial_text) for cut in trials})
        asks = [AnswerAt(cut, text, *self.cap(cut, text)) for cut, text in wanted]

        def job(lane):  # noqa: ANN001, ANN202 - a replay Lane; a step
            yield from lane.hold(trace["prompt"] + trace["trace"])
            return (yield from lane.answers(len(trace["prompt"]), asks))

        timed: list[TimedAnswer] = replay.one(job)
        self.done = {key: (t.answer, t.seconds) for key, t in zip(wanted, timed)}

    def get(self, cut: int) -> tuple[ForcedAnswer, float]:
        """The exit at ``cut`` and its seconds."""
        return self.done[cut, self.exit_text(cut)]

    def trial(self, cut: int) -> tuple[ForcedAnswer, float]:
        """The trial answer at ``cut`` and its seconds."""
        return self.done[cut, self.trial_text]


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
    kept = [r for r in store.read(PROBLEMS) if r["budget_base"] == median and r.get("stamp") == bench.stamp]
    store.rewrite(PROBLEMS, kept)
    outcomes = {r["id"]: r for r in kept}
    for problem in walk([p for p in problems if p.id not in outcomes], "methods"):
        outcomes[problem.id] = bench.simulate(problem, traces[problem.id], median)
        store.append(PROBLEMS, [outcomes[problem.id]])
    records = [outcomes[p.id] for p in problems]
    return {
        "model": engine.model_name,
        "probe": engine.probe_name,
        "data": [data_label(d) for d in data],
        "problems": len(records),
        "seed": settings.seed,
        "median_thinking_tokens": median,
        "budget_tokens": {budget_key(f): budget_tokens(median, f) for f in settings.budgets},
        "exit_style": settings.exit_style,
        "trials": {
            "text": engine.exit_text,
            "lambdas": list(settings.deer_lambdas),
            "ks": list(settings.consistency_ks),
            "cues": list(settings.deer_cues) or list(engine.cues),
            "answer_tokens": settings.answer_tokens,
        },
        "rows": summarize(records, bench.keys),
        "seconds_this_run": round(time.perf_counter() - start, 1),
    }


def click_progress(items: Sequence[Problem], label: str) -> Iterator[Problem]:
    """A progress bar with ETA on stderr (hidden when stderr is not a terminal)."""
    with click.progressbar(items, label=f"{label:8}", show_eta=True, show_pos=True, file=sys.stderr) as bar:
        yield from bar


def _inside(cut: int, thinking: int) -> int | None:
    """A cut that falls inside the thinking (None: the thinking ended first, nothing is cut)."""
    return cut if cut < thinking else None
