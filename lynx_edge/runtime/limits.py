"""The limits on a reply's thinking: a token budget, the answer reserve and the loop guard.

``ThinkingLimits`` watches one reply token by token and *decides* — where the thinking must
close, how much of it the stream must hold back, whether the answer loops — and the generation
acts on its decisions (it alone edits the KV cache). The rules it applies are pure Python and
NumPy, shared with the bench, which applies them to recorded traces:

**Cuts** fall where they break no word and no number. A token budget that closes the thinking
at exactly token N cuts wherever N falls — often between two digits of a number or inside a
word, and the answer written after such a cut is worse than the budget deserves (llama.cpp's
``--reasoning-budget`` does this). lynx-edge cuts inside a ``CutWindow`` instead, by one rule
that the runtime applies token by token and the bench applies to a recorded trace: the first
end of a line or sentence at or after the window's target (within its grace), else the last gap
between words in the grace, else the last line or sentence end before the target (within its
reach), else the last gap between words there, else the window's hard end.

Why forward before back: a cut moved back to the last sentence end lands just after a finished
step ("… = 500 + 225 = 725."), and the answer then repeats that step's result; a cut after the
budget leaves the next step open ("725 + 19"), and the answer completes it. On the bench's 500
traces (``studies/budget_cuts.py``) moving back answered 49.4 % at half the median thinking,
below the raw cut's 58.4 %; forward first answers 62.6 %, and beats the raw cut at every budget
measured.

Positions are token indices: a cut at ``i`` keeps ``pieces[:i]``.

**Loops** are a cycle of tokens repeated several times in a row. A reasoning model that loops
writes the same cycle of tokens again and again until the token limit, and the reply never gets
an answer. A normal trace also repeats itself, but at most once: a recheck copies a calculation
it already wrote ("16 - 5 = 11 … 16 - 5 = 11"). The thresholds are chosen from data (``python
studies/thinking_limits.py false-alarms``): the 500 full greedy traces of the reasoner on
``data/synthetic/test.jsonl`` never exceed 2.25 copies of any cycle spanning 16 tokens or more
(SVAMP's 300: 2.85 copies of a cycle spanning 37 tokens), while the loops of the loop set
(``data/loops``) run to the limit. A loop is therefore ``MIN_COPIES`` back-to-back copies of a
cycle of at most ``MAX_PERIOD`` tokens spanning at least ``MIN_SPAN`` tokens (so that a run of
digits or dashes is not a loop). Copies must be exact: a counter ("17. a book. 18. a book.") is
what a user asks for when they ask for a list.

After a loop exit the answer often goes straight back into the cycle the thinking was cut from.
That is a relapse, caught sooner (``RELAPSE_COPIES`` copies of that cycle, in any rotation, at
least ``RELAPSE_SPAN`` tokens) than a new loop, which needs the full thresholds.

Pure NumPy: one vector compare per token, whatever the period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lynx_edge.events import ExitTaken
from lynx_edge.runtime.ledger import TokenLedger

Boundary = Literal["line", "sentence", "word"]
SENTENCE_ENDS = (".", "!", "?", ":", ";")
NATURAL: tuple[Boundary, ...] = ("line", "sentence")
MAX_GRACE = 32  # tokens a budget may run on to reach the end of a sentence
MAX_REACH = 64  # tokens a cut may move back (the runtime holds them back from the stream)


def boundary_at(before: str, after: str) -> Boundary | None:
    """The kind of boundary between text ending in ``before`` and the piece ``after`` (None:
    the cut would split a word or a number)."""
    if not before:
        return None
    if before.endswith("\n"):
        return "line"
    if after[:1].isspace() or before[-1].isspace():
        return "sentence" if before.rstrip().endswith(SENTENCE_ENDS) else "word"
    return None


@dataclass(frozen=True)
class CutWindow:
    """Where a cut may fall: from ``start`` to ``hard`` tokens, preferably at ``target`` or
    just after it. The runtime holds the thinking from ``start`` back from the stream, so a
    cut anywhere in the window never removes text a client has seen."""

    target: int
    hard: int
    start: int

    @classmethod
    def budget(cls, tokens: int, *, ceiling: int | None = None) -> CutWindow:
        """The window of a budget of ``tokens`` thinking tokens: a grace of an eighth (at most
        ``MAX_GRACE``) after it, a reach of a quarter (at most ``MAX_REACH``) before it; never
        past ``ceiling`` (the last token before the answer reserve)."""
        if ceiling is not None:
            tokens = min(tokens, ceiling)
        grace = min(MAX_GRACE, max(1, tokens // 8))
        reach = min(MAX_REACH, max(1, tokens // 4))
        hard = tokens + grace if ceiling is None else min(tokens + grace, ceiling)
        target = max(0, min(tokens, hard))
        return cls(target, max(0, hard), max(0, target - reach))

    def natural_at(self, n: int, before: str, after: str) -> bool:
        """Whether a cut after ``n`` tokens (text ``before``, next piece ``after``) is the
        window's first natural boundary at or after its target."""
        return self.target <= n <= self.hard and boundary_at(before, after) in NATURAL

    def cut(self, pieces: Sequence[str]) -> int:
        """The cut in ``pieces`` (``len(pieces)`` when the text ends before a cut is due)."""
        text = "".join(pieces[: self.target])
        for i in range(self.target, self.hard + 1):
            if i >= len(pieces):
                return len(pieces)  # the thinking ended inside the window: nothing to cut
            if self.natural_at(i, text, pieces[i]):
                return i
            text += pieces[i]
        return self.fallback(pieces)

    def fallback(self, pieces: Sequence[str]) -> int:
        """The cut once the hard end is reached with no natural boundary after the target:
        the last gap between words in ``[target, hard]``, else the last line or sentence end
        in ``[start, target)``, else the last gap between words there, else ``hard``.
        ``pieces`` holds at least ``hard + 1`` pieces."""
        kinds = {}
        text = "".join(pieces[: self.start])
        for i in range(self.start, self.hard + 1):
            kinds[i] = boundary_at(text, pieces[i])
            text += pieces[i]
        ahead = [i for i in range(self.target, self.hard + 1) if kinds[i] is not None]
        natural = [i for i in range(self.start, self.target) if kinds[i] in NATURAL]
        behind = [i for i in range(self.start, self.target) if kinds[i] is not None]
        return (ahead or natural or behind or [self.hard])[-1]


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


class ThinkingLimits:
    """The budget, the answer reserve and the loop guard of one reply, watching it token by
    token. It decides (where the thinking closes, what the stream holds back, whether the
    answer loops); the generation acts."""

    def __init__(
        self,
        max_tokens: int,
        answer_reserve: int,
        thinking_budget: int | None,
        conclude_tokens: int,
        *,
        loop_guard: bool,
    ) -> None:
        """``conclude_tokens``: the length of the text that closes the thinking, which the
        reserve must leave room for besides the answer."""
        self.max_tokens = max_tokens
        self.budget = thinking_budget
        # the last thinking token that leaves room for the close and the answer reserve
        self.ceiling = max_tokens - answer_reserve - conclude_tokens if answer_reserve else None
        if thinking_budget is not None:
            self.window: CutWindow | None = CutWindow.budget(thinking_budget, ceiling=self.ceiling)
        else:
            self.window = CutWindow.budget(self.ceiling, ceiling=self.ceiling) if self.ceiling is not None else None
        self.kind = "budget"  # what the window stands for: "budget" (or the reserve), "loop"
        self.guards = (LoopGuard(), LoopGuard()) if loop_guard else None  # thinking, answer
        self.loops: list[str] = []  # where the guard caught a loop: "thinking", "answer"

    def hold_from(self, ledger: TokenLedger, thinking_open: bool) -> int | None:
        """The char from which the thinking is held back: the part of the cut window already
        written (a cut may still remove it)."""
        w = self.window
        if thinking_open and w is not None and w.start < len(ledger):
            return ledger.starts[w.start]
        return None

    def cut(self, ledger: TokenLedger, token: int, thinking_open: bool) -> int | None:
        """Where the thinking closes before ``token`` (just sampled), as a token index: the
        window's first sentence or line end at or after its target, or the best cut once its
        hard end is reached; None while the thinking may go on."""
        w = self.window
        if w is None or not thinking_open or len(ledger) < w.target:
            return None
        n, after = len(ledger), ledger.peek(token)
        if n < w.hard:
            return n if w.natural_at(n, ledger.text, after) else None
        return w.fallback([*ledger.pieces(), after])

    def watch(self, ledger: TokenLedger, token: int, thinking_open: bool) -> int | None:
        """Feed the loop guard the token just committed. A loop in the thinking opens a cut
        window at once (the thinking closes at the next sentence end within one cycle); a loop
        in the answer ends the reply: then the token index where its first copy ends."""
        phase = "thinking" if thinking_open else "answer"
        if self.guards is None or phase in self.loops:
            return None
        loop = self.guards[0 if thinking_open else 1].push(token)
        if loop is None:
            return None
        self.loops.append(phase)
        if not thinking_open:
            return len(ledger) - (loop.end - loop.start) + loop.period
        cycle = ledger.tokens[loop.end - loop.period : loop.end]
        self.guards = (self.guards[0], LoopGuard(relapse=cycle))  # the answer must not resume it
        self.window = loop.window(ceiling=self.window.hard if self.window is not None else None)
        self.kind = "loop"
        return None

    def departures(self, exit: ExitTaken | None) -> tuple[str, ...]:
        """How this reply's thinking ended outside the calibration's conditions (its traces ran
        with no budget, reserve or loop guard): a budget, reserve or loop cut moves the answer."""
        if exit is None or exit.policy not in ("budget", "loop"):
            return ()
        if exit.policy == "loop":
            return (f"the loop guard closed the thinking at token {exit.token_index} (not calibrated)",)
        if self.budget is not None and (self.ceiling is None or exit.token_index < self.ceiling):
            return (f"the thinking budget ({self.budget} tokens) cut the thinking at token {exit.token_index}",)
        return (f"the answer reserve of max_tokens {self.max_tokens} cut the thinking at token {exit.token_index}",)
