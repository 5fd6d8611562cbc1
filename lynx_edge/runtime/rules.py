"""The exit decision: which calibrated rule a risk level picks, and whether a score exits.

Pure Python/NumPy, no model. A probe card carries two kinds of calibrated entries:

* ``per_cue``  — class-conditional split conformal at risk δ: exit iff the prediction set
  is {1}, i.e. ``p >= 1 - q_pos`` and ``p > q_neg`` (``q = None`` in the card means +∞);
* ``per_answer`` — a Learn-then-Test threshold λ at risk α: exit iff ``p >= λ``.

``alpha`` picks the entry with the largest calibrated level not above it, so the promise a
user asked for is never loosened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lynx_edge.errors import SettingError
from lynx_edge.runtime.options import Mode

Calibration = dict[str, Sequence[dict[str, Any]]]  # a card's ``calibration``: per_cue and per_answer entries


def per_cue_exits(p: float | np.ndarray, q_pos: float, q_neg: float) -> bool | np.ndarray:
    """Exit iff the prediction set is {1}: p ≥ 1 − q_pos and p > q_neg."""
    return (1.0 - np.asarray(p) <= q_pos) & (np.asarray(p) > q_neg)


def per_cue_threshold(q_pos: float, q_neg: float) -> float:
    """The score a cue must clear to exit, for display (above 1 means never)."""
    return max(1.0 - q_pos, q_neg)


@dataclass(frozen=True)
class ExitRule:
    """One calibrated rule: the level it was calibrated at and how a score is judged."""

    mode: Mode
    level: float  # the calibrated δ (per cue) or α (per answer) actually in force
    q_pos: float = math.inf  # per-cue positives' quantile
    q_neg: float = math.inf  # per-cue negatives' quantile
    lam: float = math.inf  # per-answer threshold

    @property
    def threshold(self) -> float:
        """The score a cue must reach to exit (> 1 means this rule never exits)."""
        if self.mode == "per-answer":
            return self.lam
        return per_cue_threshold(self.q_pos, self.q_neg)

    def exits(self, score: float) -> bool:
        return bool(self.exits_many(score))

    def exits_many(self, scores: float | np.ndarray) -> bool | np.ndarray:
        """``exits`` for an array of scores at once (calibration checks measure thousands)."""
        if self.mode == "per-answer":
            return np.asarray(scores) >= self.lam
        return per_cue_exits(scores, self.q_pos, self.q_neg)


def first_exit(rule: ExitRule, scores: Sequence[float | None] | np.ndarray) -> int | None:
    """Index of the first cue whose score passes ``rule`` — where the runtime exits (None: it
    thinks to the end; a cue without a score never passes). The one simulation of the rule,
    for the bench and the calibration reports."""
    values = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
    hits = np.flatnonzero(np.asarray(rule.exits_many(values), dtype=bool))
    return int(hits[0]) if len(hits) else None


def _q(value: float | None) -> float:
    return math.inf if value is None else float(value)


def select_rule(calibration: Calibration, alpha: float, mode: Mode | None = None) -> ExitRule:
    """The rule ``alpha`` picks from a card's calibration; ``mode`` None prefers per-answer
    when the card holds it (it bounds what users see: wrong answers), else per-cue."""
    if mode is None:
        mode = "per-answer" if calibration.get("per_answer") else "per-cue"
    key, level_key = ("per_answer", "alpha") if mode == "per-answer" else ("per_cue", "delta")
    entries = list(calibration.get(key) or [])
    if not entries:
        raise SettingError(f"this probe has no {mode} calibration: pick --mode {_other(mode)}")
    eligible = [e for e in entries if float(e[level_key]) <= alpha + 1e-12]
    if not eligible:
        smallest = min(float(e[level_key]) for e in entries)
        raise SettingError(
            f"this probe has no {mode} entry at or below alpha={alpha} "
            f"(smallest calibrated is {smallest}): pass --alpha {smallest} or higher"
        )
    return entry_rule(mode, max(eligible, key=lambda e: float(e[level_key])))


def entry_rule(mode: Mode, entry: dict[str, Any]) -> ExitRule:
    """The rule one calibration entry of a card stands for (null quantiles are +∞)."""
    if mode == "per-answer":
        return ExitRule(mode, float(entry["alpha"]), lam=_q(entry["threshold"]))
    return ExitRule(mode, float(entry["delta"]), q_pos=_q(entry["q_pos"]), q_neg=_q(entry["q_neg"]))


def card_rules(calibration: Calibration) -> list[ExitRule]:
    """Every calibrated rule of a card, per cue then per answer (calibration and the bench
    measure each of them)."""
    return [entry_rule("per-cue", e) for e in calibration.get("per_cue") or []] + [
        entry_rule("per-answer", e) for e in calibration.get("per_answer") or []
    ]


def calibrated_levels(calibration: Calibration, mode: Mode) -> list[float]:
    """The risk levels a card offers in one mode, ascending (the chat steps through them)."""
    key, level_key = ("per_answer", "alpha") if mode == "per-answer" else ("per_cue", "delta")
    return sorted(float(e[level_key]) for e in calibration.get(key) or [])


def _other(mode: Mode) -> Mode:
    return "per-cue" if mode == "per-answer" else "per-answer"
