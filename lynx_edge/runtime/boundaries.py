"""Where the thinking may be cut without breaking a word or a number (pure Python).

A token budget that closes the thinking at exactly token N cuts wherever N falls — often
between two digits of a number or inside a word, and the answer written after such a cut is
worse than the budget deserves (llama.cpp's ``--reasoning-budget`` does this). lynx-edge cuts
inside a ``CutWindow`` instead, by one rule that the runtime applies token by token and the
bench applies to a recorded trace: the first end of a line or sentence at or after the
window's target (within its grace), else the last gap between words in the grace, else the
last line or sentence end before the target (within its reach), else the last gap between
words there, else the window's hard end.

Why forward before back: a cut moved back to the last sentence end lands just after a
finished step ("… = 500 + 225 = 725."), and the answer then repeats that step's result; a cut
after the budget leaves the next step open ("725 + 19"), and the answer completes it. On the
bench's 500 traces (``studies/budget_cuts.py``) moving back answered 49.4 % at half the median
thinking, below the raw cut's 58.4 %; forward first answers 62.6 %, and beats the raw cut at
every budget measured.

Positions are token indices: a cut at ``i`` keeps ``pieces[:i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
