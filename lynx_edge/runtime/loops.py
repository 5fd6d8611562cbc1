"""Repetition loops in a token stream: a cycle of tokens repeated several times in a row.

A reasoning model that loops writes the same cycle of tokens again and again until the token
limit, and the reply never gets an answer. A normal trace also repeats itself, but at most
once: a recheck copies a calculation it already wrote ("16 - 5 = 11 … 16 - 5 = 11"). The
thresholds are chosen from data (``python studies/thinking_limits.py false-alarms``): the 500
full greedy traces of the reasoner on ``data/synthetic/test.jsonl`` never exceed 2.25 copies of
any cycle spanning 16 tokens or more (SVAMP's 300: 2.85 copies of a cycle spanning 37 tokens),
while the loops of the loop set (``data/loops``) run to the limit. A loop is therefore
``MIN_COPIES`` back-to-back copies of a cycle of at most ``MAX_PERIOD`` tokens spanning at
least ``MIN_SPAN`` tokens (so that a run of digits or dashes is not a loop). Copies must be
exact: a counter ("17. a book. 18. a book.") is what a user asks for when they ask for a list.

After a loop exit the answer often goes straight back into the cycle the thinking was cut
from. That is a relapse, caught sooner (``RELAPSE_COPIES`` copies of that cycle, in any
rotation, at least ``RELAPSE_SPAN`` tokens) than a new loop, which needs the full thresholds.

Pure NumPy: one vector compare per token, whatever the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lynx_edge.runtime.boundaries import MAX_GRACE, CutWindow

MAX_PERIOD = 256
MIN_COPIES = 2.5
MIN_SPAN = 48
RELAPSE_COPIES = 1.5
RELAPSE_SPAN = 16


@dataclass(frozen=True)
class Loop:
    """A detected loop: its cycle's length and the repeated region ``[start, end)`` (tokens
    ``[start, start + period)`` are the first copy)."""

    period: int
    start: int
    end: int  # one past the newest token of the loop

    @property
    def copies(self) -> float:
        return (self.end - self.start) / self.period

    def window(self, ceiling: int | None = None) -> CutWindow:
        """Where the thinking closes once this loop is caught: at the next line or sentence
        end within one cycle (at most ``MAX_GRACE`` tokens, never past ``ceiling``), else
        the last gap between words since the catch. Nothing before the catch is removed:
        it has been streamed."""
        hard = self.end + min(self.period, MAX_GRACE)
        if ceiling is not None:
            hard = min(hard, ceiling)
        at = min(self.end, hard)
        return CutWindow(at, hard, at)


class LoopGuard:
    """Watches tokens one at a time and says when the newest ones close a loop.

    ``runs[p - 1]`` counts how many tokens in a row equal the token ``p`` places before them;
    a cycle of period ``p`` repeated ``c`` times leaves a run of ``(c - 1) · p``.
    """

    def __init__(
        self,
        *,
        max_period: int = MAX_PERIOD,
        min_copies: float = MIN_COPIES,
        min_span: int = MIN_SPAN,
        relapse: list[int] | tuple[int, ...] | None = None,
    ):
        """``relapse``: one copy of a cycle already caught (the thinking's loop); writing it
        again in any rotation ends the watched text sooner."""
        self.max_period = max_period
        self.min_copies = min_copies
        self.min_span = min_span
        self.periods = np.arange(1, max_period + 1)
        self.recent = np.full(max_period, -1, dtype=np.int64)  # recent[p - 1]: the token p places back
        self.runs = np.zeros(max_period, dtype=np.int64)
        self.count = 0  # tokens seen
        # a run long enough to be a loop at each period
        self.needed = np.maximum(np.ceil((min_copies - 1) * self.periods), min_span - self.periods)
        # relapse: cycle[(r + k) % p] is what rotation r expects next after k matching tokens
        self.cycle = np.asarray(relapse if relapse else [], dtype=np.int64)
        self.rotations = np.arange(self.cycle.size)
        self.relapse_runs = np.zeros(self.cycle.size, dtype=np.int64)
        self.relapse_needed = max(int(np.ceil(RELAPSE_COPIES * self.cycle.size)), RELAPSE_SPAN)

    def push(self, token: int) -> Loop | None:
        """Take the next token; the loop it completes (its shortest cycle), if any."""
        self.runs = np.where(self.recent == token, self.runs + 1, 0)
        self.recent = np.roll(self.recent, 1)
        self.recent[0] = token
        self.count += 1
        if self.cycle.size:
            p = self.cycle.size
            expected = self.cycle[(self.rotations + self.relapse_runs) % p]
            self.relapse_runs = np.where(
                expected == token, self.relapse_runs + 1, (self.cycle == token).astype(np.int64)
            )
            run = int(self.relapse_runs.max())
            if run >= self.relapse_needed:
                return Loop(p, self.count - run, self.count)
        hits = np.flatnonzero(self.runs >= self.needed)
        if hits.size == 0:
            return None
        p = int(self.periods[hits[0]])
        run = int(self.runs[hits[0]])
        return Loop(p, self.count - run - p, self.count)


def find_loop(tokens: list[int] | tuple[int, ...], **settings: Any) -> Loop | None:
    """The first loop in ``tokens`` as ``LoopGuard(**settings)`` would see it token by token
    (None: no loop)."""
    guard = LoopGuard(**settings)
    for token in tokens:
        loop = guard.push(token)
        if loop is not None:
            return loop
    return None


def max_copies(tokens: list[int] | tuple[int, ...], *, min_span: int = 16, max_period: int = MAX_PERIOD) -> float:
    """The most back-to-back copies of any cycle spanning ``min_span`` tokens or more: how
    close a trace comes to the guard (a study of false alarms)."""
    best = 1.0
    guard = LoopGuard(max_period=max_period, min_copies=float("inf"), min_span=0)
    for token in tokens:
        guard.push(token)
        span = guard.runs + guard.periods
        ok = span >= min_span
        if ok.any():
            best = max(best, float((span[ok] / guard.periods[ok]).max()))
    return best
