"""The tokens a generation has written, their text, and where its thinking ends.

Text is decoded incrementally (a token may end mid-way through a UTF-8 character), so the
decoder's state before every token is kept: a rollback to any token restores the text exactly
as it was there.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from collections.abc import Callable, Sequence

from lynx_edge.events import TokenLogprob


class TokenLedger:
    """Generated tokens (all in the KV cache) with their text and per-token log-probabilities."""

    def __init__(self, piece: Callable[[int], bytes], close_tag: str) -> None:
        self._piece = piece
        self.close_tag = close_tag
        self.tokens: list[int] = []
        self.text = ""
        self.starts: list[int] = []  # char offset of each token's text
        self.logprobs: list[TokenLogprob | None] = []  # None: written by the runtime, not sampled
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._states: list[tuple[bytes, int]] = []
        self.think_end: int | None = None  # char offset of the close tag
        self.answer_start = 0  # char offset where the answer text begins
        self.answer_token = 0  # index of the first token after the thinking

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def closed(self) -> bool:
        """The thinking's close tag has been written."""
        return self.think_end is not None

    def peek(self, token: int) -> str:
        """The text ``token`` would add, without taking it."""
        state = self._decoder.getstate()
        text = self._decoder.decode(self._piece(token))
        self._decoder.setstate(state)
        return text

    def commit(self, token: int, logprob: TokenLogprob | None = None) -> str:
        """Take ``token``; returns the text it added."""
        self._states.append(self._decoder.getstate())
        text = self._decoder.decode(self._piece(token))
        self.starts.append(len(self.text))
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.text += text
        if self.think_end is None:
            self._find_close(len(self.text) - len(text))
        return text

    def _find_close(self, prev: int) -> None:
        at = self.text.find(self.close_tag, max(0, prev - len(self.close_tag) + 1))
        if at >= 0:
            self.think_end = at
            self.answer_start = at + len(self.close_tag)
            self.answer_token = len(self.tokens)

    def open_answer(self) -> None:
        """The prompt already closed the thinking (a template's own no-think switch)."""
        self.think_end, self.answer_start, self.answer_token = 0, 0, 0

    def pieces(self) -> list[str]:
        """The text each token added (``"".join(pieces()[:i])`` is the text of ``i`` tokens)."""
        bounds = [*self.starts, len(self.text)]
        return [self.text[a:b] for a, b in zip(bounds, bounds[1:])]

    def token_at(self, char: int) -> int:
        """Index of the token whose text holds character ``char``."""
        return bisect_right(self.starts, char) - 1

    def rollback(self, cut: int) -> None:
        """Forget tokens from index ``cut`` on (their text too)."""
        self._decoder.setstate(self._states[cut])
        self.text = self.text[: self.starts[cut]]
        del self.tokens[cut:], self.starts[cut:], self._states[cut:], self.logprobs[cut:]
        if self.think_end is not None and self.think_end >= len(self.text):
            self.think_end, self.answer_start, self.answer_token = None, 0, 0

    @property
    def thinking(self) -> str:
        return (self.text[: self.think_end] if self.closed else self.text).strip()

    @property
    def answer(self) -> str:
        return self.text[self.answer_start :].strip() if self.closed else ""


def token_texts(piece: Callable[[int], bytes], tokens: Sequence[int], close_tag: str) -> list[str]:
    """The text each of ``tokens`` adds, decoded incrementally as a generation's ledger does
    (so ``"".join(texts[:cut])`` is the text of the first ``cut`` tokens)."""
    ledger = TokenLedger(piece, close_tag)
    return [ledger.commit(t) for t in tokens]
