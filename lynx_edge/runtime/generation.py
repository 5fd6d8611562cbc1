"""One generation, written as a scheduler step: think, judge cues, exit when it is safe.

Token by token (each decode is a request the scheduler batches with other generations):

1. sample a token; if it completes a cue word inside the thinking, decode it with feature
   capture armed when the probe (or a feature sink) needs the hidden state;
2. the exit policy judges the cue: the probe's score against its calibrated rule, or a
   training-free trial answer written on a branch of the cache;
3. on exit, roll the cue tokens out of the KV cache, decode the exit text and let the model
   answer (``conclude``), or answer greedily inside ``\\boxed{…}`` (``boxed``).

A word cue that ends exactly at a token boundary is judged once the next token shows the
word really ended ("Wait," yes, "Waiting" no); the features were captured on the cue token
itself, so nothing is decoded twice. The answer may be held to a grammar (the thinking stays
free). A thinking budget, and the answer reserve under any token limit, close the thinking
in time at a sentence or line end (``boundaries.CutWindow``; the text a cut may remove is held
back from the stream), and the loop guard closes a thinking that repeats itself in a loop
(``loops.LoopGuard``) or stops an answer that does.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lynx_edge.events import (
    CueScored,
    Done,
    ExitTaken,
    GenerationResult,
    Savings,
    TokenCounts,
    TokenLogprob,
)
from lynx_edge.runtime.boundaries import CutWindow
from lynx_edge.runtime.cues import CueMatch, CueMatcher, cue_label
from lynx_edge.runtime.forced_answers import BOXED_ANSWER_TOKENS, BoxedAnswer, answer_on_branch
from lynx_edge.runtime.ledger import TokenLedger
from lynx_edge.runtime.llama_backend import BatchItem, BatchOut, Grammar, LlamaBackend, Sampler, SamplingSettings
from lynx_edge.runtime.loops import LoopGuard
from lynx_edge.runtime.options import ExitStyle
from lynx_edge.runtime.policies import Decision, NoExit, ProbeExit, TrialExit
from lynx_edge.runtime.scheduler import Slot, Step
from lynx_edge.runtime.stream import StreamGate
from lynx_edge.runtime.tool_calls import ToolCall, ToolFormat

Policy = NoExit | ProbeExit | TrialExit
CALL_CLOSE_MARGIN = 24  # tokens before the limit at which an open call is nudged shut


class _ContextFull(Exception):
    """Runtime-written text would overflow the context: the reply ends there ("length")."""


class Host(Protocol):
    """What a generation needs of its engine: the model, its cues and texts, names to report."""

    backend: LlamaBackend
    matcher: CueMatcher
    exit_text: str
    think_close: str
    conclude_tokens: int
    model_name: str
    probe_name: str | None

    def conclude_text(self, thinking: str) -> str: ...

    def exit_text_for(self, style: ExitStyle, thinking: str) -> str: ...


@dataclass(frozen=True)
class CueFeatures:
    """A cue's features as the probe would see them, for tools that record traces.

    ``cut`` is the index of the first generated token of the cue: an exit there keeps
    ``tokens[:cut]``.
    """

    cue: str
    token_index: int
    cut: int
    features: np.ndarray


FeatureSink = Callable[[CueFeatures], None]


@dataclass(frozen=True)
class ToolUse:
    """The calls a request allows: the model's call format, whether the answer must be a call,
    and the grammar a call follows once it opens (compiled for this request alone)."""

    format: ToolFormat
    forced: bool
    grammar: Grammar
    gbnf: str  # to compile the grammar afresh when a looping call is taken back


@dataclass(frozen=True)
class Plan:
    """A request resolved against the engine's model, probe and defaults."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingSettings
    policy: Policy
    exit_style: ExitStyle = "conclude"
    measure_savings: bool = False
    think: bool = True
    think_closed_in_prompt: bool = False  # the chat template wrote an empty thinking block itself
    grammar: Grammar | None = None  # compiled for this request alone (a grammar sampler has state)
    answer_reserve: int = 0  # tokens of max_tokens kept for the answer (0: none)
    thinking_budget: int | None = None
    loop_guard: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    departures: tuple[str, ...] = ()  # how the request leaves the card's calibration conditions
    tools: ToolUse | None = None


class Generation:
    """The state of one request while its step runs."""

    def __init__(
        self,
        engine: Host,
        plan: Plan,
        slot: Slot,
        *,
        cancelled: threading.Event,
        feature_sink: FeatureSink | None = None,
    ) -> None:
        self.e = engine
        self.b: LlamaBackend = engine.backend
        self.plan = plan
        self.seq = slot.main
        self.branch_seq = slot.branch
        self.cancelled = cancelled
        self.sink = feature_sink
        self.policy = plan.policy
        self.matcher: CueMatcher = engine.matcher
        self.ledger = TokenLedger(self.b.piece, engine.think_close)
        self.stream = StreamGate(self.ledger, self.matcher)
        self.pending: tuple[CueMatch, int, np.ndarray | None] | None = None
        self.cues: list[CueScored] = []
        self.trials: list[str] = []
        self.last_trial: int | None = None
        self.trial_tokens = 0
        self.trial_seconds = 0.0
        self.exit: ExitTaken | None = None
        self.exit_token = 0
        self.boxed: BoxedAnswer | None = None
        self.cap = plan.max_tokens
        self.resume: tuple[int, list[int], Sampler] | None = None
        self.finish_reason = "stop"
        self.closed_by_runtime = False
        self.grammar: Grammar | None = plan.grammar
        self.reused = 0
        self.window, self.window_kind = self._budget_window(), "budget"
        self.guards = (LoopGuard(), LoopGuard()) if plan.loop_guard else None  # thinking, answer
        self.loops: list[str] = []  # where the guard caught a loop: "thinking", "answer"
        self.tools = plan.tools
        self.call_open = False  # a call has opened in the answer: its grammar holds from here
        self.call_in_thinking = False  # the model began a call inside its thinking
        self.call_from: int | None = None  # the first token sampled under the call's grammar
        self.looping_call: int | None = None  # where a call caught looping is taken back to
        self.closing_call: Sampler | None = None  # the request's sampler, while a call is nudged shut
        self.call_shut = False  # a call that would not end was nudged shut (once per reply)
        self.thought_at: float | None = None  # when the thinking closed (perf_counter)

    # ---- main loop ------------------------------------------------------------------
    def steps(self) -> Step:
        start = time.perf_counter()
        b, plan = self.b, self.plan
        self.reused = b.reuse_prefix(plan.prompt, self.seq)
        out: BatchOut = yield BatchItem(self.seq, plan.prompt[self.reused :])
        self.sampler = b.sampler(plan.sampling)
        decode_start = time.perf_counter()
        try:
            if plan.think_closed_in_prompt:
                self.ledger.open_answer()
            elif not plan.think:
                out = yield from self._write(self.e.conclude_text(self.ledger.text))
            while True:
                if self.thought_at is None and (self.ledger.closed or self.exit is not None):
                    self.thought_at = time.perf_counter()
                if self.cancelled.is_set():
                    self.finish_reason = "cancelled"
                    break
                if len(self.ledger) >= self.cap or len(b.seqs[self.seq]) >= b.n_ctx:
                    self.finish_reason = "length"
                    break
                if self._call_running_out():
                    if self._end_at_last_call():
                        break
                    out = yield from self._close_looping_call(len(self.ledger), out)
                grammar = self._grammar_now()
                if grammar is not None and grammar is self.call_grammar and self.call_from is None:
                    self.call_from = len(self.ledger)
                token = b.sample(self.sampler, out.row, grammar)
                if self._cut_due(token):
                    out = yield from self._window_exit(token)
                    continue
                logprob = b.logprob(out.row, token, plan.top_logprobs) if plan.logprobs else None
                if b.is_eog(token):
                    if self.ledger.closed or self.closed_by_runtime:
                        break
                    out = yield from self._close_unfinished_thinking()
                    continue
                out, finished = yield from self._step(token, out, logprob)
                if finished:
                    break
        except _ContextFull:  # the text the runtime writes (a close, an exit) does not fit
            self.finish_reason = "length"
        self.pending = None
        answer, calls = self._reply()
        yield from self.stream.flush(final=True, answer_hold=self._answer_hold(calls))
        end = time.perf_counter()
        result = self._result(answer, calls, end - start, end - decode_start, (self.thought_at or end) - start)
        yield Done(result)
        if plan.measure_savings and self.resume and self.finish_reason != "cancelled":
            yield from self._measure_savings(result)
        return result

    def _step(self, token: int, out: BatchOut, logprob: TokenLogprob | None) -> Step:
        """Take one sampled token: judge an open cue, commit, find cues, decode, emit.
        Returns (the output row to sample from next, whether the answer is complete)."""
        new = self.ledger.peek(token)
        if self.pending and new:
            match, index, feats = self.pending
            self.pending = None
            if not (new[0].isalnum() or new[0] == "_"):
                exit_out = yield from self._judge(match, index, feats, pending_token=token)
                if exit_out is not None:
                    return exit_out, False
        prev = len(self.ledger.text)
        self.ledger.commit(token, logprob)
        if self.closing_call is not None and '"' in new:  # the looping string is closed
            self.sampler, self.closing_call = self.closing_call, None
        if self._loops_at(token):
            if self.looping_call is not None and not self._end_at_last_call():
                return (yield from self._close_looping_call(self.looping_call, out)), False
            return out, True
        call_at = self._call_start(prev)
        if call_at is not None:
            return (yield from self._open_call(call_at)), False
        cue = self._find_cue(prev)
        capture = cue is not None and (isinstance(self.policy, ProbeExit) or self.sink is not None)
        self.b.check_room(1, self.seq)
        out = yield BatchItem(self.seq, [token], capture=capture)
        if cue is not None:
            index = len(self.ledger) - 1
            if cue.open_end:
                self.pending = (cue, index, out.features)
            else:
                judged = yield from self._judge(cue, index, out.features, pending_token=None)
                if judged is not None:
                    out = judged
                if self.exit is not None and self.exit.token_index == index:
                    return out, False
        finished = self.boxed is not None and self.boxed.take(new)
        yield from self.stream.flush(hold_from=self._hold_from(), answer_hold=self._answer_hold())
        return out, finished

    def _hold_from(self) -> int | None:
        """The char from which the thinking is held back: an undecided cue, the part of a cut
        window already written (a cut may still remove it), a call that may be opening."""
        holds = [self.pending[0].start] if self.pending else []
        if self._thinking_open and self.window is not None and self.window.start < len(self.ledger):
            holds.append(self.ledger.starts[self.window.start])
        if self._thinking_open and self._calls_allowed and self.tools.format.opener:
            tail = self.ledger.text[-len(self.tools.format.opener) :]  # only a call still opening
            holds.append(len(self.ledger.text) - len(tail) + self.tools.format.may_open_at(tail))
        return min(holds) if holds else None

    # ---- tool calls ---------------------------------------------------------------------
    @property
    def _calls_allowed(self) -> bool:
        return self.tools is not None and self.boxed is None

    @property
    def call_grammar(self) -> Grammar | None:
        return self.tools.grammar if self.tools is not None else None

    def _call_running_out(self) -> bool:
        """A call still open this close to the token limit (its string may never end)."""
        return self.call_from is not None and not self.call_shut and len(self.ledger) >= self.cap - CALL_CLOSE_MARGIN

    def _end_at_last_call(self) -> bool:
        """End the reply after its last complete call, when it holds one (the calls after it
        would not end in time); False when no call is complete yet."""
        ledger = self.ledger
        answer = ledger.text[ledger.answer_start :]
        closing = self.tools.format.framing("_")[1].strip()
        end = answer.rfind(closing)
        if end < 0 or not self.tools.format.parse(answer[: end + len(closing)])[1]:
            return False
        char = ledger.answer_start + end + len(closing)
        cut = ledger.token_at(char - 1) + 1  # the first token after the one that closes the call
        if cut < len(ledger):
            self._rollback(cut)
        self.call_shut = True
        self.looping_call = None
        return True

    def _close_looping_call(self, cut: int, out: BatchOut) -> Step:
        """Shut a call that would not end — caught looping inside its arguments (a string that
        repeats itself), or still open near the token limit: keep it up to ``cut`` (a loop's
        first cycle), replay what is kept into a fresh grammar, and favour a quote until one
        is written; the grammar then finishes the call."""
        self.call_shut = True
        if cut < len(self.ledger):
            self._rollback(cut)
            grammar = self.b.grammar(self.tools.gbnf)
            for token in self.ledger.tokens[self.call_from : cut]:
                self.b.accept(grammar, token)
            self.tools = dataclasses.replace(self.tools, grammar=grammar)
            out = yield from self._redecode_last()
        quote = tuple((t, 100.0) for t in self.b.tokenize('"')[:1])
        self.closing_call = self.sampler
        settings = self.plan.sampling
        self.sampler = self.b.sampler(dataclasses.replace(settings, logit_bias=settings.logit_bias + quote))
        self.looping_call = None
        return out

    def _grammar_now(self) -> Grammar | None:
        """The grammar the next token follows: none in the thinking; in the answer a call's
        once it opened (or from the start when a call is required), else the answer's own."""
        if not self.ledger.closed or self.boxed is not None:
            return None
        if self.tools is not None and (self.tools.forced or self.call_open):
            return self.tools.grammar
        return self.grammar

    def _call_start(self, prev: int) -> int | None:
        """The char where a call begins in the newest text, when it is one to act on: a call
        opened in the thinking (it will be closed there) or a free answer opening one."""
        if not self._calls_allowed or self.call_open:
            return None
        ledger, fmt = self.ledger, self.tools.format
        if self._thinking_open:
            if not fmt.opener:
                return None
            at = ledger.text.find(fmt.opener, max(0, prev - len(fmt.opener)))
            return at if at >= 0 else None
        if not ledger.closed or self.tools.forced:
            return None
        at = fmt.opens_at(ledger.text[ledger.answer_start :])
        return ledger.answer_start + at if at >= 0 else None

    def _open_call(self, at: int) -> Step:
        """A call begins at char ``at``: take back the tokens from there, close the thinking
        first if the call began inside it, and let the call's grammar write it from the top."""
        in_thinking = self._thinking_open
        self._rollback(self.ledger.token_at(at))
        self.pending = None
        self.call_open = True
        if in_thinking:
            self.call_in_thinking = True
            yield from self.stream.flush(final=True)
            return (yield from self._write(self.e.conclude_text(self.ledger.text)))
        return (yield from self._redecode_last())

    def _answer_hold(self, calls: list[ToolCall] | None = None) -> int | None:
        """The char from which the answer is held back: where its calls begin (they are
        reported as calls, never as text). Once the answer is final (``calls`` given) only
        calls that parse are held, so an answer that is not a call is never lost."""
        ledger = self.ledger
        if not self._calls_allowed or not ledger.closed:
            return None
        start, fmt = ledger.answer_start, self.tools.format
        if calls is not None:
            at = fmt.opens_at(ledger.text[start:])
            return start + at if calls and at >= 0 else None
        if self.tools.forced or self.call_open:
            return start
        return start + fmt.may_open_at(ledger.text[start:])

    def _reply(self) -> tuple[str, list[ToolCall]]:
        """The answer's text and its calls (then the text is what stands before them)."""
        ledger = self.ledger
        if not self._calls_allowed or not ledger.closed:
            return ledger.answer, []
        before, calls = self.tools.format.parse(ledger.text[ledger.answer_start :])
        return (before.strip(), calls) if calls else (ledger.answer, [])

    @property
    def _thinking_open(self) -> bool:
        return not self.ledger.closed and not self.closed_by_runtime

    def _find_cue(self, prev: int) -> CueMatch | None:
        """The last cue ending in the newest token, if it lies inside the thinking."""
        ledger = self.ledger
        if ledger.closed and ledger.think_end < prev:
            return None
        limit = ledger.think_end if ledger.closed else len(ledger.text)
        found = [m for m in self.matcher.matches_ending_after(ledger.text, prev) if m.end <= limit]
        return found[-1] if found else None

    # ---- decisions and exits --------------------------------------------------------
    def _judge(self, match: CueMatch, index: int, feats: np.ndarray | None, *, pending_token: int | None) -> Step:
        """Let the policy judge a finished cue; returns a fresh output row when the main
        sequence had to be decoded again (an exit, or logits lost to a trial), else None."""
        label = cue_label(match.cue)
        cut = self.ledger.token_at(match.start)
        if feats is not None and self.sink is not None:
            self.sink(CueFeatures(label, index, cut, feats))
        policy = self.policy
        decision, trial, tokens, out = None, None, 0, None
        if isinstance(policy, ProbeExit) and feats is not None:
            decision = policy.judge(feats)
        elif isinstance(policy, TrialExit) and policy.wants_trial(index, self.last_trial):
            trial, confidence, tokens = yield from self._trial(cut)
            decision = policy.judge(trial, confidence, self.trials)
            self.trials.append(trial)
            self.last_trial = index
            if pending_token is None:  # the trial's decodes replaced the cue's logits
                out = yield from self._redecode_last()
        if decision is None:
            state = "off" if isinstance(policy, NoExit) else "continue"
            event = CueScored(label, index, None, None, state)
        else:
            event = CueScored(
                label,
                index,
                decision.score,
                decision.threshold,
                "exit" if decision.exits else "continue",
                trial,
                tokens,
            )
        self.cues.append(event)
        yield event
        if decision is not None and decision.exits:
            return (yield from self._exit(match, decision, index, pending_token))
        return out

    def _trial(self, cut: int) -> Step:
        """A trial answer on the branch sequence: (answer text, confidence, tokens)."""
        start = time.perf_counter()
        answer = yield from answer_on_branch(
            self.b, self.seq, self.branch_seq, len(self.plan.prompt) + cut, self.e.exit_text, self.e.think_close
        )
        self.trial_tokens += answer.tokens
        self.trial_seconds += time.perf_counter() - start
        return answer.text, answer.mean_prob, answer.tokens

    def _redecode_last(self) -> Step:
        """Decode the newest token again for its logits (the cache drops it first)."""
        last = self.ledger.tokens[-1]
        self.b.truncate(len(self.b.seqs[self.seq]) - 1, self.seq)
        out = yield BatchItem(self.seq, [last])
        return out

    def _exit(self, match: CueMatch, decision: Decision, index: int, pending_token: int | None) -> Step:
        cut = self.ledger.token_at(match.start)
        if self.plan.measure_savings:
            tail = self.ledger.tokens[cut:] + ([pending_token] if pending_token is not None else [])
            self.resume = (cut, tail, self.sampler.clone())
        self._rollback(cut)
        self.pending = None
        yield from self.stream.flush(final=True)
        self.exit = ExitTaken(cue_label(match.cue), index, decision.score, decision.threshold, self.policy.kind)
        yield self.exit
        return (yield from self._close(boxed=self.plan.exit_style == "boxed"))

    def _close(self, *, boxed: bool) -> Step:
        """Write the exit text (boxed) or the close tag (conclude) after an exit."""
        self.exit_token = len(self.ledger)
        out = yield from self._write(self.e.exit_text_for("boxed" if boxed else "conclude", self.ledger.text))
        if boxed:
            self.sampler = self.b.sampler(self.plan.sampling.greedy)
            self.boxed = BoxedAnswer(
                self.ledger.text[self.ledger.answer_start :] if self.ledger.closed else self.ledger.text
            )
            self.cap = min(self.cap, len(self.ledger) + BOXED_ANSWER_TOKENS)
        return out

    # ---- budgets and loops --------------------------------------------------------------
    def _cut_departures(self) -> tuple[str, ...]:
        """How this reply's thinking ended outside the calibration's conditions (its traces ran
        with no budget, reserve or loop guard): a budget, reserve or loop cut moves the answer."""
        e, plan = self.exit, self.plan
        if e is None or e.policy not in ("budget", "loop"):
            return ()
        if e.policy == "loop":
            return (f"the loop guard closed the thinking at token {e.token_index} (not calibrated)",)
        ceiling = plan.max_tokens - plan.answer_reserve - self.e.conclude_tokens if plan.answer_reserve else None
        if plan.thinking_budget is not None and (ceiling is None or e.token_index < ceiling):
            return (f"the thinking budget ({plan.thinking_budget} tokens) cut the thinking at token {e.token_index}",)
        return (f"the answer reserve of max_tokens {plan.max_tokens} cut the thinking at token {e.token_index}",)

    def _budget_window(self) -> CutWindow | None:
        """Where the thinking must close: at the thinking budget, and before the answer
        reserve (the last thinking token that still leaves room for the close and the answer)."""
        plan = self.plan
        ceiling = plan.max_tokens - plan.answer_reserve - self.e.conclude_tokens if plan.answer_reserve else None
        if plan.thinking_budget is not None:
            return CutWindow.budget(plan.thinking_budget, ceiling=ceiling)
        return CutWindow.budget(ceiling, ceiling=ceiling) if ceiling is not None else None

    def _cut_due(self, token: int) -> bool:
        """Whether the thinking closes before ``token`` (just sampled): the window's first
        sentence or line end at or after its target, or its hard end."""
        w = self.window
        if w is None or not self._thinking_open or len(self.ledger) < w.target:
            return False
        n = len(self.ledger)
        return n >= w.hard or w.natural_at(n, self.ledger.text, self.ledger.peek(token))

    def _window_exit(self, token: int) -> Step:
        """Close the thinking inside the window (a ``budget`` or ``loop`` exit), then answer."""
        ledger, w = self.ledger, self.window
        n = len(ledger)
        cut = n if n < w.hard else w.fallback([*ledger.pieces(), ledger.peek(token)])
        if cut < n:
            self._rollback(cut)
        self.pending = None
        yield from self.stream.flush(final=True)
        self.exit = ExitTaken(self.window_kind, cut, None, None, self.window_kind)
        yield self.exit
        return (yield from self._close(boxed=False))

    def _loops_at(self, token: int) -> bool:
        """Feed the loop guard; a loop in the thinking opens a cut window at once (the thinking
        closes at the next sentence end within one cycle), a loop in the answer ends it (True)."""
        in_thinking = self._thinking_open
        phase = "thinking" if in_thinking else "answer"
        if self.guards is None or phase in self.loops:
            return False
        loop = self.guards[0 if in_thinking else 1].push(token)
        if loop is None:
            return False
        self.loops.append(phase)
        if not in_thinking:
            first_copy_end = len(self.ledger) - (loop.end - loop.start) + loop.period
            if self.call_from is not None and first_copy_end > self.call_from:
                self.looping_call = first_copy_end  # inside a call: take the loop back, close it
            return True
        cycle = self.ledger.tokens[loop.end - loop.period : loop.end]
        self.guards = (self.guards[0], LoopGuard(relapse=cycle))  # the answer must not resume it
        self.window = loop.window(ceiling=self.window.hard if self.window is not None else None)
        self.window_kind = "loop"
        return False

    def _close_unfinished_thinking(self) -> Step:
        """The model ended inside its thinking: close it so that it writes an answer."""
        self.closed_by_runtime = True
        self.pending = None
        yield from self.stream.flush(final=True)
        return (yield from self._write(self.e.conclude_text(self.ledger.text)))

    def _write(self, text: str) -> Step:
        """Append runtime-written text (exit text, closing tag) as generated tokens."""
        tokens = self.b.tokenize(text)
        if not self.b.fits(len(tokens), self.seq):
            raise _ContextFull
        for token in tokens:
            self.ledger.commit(token)
        out = yield BatchItem(self.seq, tokens)
        return out

    def _rollback(self, cut: int) -> None:
        """Forget generated tokens from index ``cut`` on, in the KV cache and in the text."""
        self.b.truncate(len(self.plan.prompt) + cut, self.seq)
        self.ledger.rollback(cut)
        self.stream.rewind()

    # ---- results ----------------------------------------------------------------------
    def _result(
        self, answer: str, calls: list[ToolCall], seconds: float, decode_seconds: float, thinking_seconds: float
    ) -> GenerationResult:
        ledger = self.ledger
        thinking_tokens = self.exit_token if self.exit else (ledger.answer_token if ledger.closed else len(ledger))
        generated = len(ledger)
        policy = self.policy
        departures = (*self.plan.departures, *self._cut_departures())
        finish = "tool_calls" if calls and self.finish_reason == "stop" else self.finish_reason
        return GenerationResult(
            answer=answer,
            thinking=ledger.thinking,
            exit=self.exit,
            cues=tuple(self.cues),
            tokens=TokenCounts(
                len(self.plan.prompt), self.reused, thinking_tokens, generated - thinking_tokens, self.trial_tokens
            ),
            model=self.e.model_name,
            probe=self.e.probe_name,
            policy=policy.describe(),
            guarantee=policy.guarantee and not departures,
            alpha=policy.level if policy.guarantee else None,
            estimate_because=departures if policy.guarantee else (),
            promise=policy.rule.promise if policy.guarantee and policy.rule else None,
            risk=policy.rule.statement if policy.guarantee and policy.rule else None,
            mode=policy.mode,
            exit_style=self.plan.exit_style,
            seconds=round(seconds, 4),
            thinking_seconds=round(thinking_seconds, 4),
            trial_seconds=round(self.trial_seconds, 4),
            finish_reason=finish,
            seed=self.plan.sampling.seed,
            tokens_per_second=round(generated / decode_seconds, 2) if decode_seconds > 0 else 0.0,
            probe_calls=sum(1 for c in self.cues if c.score is not None and c.trial is None),
            closed_by_runtime=self.closed_by_runtime,
            loops=tuple(self.loops),
            tool_calls=tuple(calls),
            tool_call_in_thinking=self.call_in_thinking,
            prompt_ids=tuple(self.plan.prompt),
            token_ids=tuple(ledger.tokens),
        )

    def _measure_savings(self, result: GenerationResult) -> Step:
        """Run the un-exited trajectory from the exit point to its natural end."""
        cut, tail, sampler = self.resume
        b = self.b
        b.truncate(len(self.plan.prompt) + cut, self.seq)
        out = yield BatchItem(self.seq, tail)
        natural = cut + len(tail)
        capped = False
        while True:
            if self.cancelled.is_set():
                return result
            if natural >= self.plan.max_tokens or len(b.seqs[self.seq]) >= b.n_ctx:
                capped = True
                break
            token = b.sample(sampler, out.row)
            if b.is_eog(token):
                break
            out = yield BatchItem(self.seq, [token])
            natural += 1
        used = result.tokens.completion
        yield Savings(natural, natural - used, capped)
        return result
