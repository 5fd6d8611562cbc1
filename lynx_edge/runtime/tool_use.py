"""Tool calls while a reply is written: where a call opens, which grammar writes it, what the
stream holds back, and what the finished answer's calls are.

A call the model begins inside its thinking is taken back and written after the thinking
closes; a call in the answer is written from its first char under the call's grammar (lazy,
as llama.cpp's grammar triggers are: free text until a call opens, or the grammar from the
first token when a call is required). A call that would not end — a string caught looping, or
still open near the token limit — is nudged shut: kept up to where it went wrong, replayed into
a fresh grammar, and a quote favoured until one is written. ``CallWatcher`` decides all of
this; the generation acts on its decisions (it alone edits the KV cache and the samplers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from lynx_edge.events import ToolCall
from lynx_edge.runtime.ledger import TokenLedger
from lynx_edge.runtime.llama_backend import Grammar, Sampler
from lynx_edge.runtime.tool_calls import ToolFormat

CALL_CLOSE_MARGIN = 24  # tokens before the limit at which an open call is nudged shut


@dataclass(frozen=True)
class ToolUse:
    """The calls a request allows: the model's call format, whether the answer must be a call,
    and the grammar a call follows once it opens (compiled for this request alone)."""

    format: ToolFormat
    forced: bool
    grammar: Grammar
    gbnf: str  # to compile the grammar afresh when a looping call is taken back


class CallWatcher:
    """The tool calls of one reply, watched token by token."""

    def __init__(self, tools: ToolUse) -> None:
        self.tools = tools
        self.open = False  # a call has opened in the answer: its grammar holds from here
        self.in_thinking = False  # the model began a call inside its thinking
        self.since: int | None = None  # the first token sampled under the call's grammar
        self.looping: int | None = None  # where a call caught looping is taken back to
        self.request_sampler: Sampler | None = None  # set aside while a call is nudged shut
        self.shut = False  # a call that would not end was nudged shut (once per reply)

    @property
    def format(self) -> ToolFormat:
        return self.tools.format

    def grammar(self, ledger: TokenLedger) -> Grammar | None:
        """The call's grammar when the next token belongs to a call (the answer has begun and a
        call opened, or a call is required), else None."""
        if ledger.closed and (self.tools.forced or self.open):
            if self.since is None:
                self.since = len(ledger)
            return self.tools.grammar
        return None

    def hold_from(self, ledger: TokenLedger, thinking_open: bool) -> int | None:
        """The char from which the thinking is held back: a call that may be opening there."""
        opener = self.format.opener
        if not thinking_open or not opener:
            return None
        tail = ledger.text[-len(opener) :]  # only a call still opening
        return len(ledger.text) - len(tail) + self.format.may_open_at(tail)

    def answer_hold(self, ledger: TokenLedger, calls: list[ToolCall] | None = None) -> int | None:
        """The char from which the answer is held back: where its calls begin (they are
        reported as calls, never as text). Once the answer is final (``calls`` given) only
        calls that parse are held, so an answer that is not a call is never lost."""
        if not ledger.closed:
            return None
        start = ledger.answer_start
        if calls is not None:
            at = self.format.opens_at(ledger.text[start:])
            return start + at if calls and at >= 0 else None
        if self.tools.forced or self.open:
            return start
        return start + self.format.may_open_at(ledger.text[start:])

    def opens_at(self, ledger: TokenLedger, prev: int, thinking_open: bool) -> int | None:
        """The char where a call begins in the text after ``prev``, when it is one to act on:
        a call opened in the thinking (it will be closed there) or a free answer opening one."""
        if self.open:
            return None
        fmt = self.format
        if thinking_open:
            if not fmt.opener:
                return None
            at = ledger.text.find(fmt.opener, max(0, prev - len(fmt.opener)))
            return at if at >= 0 else None
        if not ledger.closed or self.tools.forced:
            return None
        at = fmt.opens_at(ledger.text[ledger.answer_start :])
        return ledger.answer_start + at if at >= 0 else None

    def opened(self, *, in_thinking: bool) -> None:
        """A call opened (and was taken back to be written under the grammar)."""
        self.open = True
        self.in_thinking = self.in_thinking or in_thinking

    def running_out(self, written: int, cap: int) -> bool:
        """A call still open this close to the token limit (its string may never end)."""
        return self.since is not None and not self.shut and written >= cap - CALL_CLOSE_MARGIN

    def loop_caught(self, first_copy_end: int) -> bool:
        """The answer loops from token ``first_copy_end`` on: whether the loop is inside a call
        (then the call is taken back there and shut, instead of ending the reply)."""
        if self.since is not None and first_copy_end > self.since:
            self.looping = first_copy_end
            return True
        return False

    def end_after_last_call(self, ledger: TokenLedger) -> int | None:
        """The token index after the answer's last complete call, where the reply ends when a
        call would not end in time (None: no call is complete yet)."""
        answer = ledger.text[ledger.answer_start :]
        closing = self.format.framing("_")[1].strip()
        end = answer.rfind(closing)
        if end < 0 or not self.format.parse(answer[: end + len(closing)])[1]:
            return None
        char = ledger.answer_start + end + len(closing)
        self.shut, self.looping = True, None
        return ledger.token_at(char - 1) + 1  # the first token after the one that closes the call

    def restart_grammar(
        self,
        tokens: list[int],
        compile_grammar: Callable[[str], Grammar | None],
        accept: Callable[[Grammar, int], None],
    ) -> None:
        """The call was taken back to ``tokens`` (the ledger's, after the cut): compile its
        grammar afresh and feed it the call's tokens that are kept."""
        grammar = compile_grammar(self.tools.gbnf)
        assert grammar is not None, "the call's grammar compiled once already"
        for token in tokens[self.since :]:
            accept(grammar, token)
        self.tools = dataclasses.replace(self.tools, grammar=grammar)

    def nudge(self, request_sampler: Sampler) -> None:
        """The call is being nudged shut under another sampler; ``request_sampler`` comes back
        once a quote is written (``quote_written``)."""
        self.shut, self.looping = True, None
        self.request_sampler = request_sampler

    def quote_written(self, piece: str) -> Sampler | None:
        """The request's sampler again once the nudged call's string is closed, else None."""
        if self.request_sampler is None or '"' not in piece:
            return None
        sampler, self.request_sampler = self.request_sampler, None
        return sampler

    def reply(self, ledger: TokenLedger) -> tuple[str, list[ToolCall]]:
        """The answer's text and its calls (then the text is what stands before them)."""
        if not ledger.closed:
            return ledger.answer, []
        before, calls = self.format.parse(ledger.text[ledger.answer_start :])
        return (before.strip(), calls) if calls else (ledger.answer, [])
