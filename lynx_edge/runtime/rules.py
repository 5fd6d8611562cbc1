"""The exit decision: which calibrated rule a risk level picks, and whether a score exits.

Pure Python/NumPy, no model. A card's calibration holds one section per promise kind —
``agreement`` (does exiting change the answer full thinking would give?) and ``harm`` (does it
spoil an answer full thinking gets right?) — each scored by its own probe. A card made before
promise kinds holds one flat section, read as ``harm``. Each section carries two kinds of
calibrated entries:

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
from lynx_edge.runtime.options import PROMISES, Mode, Promise

Section = dict[str, Any]  # one promise's calibration: per_cue and per_answer entries
Calibration = dict[str, Any]  # a card's ``calibration``: a Section per promise kind (or one flat legacy Section)
LEGACY_PROMISE: Promise = "harm"  # what a flat section (a card made before promise kinds) promises
# Each promise kind in one sentence (the card, `probe info`, the README say it the same way).
PROMISE_SENTENCES: dict[str, str] = {
    "agreement": "per answer, the share of replies whose answer differs from the one full thinking would give "
    "is at most α; per cue, at a cue where exiting would change the answer the runtime exits with probability "
    "at most δ (no gold answers needed)",
    "harm": "per answer, among the answers full thinking gets right the share an exit spoils is at most α; per "
    "cue, at a cue where exiting would spoil such an answer the runtime exits with probability at most δ",
}


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
    promise: Promise = LEGACY_PROMISE  # what the level bounds, and so which probe's score it judges
    confidence: float | None = None  # over calibration draws (None: on average, a marginal per-cue rule)

    @property
    def statement(self) -> str:
        """The promise in a few words: "α 0.02 at 90 % confidence (agreement)"."""
        symbol = "α" if self.mode == "per-answer" else "δ"
        how = f"at {self.confidence:.0%} confidence" if self.confidence is not None else "on average"
        return f"{symbol} {self.level:g} {how} ({self.promise})".replace("%", " %")

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


def promises_of(calibration: Calibration) -> list[Promise]:
    """The promise kinds a card's calibration holds, in the card's order (its default first)."""
    if _flat(calibration):
        return [LEGACY_PROMISE]
    return [p for p in calibration if p in PROMISES]  # type: ignore[misc]


def section(calibration: Calibration, promise: Promise | None) -> tuple[Promise, Section]:
    """The calibration of one promise kind (None: the card's default, its first)."""
    held = promises_of(calibration)
    chosen = promise or (held[0] if held else LEGACY_PROMISE)
    if chosen not in held:
        raise SettingError(
            f"this probe has no {chosen} calibration (it holds {', '.join(held) or 'none'}): "
            f"pass --promise {held[0] if held else LEGACY_PROMISE}, or remake the probe with `lynx-edge probe make`"
        )
    return chosen, (calibration if _flat(calibration) else calibration[chosen])


def _flat(calibration: Calibration) -> bool:
    return "per_cue" in calibration or "per_answer" in calibration


def select_rule(
    calibration: Calibration, alpha: float, mode: Mode | None = None, promise: Promise | None = None
) -> ExitRule:
    """The rule ``alpha`` picks from a card's calibration for ``promise`` (None: the card's
    default kind); ``mode`` None prefers per-answer when the card holds it (it bounds what
    users see: answers), else per-cue."""
    promise, calibration = section(calibration, promise)
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
    return entry_rule(mode, max(eligible, key=lambda e: float(e[level_key])), promise)


def entry_rule(mode: Mode, entry: dict[str, Any], promise: Promise = LEGACY_PROMISE) -> ExitRule:
    """The rule one calibration entry of a card stands for (null quantiles are +∞)."""
    confidence = entry.get("confidence", 0.9 if mode == "per-answer" else None)
    if mode == "per-answer":
        return ExitRule(mode, float(entry["alpha"]), lam=_q(entry["threshold"]), promise=promise, confidence=confidence)
    return ExitRule(
        mode,
        float(entry["delta"]),
        q_pos=_q(entry["q_pos"]),
        q_neg=_q(entry["q_neg"]),
        promise=promise,
        confidence=confidence,
    )


def card_rules(calibration: Calibration) -> list[ExitRule]:
    """Every calibrated rule of a card: per promise kind, per cue then per answer (calibration
    and the bench measure each of them)."""
    rules = []
    for promise in promises_of(calibration):
        _, one = section(calibration, promise)
        rules += [entry_rule("per-cue", e, promise) for e in one.get("per_cue") or []]
        rules += [entry_rule("per-answer", e, promise) for e in one.get("per_answer") or []]
    return rules


def calibrated_levels(calibration: Calibration, mode: Mode, promise: Promise | None = None) -> list[float]:
    """The risk levels a card offers in one mode and promise kind, ascending (the chat steps
    through them)."""
    _, one = section(calibration, promise)
    key, level_key = ("per_answer", "alpha") if mode == "per-answer" else ("per_cue", "delta")
    return sorted(float(e[level_key]) for e in one.get(key) or [])


def _other(mode: Mode) -> Mode:
    return "per-cue" if mode == "per-answer" else "per-answer"
