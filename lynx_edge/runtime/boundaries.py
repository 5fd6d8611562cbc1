"""Where a text may be cut without breaking a word or a number (pure Python).

A token budget that closes the thinking at exactly token N cuts wherever N falls — often
between two digits of a number or inside a word, and the answer written after such a cut is
worse than the budget deserves (llama.cpp's ``--reasoning-budget`` does this). A soft cut
moves back to the last natural boundary: the end of a line or sentence when there is one
close by, else the last gap between words.

Positions are token indices: a cut at ``i`` keeps ``pieces[:i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Boundary = Literal["line", "sentence", "word"]
SENTENCE_ENDS = (".", "!", "?", ":", ";")


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


def soft_cut(pieces: Sequence[str], limit: int, *, reach: int | None = None) -> int:
    """The cut a soft budget of ``limit`` tokens makes: the last line or sentence end within
    ``reach`` tokens before the limit (default: a quarter of it), else the last gap between
    words, else ``limit`` itself (text with no boundary at all)."""
    if limit >= len(pieces):
        return len(pieces)  # everything fits: nothing to cut
    reach = max(1, limit // 4) if reach is None else reach
    ends = []  # (cut, kind) from the limit backwards
    before = "".join(pieces[:limit])
    for i in range(limit, 0, -1):
        kind = boundary_at(before, pieces[i])
        if kind is not None:
            ends.append((i, kind))
        before = before[: len(before) - len(pieces[i - 1])]
    natural = next((i for i, kind in ends if kind != "word" and limit - i <= reach), None)
    if natural is not None:
        return natural
    return ends[0][0] if ends else limit
