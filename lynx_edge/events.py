"""Typed events of one generation and the reply they add up to.

``Engine.generate`` yields events as they happen. ``Done`` arrives when the answer is
complete; with ``measure_savings`` a ``Savings`` event may follow it (closing the iterator
after ``Done`` skips that measurement). ``Reply`` folds any stream of them into what a
caller shows or stores (thinking, answer, cues, exit, result, saving), so the CLI, the chat,
the server, the bench and the toolkit read one model instead of each keeping its own tally.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


class Event:
    """Base class: ``to_dict`` gives the wire/log shape with a ``type`` key."""

    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model, with likelier alternatives
    (``top``: (text, logprob) pairs, most likely first)."""

    text: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ThinkingDelta(Event):
    """New thinking text (held back while it might still turn into a cue)."""

    type: ClassVar[str] = "thinking"
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class AnswerDelta(Event):
    """New answer text."""

    type: ClassVar[str] = "answer"
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class CueScored(Event):
    """A cue inside the thinking and what the exit policy made of it.

    ``token_index`` counts generated tokens from 0 and names the token holding the cue's last
    character. ``score``/``threshold`` are None when nothing was scored (exits off, no
    policy, or a training-free policy that skipped its trial here). ``decision`` is "exit",
    "continue" or "off". ``trial`` is the trial answer of a training-free policy.
    """

    type: ClassVar[str] = "cue"
    cue: str
    token_index: int
    score: float | None
    threshold: float | None
    decision: str
    trial: str | None = None
    trial_tokens: int = 0


@dataclass(frozen=True)
class ExitTaken(Event):
    """The thinking was closed here; the answer follows.

    ``policy`` says who closed it: "probe" (LYNX), "deer" or "consistency" (training-free),
    "budget" (the answer needed the remaining tokens).
    """

    type: ClassVar[str] = "exit"
    cue: str
    token_index: int
    score: float | None
    threshold: float | None
    policy: str = "probe"


@dataclass(frozen=True)
class TokenCounts:
    """Tokens of one generation. ``trial`` tokens were decoded on side branches (training-free
    trial answers) and are not part of the output."""

    prompt: int
    cached: int
    thinking: int
    answer: int
    trial: int = 0

    @property
    def completion(self) -> int:
        return self.thinking + self.answer

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "completion": self.completion, "total": self.total}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: the function's name and its arguments (a JSON object)."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    @property
    def arguments_json(self) -> str:
        """The arguments as JSON text (the wire form of every API)."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class GenerationResult:
    """Everything a caller reports about one answer (immutable: a later ``Savings`` event is
    kept beside it by ``Reply``, never written into it)."""

    answer: str
    thinking: str
    exit: ExitTaken | None
    cues: tuple[CueScored, ...]
    tokens: TokenCounts
    model: str
    probe: str | None
    policy: str  # the exit policy in words ("probe smollm2-135m-reasoner", "deer λ=0.95", "none")
    guarantee: bool  # the policy carries a calibrated risk level, and the request stayed inside its conditions
    alpha: float | None
    mode: str | None
    exit_style: str
    seconds: float
    thinking_seconds: float  # from the request to the thinking's close (all of it when it never closed)
    trial_seconds: float
    finish_reason: str
    seed: int
    tokens_per_second: float
    probe_calls: int = 0
    closed_by_runtime: bool = False  # the model stopped inside its thinking; the runtime closed it
    # where the loop guard caught a repetition loop: "thinking" (closed: a loop exit) and/or
    # "answer" (stopped there, finish_reason "stop")
    loops: tuple[str, ...] = ()
    # the calls the answer holds (then ``answer`` is only the text before them), and whether
    # the model began one inside its thinking (the runtime closed the thinking there)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_in_thinking: bool = False
    # a calibrated policy whose request left the card's calibration conditions: why its
    # threshold is an estimate here (then ``guarantee`` is False)
    estimate_because: tuple[str, ...] = ()
    # what the level bounds (agreement: answers that differ from full thinking's; harm: answers
    # full thinking gets right that an exit spoils) and the level in words
    # ("α 0.02 at 90 % confidence (agreement)"); None without a calibrated policy
    promise: str | None = None
    risk: str | None = None
    # the token ids of the prompt and of everything generated after it (thinking kept, exit
    # text, answer), for tools that replay a result; not part of the JSON shape
    prompt_ids: tuple[int, ...] = field(default=(), repr=False)
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    @property
    def exited(self) -> bool:
        return self.exit is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (``lynx-edge run --json``, logs)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("exit", "cues", "tokens", "prompt_ids", "token_ids")}
        data["exited"] = self.exited
        data["exit"] = _plain(self.exit)
        data["cues"] = [_plain(c) for c in self.cues]
        data["tokens"] = self.tokens.to_dict()
        data["estimate_because"] = list(self.estimate_because)
        data["loops"] = list(self.loops)
        return data


def _plain(event: Event | None) -> dict[str, Any] | None:
    return None if event is None else {k: v for k, v in event.to_dict().items() if k != "type"}


@dataclass(frozen=True)
class Done(Event):
    """The answer is complete (or was cancelled: ``result.finish_reason == "cancelled"``)."""

    type: ClassVar[str] = "done"
    result: GenerationResult

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "result": self.result.to_dict()}


@dataclass(frozen=True)
class Savings(Event):
    """Exact saving, measured by running the un-exited trajectory to its natural end.

    ``tokens_saved`` is negative when the exit cost tokens (its answer ran longer than the
    rest of the thinking would have); ``capped`` is True when the un-exited run hit the token
    limit, so the saving is a lower bound of a run that never finished.
    """

    type: ClassVar[str] = "savings"
    natural_tokens: int
    tokens_saved: int
    capped: bool


@dataclass
class Reply:
    """What a stream of events adds up to; ``fold`` takes one event at a time."""

    thinking: str = ""
    answer: str = ""
    cues: list[CueScored] = field(default_factory=list)
    exit: ExitTaken | None = None
    result: GenerationResult | None = None
    savings: Savings | None = None
    answer_logprobs: list[TokenLogprob] = field(default_factory=list)
    thinking_logprobs: list[TokenLogprob] = field(default_factory=list)

    def fold(self, event: Event) -> Event:
        """Take ``event`` into the reply and hand it back (so a loop can fold and render)."""
        if isinstance(event, ThinkingDelta):
            self.thinking += event.text
            self.thinking_logprobs.extend(event.logprobs)
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
            self.answer_logprobs.extend(event.logprobs)
        elif isinstance(event, CueScored):
            self.cues.append(event)
        elif isinstance(event, ExitTaken):
            self.exit = event
        elif isinstance(event, Done):
            self.result = event.result
        elif isinstance(event, Savings):
            self.savings = event
        return event

    @classmethod
    def of(cls, events: Iterable[Event]) -> Reply:
        reply = cls()
        for event in events:
            reply.fold(event)
        return reply

    @property
    def done(self) -> bool:
        return self.result is not None


def result_of(events: Iterable[Event]) -> GenerationResult:
    """Run a generation to its ``Done`` event and return the result (stops there, so no
    savings measurement runs)."""
    for event in events:
        if isinstance(event, Done):
            return event.result
    raise RuntimeError("generation ended without a Done event")
