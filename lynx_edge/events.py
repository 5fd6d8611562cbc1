"""Typed events of one generation, shared by the CLI, the chat, the server and the tests.

``Engine.generate`` yields them as they happen. ``Done`` arrives when the answer is
complete; with ``measure_savings`` a ``Savings`` event may follow it (closing the iterator
after ``Done`` skips that measurement).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


class Event:
    """Base class: ``to_dict`` gives the wire/log shape with a ``type`` key."""

    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class ThinkingDelta(Event):
    """New thinking text (held back while it might still turn into a cue)."""

    type: ClassVar[str] = "thinking"
    text: str


@dataclass(frozen=True)
class AnswerDelta(Event):
    """New answer text."""

    type: ClassVar[str] = "answer"
    text: str


@dataclass(frozen=True)
class CueScored(Event):
    """A cue inside the thinking and what the probe made of it.

    ``token_index`` counts generated tokens from 0 and names the token holding the cue's last
    character. ``score``/``threshold`` are None when no probe ran (LYNX off, or no probe).
    ``decision`` is "exit", "continue" or "off".
    """

    type: ClassVar[str] = "cue"
    cue: str
    token_index: int
    score: float | None
    threshold: float | None
    decision: str


@dataclass(frozen=True)
class ExitTaken(Event):
    """The thinking was cut at this cue; the answer follows."""

    type: ClassVar[str] = "exit"
    cue: str
    token_index: int
    score: float
    threshold: float


@dataclass
class GenerationResult:
    """Everything a caller reports about one answer."""

    answer: str
    thinking: str
    exited: bool
    exit: dict[str, Any] | None
    cues: list[dict[str, Any]]
    tokens: dict[str, int]
    model: str
    probe: str | None
    alpha: float | None
    seconds: float
    finish_reason: str
    seed: int
    tokens_per_second: float
    probe_calls: int = 0
    tokens_saved: int | None = None
    natural_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Done(Event):
    """The answer is complete (or was cancelled: ``result.finish_reason == "cancelled"``)."""

    type: ClassVar[str] = "done"
    result: GenerationResult


def result_of(events: Iterable[Event]) -> GenerationResult:
    """Run a generation to its ``Done`` event and return the result (stops there, so no
    savings measurement runs)."""
    for event in events:
        if isinstance(event, Done):
            return event.result
    raise RuntimeError("generation ended without a Done event")


@dataclass(frozen=True)
class Savings(Event):
    """Exact saving, measured by running the un-exited trajectory to its natural end.

    ``capped`` is True when that trajectory hit the token limit, so the saving is a lower bound.
    """

    type: ClassVar[str] = "savings"
    natural_tokens: int
    tokens_saved: int
    capped: bool
