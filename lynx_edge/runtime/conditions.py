"""The conditions a calibration holds in, and how a request departs from them (pure Python).

A conformal or Learn-then-Test promise is about events exchangeable with the calibration
events: traces of the same model file, sampled the same way, prompted the same way, cut by
the same exit. The probe toolkit records those conditions when it collects traces; the card
carries them; the engine compares every request with them and reports the promise as a
guarantee only when nothing differs (otherwise the threshold is an estimate, and the reports
name what differs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GREEDY_BELOW = 1e-6  # a temperature this low decodes greedily in llama.cpp's sampler chain


@dataclass(frozen=True)
class Conditions:
    """How the calibration traces were made. ``temperature`` of 0 means greedy decoding (and
    then ``top_p`` does not matter); with ``temperature_max`` each trace drew its temperature
    uniformly from [temperature, temperature_max], so the promise covers that whole range."""

    temperature: float
    top_p: float
    exit_style: str
    exit_text: str
    system_prompt: str | None
    user_suffix: str = ""
    top_k: int = 100
    temperature_max: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.temperature_max is None:
            del data["temperature_max"]  # a point temperature: stored as before ranges existed
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conditions:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW and not self.temperature_max

    @property
    def temperatures(self) -> str:
        """The calibrated temperature (or range) in words."""
        if self.temperature_max is None:
            return f"{self.temperature:g}"
        return f"{self.temperature:g}–{self.temperature_max:g}"

    def words(self) -> str:
        """The conditions in a few words (for cards and reports)."""
        sampling = "greedy" if self.greedy else f"temperature {self.temperatures}, top-p {self.top_p:g}"
        system = "the preset's system prompt" if self.system_prompt else "no system prompt"
        return f"{sampling}, {self.exit_style} exit, {system}"

    def covers_temperature(self, temperature: float) -> bool:
        high = self.temperature if self.temperature_max is None else self.temperature_max
        return self.temperature - 1e-6 <= temperature <= high + 1e-6


def conditions_words(conditions: dict[str, Any] | None) -> str:
    """A card's recorded conditions in a few words (or that it recorded none)."""
    if conditions is None:
        return "not recorded (every request: estimate)"
    return Conditions.from_json(conditions).words()


@dataclass(frozen=True)
class RequestConditions:
    """What one request runs with, in the terms of ``Conditions``."""

    temperature: float
    top_p: float
    exit_style: str
    system_prompt: str | None
    top_k: int = 100
    extra_sampling: tuple[str, ...] = ()  # sampler knobs the calibration did not use (penalties, logit bias)
    # what else changes where or how the thinking ends or what the answer is, in words (tools,
    # a JSON schema, earlier turns): calibration traces are single questions answered freely
    answer_shape: tuple[str, ...] = ()
    exit_text: str | None = None  # what an exit writes here (None: not compared)


def departures(calibrated: Conditions, request: RequestConditions) -> list[str]:
    """Each way ``request`` leaves ``calibrated``, in words (empty: the promise applies)."""
    found = []
    greedy = request.temperature < GREEDY_BELOW
    if greedy != calibrated.greedy or (not greedy and not calibrated.covers_temperature(request.temperature)):
        calibrated_at = "greedy" if calibrated.greedy else f"at {calibrated.temperatures}"
        found.append(f"temperature {request.temperature:g} (calibrated {calibrated_at})")
    elif not greedy and abs(request.top_p - calibrated.top_p) > 1e-6:
        found.append(f"top-p {request.top_p:g} (calibrated at {calibrated.top_p:g})")
    elif not greedy and request.top_k != calibrated.top_k:
        found.append(f"top-k {request.top_k} (calibrated at {calibrated.top_k})")
    if request.exit_style != calibrated.exit_style:
        found.append(f"exit style {request.exit_style} (calibrated with {calibrated.exit_style})")
    elif request.exit_text is not None and request.exit_text != calibrated.exit_text:
        found.append(f"exit text {request.exit_text!r} (calibrated with {calibrated.exit_text!r})")
    if request.system_prompt != calibrated.system_prompt:
        found.append("another system prompt than the calibration's")
    found.extend(f"{knob} (not used in calibration)" for knob in request.extra_sampling)
    found.extend(request.answer_shape)
    return found


def answer_shape(*, tools: int, json_schema: bool, earlier_turns: int) -> tuple[str, ...]:
    """The request features the calibration had none of, in words."""
    found = []
    if tools:
        found.append(f"{tools} tool(s) the model may call (calibrated without tools)")
    if json_schema:
        found.append("a JSON schema on the answer (calibrated on free answers)")
    if earlier_turns:
        found.append(f"{earlier_turns} earlier turn(s) in the conversation (calibrated on single questions)")
    return tuple(found)
