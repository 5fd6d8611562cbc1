"""What text a generation may stream now.

Thinking is held back from the start of the token where a cue or the close tag might be
forming, so an exit never streams text that it then removes; the answer streams as it comes.
Each delta carries the log-probabilities of the sampled tokens whose text it completes.
"""

from __future__ import annotations

from collections.abc import Iterator

from lynx_edge.events import AnswerDelta, Event, ThinkingDelta, TokenLogprob
from lynx_edge.runtime.cues import CueMatcher
from lynx_edge.runtime.ledger import TokenLedger


class StreamGate:
    """Emits a ledger's text as thinking and answer deltas, never ahead of what is final."""

    def __init__(self, ledger: TokenLedger, matcher: CueMatcher) -> None:
        self.ledger = ledger
        self.matcher = matcher
        self.thinking_sent = 0  # chars of thinking streamed
        self.answer_sent: int | None = None  # char offset up to which the answer was streamed
        self.tokens_sent = 0  # tokens whose text (and log-probability) was streamed

    def flush(
        self, *, final: bool = False, hold_from: int | None = None, answer_hold: int | None = None
    ) -> Iterator[Event]:
        """Deltas for the text that is safe to show; ``final`` shows all the thinking (it ends
        here), ``hold_from`` keeps back thinking from that char on (an undecided cue),
        ``answer_hold`` the answer from that char on (a tool call, reported as a call)."""
        ledger = self.ledger
        if not ledger.closed:
            limit = len(ledger.text) if final else self._safe_limit(hold_from)
            if limit > self.thinking_sent:
                yield ThinkingDelta(ledger.text[self.thinking_sent : limit], self._logprobs_upto(limit))
                self.thinking_sent = limit
            return
        if self.thinking_sent < ledger.think_end:
            yield ThinkingDelta(
                ledger.text[self.thinking_sent : ledger.think_end], self._logprobs_upto(ledger.think_end)
            )
        self.thinking_sent = ledger.think_end
        if self.answer_sent is None:
            stripped = ledger.text[ledger.answer_start :].lstrip()
            if not stripped:
                return
            self.answer_sent = len(ledger.text) - len(stripped)
            self.tokens_sent = max(self.tokens_sent, ledger.answer_token)
        limit = len(ledger.text)
        if answer_hold is not None and answer_hold < limit:
            limit = ledger.starts[ledger.token_at(answer_hold)]  # from the token where it begins
        if limit > self.answer_sent:
            yield AnswerDelta(ledger.text[self.answer_sent : limit], self._logprobs_upto(limit))
            self.answer_sent = limit

    def rewind(self) -> None:
        """The ledger was rolled back to what was already shown (an exit at a held cue)."""
        self.tokens_sent = min(self.tokens_sent, len(self.ledger))

    def _logprobs_upto(self, limit: int) -> tuple[TokenLogprob, ...]:
        """Log-probabilities of sampled tokens whose text ends by char ``limit``."""
        ledger = self.ledger
        out = []
        while self.tokens_sent < len(ledger):
            i = self.tokens_sent
            end = ledger.starts[i + 1] if i + 1 < len(ledger) else len(ledger.text)
            if end > limit:
                break
            if ledger.logprobs[i] is not None:
                out.append(ledger.logprobs[i])
            self.tokens_sent += 1
        return tuple(out)

    def _safe_limit(self, hold_from: int | None) -> int:
        text = self.ledger.text
        limit = min(self.matcher.partial_start(text), self._close_partial_start())
        if hold_from is not None:
            limit = min(limit, hold_from)
        if limit >= len(text):
            return limit
        starts = self.ledger.starts
        return starts[self.ledger.token_at(limit)] if starts else 0

    def _close_partial_start(self) -> int:
        text, tag = self.ledger.text, self.ledger.close_tag
        for n in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:n]):
                return len(text) - n
        return len(text)
