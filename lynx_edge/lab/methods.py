"""Exit methods compared by ``lynx-edge bench``, decided on a recorded trace; pure Python.

Decoding is causal, so every method can be simulated on the same full trace of a problem:
where it would cut the thinking depends only on the trace up to there. This module says
*where* each method cuts and sums up the outcomes; ``evaluate`` generates the traces and the
forced answers.

* ``full``        — the trace as it is;
* ``lynx``        — the first cue whose probe score passes a calibrated rule (per δ and per α;
                    ``runtime.rules.first_exit``, the runtime's own rule);
* ``deer``        — the first cue whose trial answer's confidence exceeds λ (training-free);
* ``consistency`` — the first cue whose trial answer equals the previous k−1 trials' (training-free;
                    both judged by the runtime's ``TrialExit``);
* ``budget``      — a soft cut at a fixed fraction of the median full thinking length, by the
                    runtime's own rule (``limits.CutWindow``: the next line or sentence end
                    within a small grace, else the last one; ``budget … raw``: at exactly that
                    token, as llama.cpp's ``--reasoning-budget`` cuts);
* ``lynx … ≤ budget`` — the default LYNX rule inside a soft budget: whichever cuts first;
* ``loop guard``  — the runtime's loop guard (``limits.LoopGuard``): a cut just after a loop
                    is caught, at the next sentence end within one cycle;
* ``oracle``      — the first cue whose forced answer is right (what a perfect probe would do).

A trial answer at a cue is the forced answer there (the model's exit text, then a greedy
answer), exactly what the runtime writes on its branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lynx_edge.lab.risk import rate_with_interval
from lynx_edge.runtime.rules import ExitRule

FULL = "full"
ORACLE = "oracle"


@dataclass(frozen=True)
class CueRecord:
    """A cue of a recorded trace: its label, where an exit there cuts, and the probe scores
    (``score``: the card's default kind; ``scores``: per promise kind)."""

    cue: str
    cut: int
    score: float | None
    scores: dict[str, float] | None = None

    def score_for(self, promise: str) -> float | None:
        """The score ``promise``'s probe gave this cue."""
        return self.scores.get(promise) if self.scores else self.score


def lynx_key(rule: ExitRule) -> str:
    return f"lynx {rule.promise} {'δ' if rule.mode == 'per-cue' else 'α'}={rule.level:g}"


def deer_key(lam: float) -> str:
    return f"deer λ={lam:g}"


def consistency_key(k: int) -> str:
    return f"consistency k={k}"


LOOP_GUARD = "loop guard"


def within_budget_key(rule: ExitRule, fraction: float) -> str:
    return f"{lynx_key(rule)} ≤ {budget_key(fraction)}"


def first_cut(*cuts: int | None) -> int | None:
    """The earliest of the cuts some methods make (None: none of them cuts)."""
    made = [c for c in cuts if c is not None]
    return min(made) if made else None


def budget_key(fraction: float, *, raw: bool = False) -> str:
    return f"budget {fraction:.0%}{' raw' if raw else ''}"


def oracle_exit(right: Sequence[bool]) -> int | None:
    """Index of the first cue whose forced answer is right."""
    return next((i for i, ok in enumerate(right) if ok), None)


def budget_cut(thinking_tokens: int, budget: int) -> int | None:
    """The cut a hard token budget makes, or None when the thinking fits within it."""
    return budget if thinking_tokens > budget else None


def budget_tokens(median_thinking: float, fraction: float) -> int:
    return max(1, int(round(median_thinking * fraction)))


def median_thinking(thinking_tokens: Sequence[int]) -> float:
    return float(np.median(thinking_tokens)) if len(thinking_tokens) else 0.0


def summarize(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method setting over the per-problem records.

    Each record holds ``methods[key]`` with ``exited``, ``correct``, ``tokens``, ``thinking``,
    ``seconds`` and ``extra_tokens`` (decoded but not part of the output: trial answers).
    Help: full wrong → method right; harm: full right → method wrong. The rates each promise
    bounds, with 95 % intervals: ``changed`` — answers that differ from full thinking's (what
    an agreement α bounds); ``spoilt`` — harm over all problems; ``spoilt_among_right`` — harm
    over the problems full thinking gets right (what a harm α bounds). ``loops``: replies that
    loop to the token limit (``looped``: the full trace does and the method did not cut). ``thinking_saved``: the
    share of full thinking tokens the method did not think. ``decoded_tokens`` adds the trial
    tokens to the output's. ``seconds_measured`` is false for a row whose exits' seconds were
    estimated (see ``evaluate``).
    """
    n = len(records)
    if not n:
        return []
    full_tokens = sum(r["methods"][FULL]["tokens"] for r in records)
    full_thinking = sum(r["methods"][FULL]["thinking"] for r in records)
    full_seconds = sum(r["methods"][FULL]["seconds"] for r in records)
    rows = []
    for key in keys:
        outcomes = [r["methods"][key] for r in records]
        full_ok = [r["methods"][FULL]["correct"] for r in records]
        tokens = np.array([o["tokens"] for o in outcomes], dtype=np.float64)
        decoded = tokens + np.array([o.get("extra_tokens", 0) for o in outcomes], dtype=np.float64)
        seconds = sum(o["seconds"] for o in outcomes)
        help_ = sum(1 for o, f in zip(outcomes, full_ok) if o["correct"] and not f)
        harm = sum(1 for o, f in zip(outcomes, full_ok) if f and not o["correct"])
        changed = sum(1 for o in outcomes if not o.get("same_as_full", True))
        rows.append(
            {
                "method": key,
                "problems": n,
                "accuracy": round(sum(o["correct"] for o in outcomes) / n, 4),
                "mean_tokens": round(float(tokens.mean()), 1),
                "median_tokens": float(np.median(tokens)),
                "saved": round(1 - float(tokens.sum()) / full_tokens, 4) if full_tokens else 0.0,
                "decoded_tokens": round(float(decoded.mean()), 1),
                "decoded_saved": round(1 - float(decoded.sum()) / full_tokens, 4) if full_tokens else 0.0,
                "thinking_saved": round(1 - sum(o["thinking"] for o in outcomes) / full_thinking, 4)
                if full_thinking
                else 0.0,
                "exit_rate": round(sum(o["exited"] for o in outcomes) / n, 4),
                "help": help_,
                "harm": harm,
                "premature_rate": round(harm / n, 4),
                "changed": rate_with_interval(changed, n),
                "spoilt": rate_with_interval(harm, n),
                "spoilt_among_right": rate_with_interval(harm, sum(full_ok)),
                "seconds": round(seconds / n, 3),
                "seconds_measured": not any(o["exited"] for o in outcomes),
                "time_saved": round(1 - seconds / full_seconds, 4) if full_seconds else 0.0,
                "extra_tokens": round(sum(o.get("extra_tokens", 0) for o in outcomes) / n, 1),
                "loops": sum(1 for o in outcomes if o.get("looped")),
            }
        )
    return rows


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Method settings no other setting beats on both accuracy and mean tokens (the oracle,
    which needs the answers' grades, is not a contender)."""
    real = [r for r in rows if r["method"] != ORACLE]
    front = []
    for r in real:
        dominated = any(
            o["accuracy"] >= r["accuracy"]
            and o["mean_tokens"] <= r["mean_tokens"]
            and (o["accuracy"] > r["accuracy"] or o["mean_tokens"] < r["mean_tokens"])
            for o in real
        )
        if not dominated:
            front.append(r["method"])
    return front
