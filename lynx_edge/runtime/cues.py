"""Find reasoning cues ("Wait", "Hmm", a line break …) in streamed thinking text.

Pure text: the engine hands in the decoded text so far and learns which cue matches end in
the newest token. Word cues match whole words, case-insensitively; a cue that starts or ends
with a non-word character (a line break) needs no boundary on that side. A word cue that ends
exactly at the end of the text so far is *open*: the next token decides whether it was the
whole word ("Wait" + ",") or not ("Wait" + "ing").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CueMatch:
    """One cue occurrence in the text: ``text[start:end]`` spells ``cue``."""

    cue: str
    start: int
    end: int
    open_end: bool = False


def cue_label(cue: str) -> str:
    """How a cue is shown to people (a bare line break is invisible)."""
    return cue.replace("\n", "\\n")


class CueMatcher:
    """Whole-word, case-insensitive matcher for one cue set."""

    def __init__(self, cues: Sequence[str]) -> None:
        if not cues:
            raise ValueError("a cue set needs at least one cue")
        self.cues = tuple(cues)
        self._by_lower = {c.lower(): c for c in self.cues}
        self.max_len = max(len(c) for c in self.cues)
        alternatives = []
        for cue in sorted(self.cues, key=len, reverse=True):
            left = r"(?<!\w)" if _is_word_char(cue[0]) else ""
            right = r"(?!\w)" if _is_word_char(cue[-1]) else ""
            alternatives.append(left + re.escape(cue) + right)
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)

    def matches_ending_after(self, text: str, after: int) -> list[CueMatch]:
        """Matches whose last character sits at index ``after`` or later."""
        found = []
        for m in self._pattern.finditer(text, max(0, after - self.max_len + 1)):
            if m.end() <= after:
                continue
            cue = self._by_lower[m.group(0).lower()]
            open_end = m.end() == len(text) and _is_word_char(cue[-1])
            found.append(CueMatch(cue, m.start(), m.end(), open_end))
        return found

    def partial_start(self, text: str) -> int:
        """Start of the longest tail of ``text`` that could still grow into a cue, or
        ``len(text)``: the stream holds that tail back so an exit never shows cue text."""
        lowered = text[-self.max_len :].lower()
        base = len(text) - len(lowered)
        for i in range(len(lowered)):
            tail = lowered[i:]
            start = base + i
            for cue in self._by_lower:
                if cue.startswith(tail) and (
                    not _is_word_char(cue[0]) or start == 0 or not _is_word_char(text[start - 1])
                ):
                    return start
        return len(text)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
