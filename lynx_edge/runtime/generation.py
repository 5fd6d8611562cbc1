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
free). Two watchers ride along and decide while the generation acts (it alone edits the
cache): the thinking's limits (``limits.ThinkingLimits``: a budget or the answer reserve closes
the thinking at a sentence or line end, the loop guard closes a thinking that loops or ends an
answer that does) and the tool calls (``tool_use.CallWatcher``).
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
from lynx_edge.runtime.cues import CueMatch, CueMatcher, cue_label
from lynx_edge.runtime.forced_answers import BOXED_ANSWER_TOKENS, BoxedAnswer, Trials, natural_end
from lynx_edge.runtime.ledger import TokenLedger
from lynx_edge.runtime.limits import ThinkingLimits
from lynx_edge.runtime.llama_backend import BatchItem, BatchOut, Grammar, LlamaBackend, Sampler, SamplingSettings
from lynx_edge.runtime.options import ExitStyle
from lynx_edge.runtime.policies import Decision, NoExit, ProbeExit, TrialExit
from lynx_edge.runtime.scheduler import Slot, Step
from lynx_edge.runtime.stream import StreamGate
from lynx_edge.runtime.tool_calls import ToolCall
from lynx_edge.runtime.tool_use import CallWatcher, ToolUse
from lynx_edge.runtime.watcher import Watcher

Policy = NoExit | ProbeExit | TrialExit


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
        self.cancelled = cancelled
        self.sink = feature_sink
        self.policy = plan.policy
        self.ledger = TokenLedger(self.b.piece, engine.think_close)
        self.stream = StreamGate(self.ledger, engine.matcher)
        self.pending: tuple[CueMatch, int, np.ndarray | None] | None = None
        self.cues: list[CueScored] = []
        self.trials = Trials(self.b, slot.main, slot.branch, len(plan.prompt), engine.exit_text, engine.think_close)
        self.exit: ExitTaken | None = None
        self.exit_token = 0
        self.boxed: BoxedAnswer | None = None
        self.cap = plan.max_tokens
        self.resume: tuple[int, list[int], Sampler] | None = None
        self.finish_reason = "stop"
        self.closed_by_runtime = False
        self.grammar: Grammar | None = plan.grammar
        self.reused = 0
        reserve, budget, loop_guard = plan.answer_reserve, plan.thinking_budget, plan.loop_guard
        self.limits = ThinkingLimits(plan.max_tokens, reserve, budget, engine.conclude_tokens, loop_guard=loop_guard)
        self.calls = CallWatcher(plan.tools) if plan.tools is not None else None  # None: no calls (or boxed)
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
                if self.calls is not None and self.calls.running_out(len(self.ledger), self.cap):
                    if self._end_at_last_call():
                        break
                    out = yield from self._shut_call(len(self.ledger), out)
                token = b.sample(self.sampler, out.row, self._grammar_now())
                cut = self.limits.cut(self.ledger, token, self._thinking_open)
                if cut is not None:
                    out = yield from self._window_exit(cut)
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
        answer, calls = self.calls.reply(self.ledger) if self.calls is not None else (self.ledger.answer, [])
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
        calls = self.calls
        restored = calls.quote_written(new) if calls is not None else None
        if restored is not None:  # the string of a call being shut is closed
            self.sampler = restored
        loop_end = self.limits.watch(self.ledger, token, self._thinking_open)
        if loop_end is not None:
            if calls is not None and calls.loop_caught(loop_end) and not self._end_at_last_call():
                return (yield from self._shut_call(loop_end, out)), False
            return out, True
        call_at = calls.opens_at(self.ledger, prev, self._thinking_open) if calls is not None else None
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
        """The char from which the thinking is held back: an undecided cue, or what a watcher
        holds (the part of a cut window already written, a call that may be opening)."""
        holds = [self.pending[0].start] if self.pending else []
        watchers: list[Watcher] = [self.limits] if self.calls is None else [self.limits, self.calls]
        holds += [h for w in watchers if (h := w.hold_from(self.ledger, self._thinking_open)) is not None]
        return min(holds) if holds else None

    # ---- tool calls (decided by the call watcher) ------------------------------------------
    def _end_at_last_call(self) -> bool:
        """End the reply after its last complete call, when it holds one (the calls after it
        would not end in time); False when no call is complete yet."""
        cut = self.calls.end_after_last_call(self.ledger)
        if cut is None:
            return False
        if cut < len(self.ledger):
            self._rollback(cut)
        return True

    def _shut_call(self, cut: int, out: BatchOut) -> Step:
        """Shut a call that would not end — caught looping inside its arguments, or still open
        near the token limit: keep it up to ``cut`` (a loop's first cycle) under a fresh
        grammar, and favour a quote until one is written; the grammar then finishes the call."""
        calls = self.calls
        if cut < len(self.ledger):
            self._rollback(cut)
            calls.restart_grammar(self.ledger.tokens, self.b.grammar, self.b.accept)
            out = yield from self._redecode_last()
        quote = tuple((t, 100.0) for t in self.b.tokenize('"')[:1])
        calls.nudge(self.sampler)
        settings = self.plan.sampling
        self.sampler = self.b.sampler(dataclasses.replace(settings, logit_bias=settings.logit_bias + quote))
        return out

    def _open_call(self, at: int) -> Step:
        """A call begins at char ``at``: take back the tokens from there, close the thinking
        first if the call began inside it, and let the call's grammar write it from the top."""
        in_thinking = self._thinking_open
        self._rollback(self.ledger.token_at(at))
        self.pending = None
        self.calls.opened(in_thinking=in_thinking)
        if in_thinking:
            yield from self.stream.flush(final=True)
            return (yield from self._write(self.e.conclude_text(self.ledger.text)))
        return (yield from self._redecode_last())

    def _answer_hold(self, calls: list[ToolCall] | None = None) -> int | None:
        return self.calls.answer_hold(self.ledger, calls) if self.calls is not None else None

    def _grammar_now(self) -> Grammar | None:
        """The grammar the next token follows: none in the thinking; in the answer a call's
        once it opened (or from the start when a call is required), else the answer's own."""
        if not self.ledger.closed or self.boxed is not None:
            return None
        call_grammar = self.calls.grammar(self.ledger) if self.calls is not None else None
        return call_grammar if call_grammar is not None else self.grammar

    @property
    def _thinking_open(self) -> bool:
        return not self.ledger.closed and not self.closed_by_runtime

    def _find_cue(self, prev: int) -> CueMatch | None:
        """The last cue ending in the newest token, if it lies inside the thinking."""
        ledger = self.ledger
        if ledger.closed and ledger.think_end < prev:
            return None
        limit = ledger.think_end if ledger.closed else len(ledger.text)
        found = [m for m in self.e.matcher.matches_ending_after(ledger.text, prev) if m.end <= limit]
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
        elif isinstance(policy, TrialExit) and policy.wants_trial(index, self.trials.last):
            answer = yield from self.trials.run(cut)
            trial, tokens = answer.text, answer.tokens
            decision = policy.judge(trial, answer.mean_prob, self.trials.answers)
            self.trials.taken(trial, index)
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
        if boxed:  # a greedy answer in \boxed{…}, free of calls
            self.calls = None
            self.sampler = self.b.sampler(self.plan.sampling.greedy)
            self.boxed = BoxedAnswer(
                self.ledger.text[self.ledger.answer_start :] if self.ledger.closed else self.ledger.text
            )
            self.cap = min(self.cap, len(self.ledger) + BOXED_ANSWER_TOKENS)
        return out

    def _window_exit(self, cut: int) -> Step:
        """Close the thinking at token ``cut`` (a ``budget`` or ``loop`` exit), then answer."""
        if cut < len(self.ledger):
            self._rollback(cut)
        self.pending = None
        yield from self.stream.flush(final=True)
        kind = self.limits.kind
        self.exit = ExitTaken(kind, cut, None, None, kind)
        yield self.exit
        return (yield from self._close(boxed=False))

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
        departures = (*self.plan.departures, *self.limits.departures(self.exit))
        finish = "tool_calls" if calls and self.finish_reason == "stop" else self.finish_reason
        return GenerationResult(
            answer=answer,
            thinking=ledger.thinking,
            exit=self.exit,
            cues=tuple(self.cues),
            tokens=TokenCounts(
                len(self.plan.prompt), self.reused, thinking_tokens, generated - thinking_tokens, self.trials.tokens
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
            trial_seconds=round(self.trials.seconds, 4),
            finish_reason=finish,
            seed=self.plan.sampling.seed,
            tokens_per_second=round(generated / decode_seconds, 2) if decode_seconds > 0 else 0.0,
            probe_calls=sum(1 for c in self.cues if c.score is not None and c.trial is None),
            closed_by_runtime=self.closed_by_runtime,
            loops=tuple(self.limits.loops),
            tool_calls=tuple(calls),
            tool_call_in_thinking=self.calls is not None and self.calls.in_thinking,
            prompt_ids=tuple(self.plan.prompt),
            token_ids=tuple(ledger.tokens),
        )

    def _measure_savings(self, result: GenerationResult) -> Step:
        """Run the un-exited trajectory from the exit point to its natural end."""
        cut, tail, sampler = self.resume
        keep = len(self.plan.prompt) + cut
        limit = self.plan.max_tokens - cut
        ended = yield from natural_end(self.b, self.seq, keep, tail, sampler, limit=limit, cancelled=self.cancelled)
        if ended is not None:
            natural = cut + ended[0]
            yield Savings(natural, natural - result.tokens.completion, ended[1])
        return result
