"""One generation's options: the one schema of what a request may ask, validated once.

``GenerationOptions`` is the vocabulary every front end speaks: each field's type, range,
default and help text live here and nowhere else. The CLI derives its flags from these fields
(``cli.options``), each server door maps its wire fields onto them (``serve.wire``), the chat and the
Python API build them directly — and whoever builds one is the edge where it is checked, once:
an out-of-range value is a ``SettingError`` that names the field (``.field``), so the CLI can
point at its flag and the server at its parameter. ``Engine.plan`` adds only the checks that
need the model (context size, vocabulary, whether a card serves the risk level).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lynx_edge.errors import SettingError

Mode = Literal["per-cue", "per-answer"]
# What a risk level bounds. agreement: the reply's answer differs from the one full thinking
# would give (needs no gold answer); harm: an answer full thinking gets right is spoilt.
Promise = Literal["agreement", "harm"]
PROMISES: tuple[Promise, ...] = get_args(Promise)
ExitStyle = Literal["conclude", "boxed"]
ExitPolicyName = Literal["auto", "none", "probe", "deer", "consistency"]
MAX_TOP_LOGPROBS = 20
MAX_PARALLEL_CALLS = 8  # calls one answer may hold when parallel calls are allowed
TOOL_CHOICES = ("auto", "none", "required")
# The effort words apps send ("think harder", "think less"), as risk levels: more effort, a
# stricter level. "max" turns early exit off and "none" the thinking; every door and the chat
# read them here, and a card serves the largest calibrated level at or below each.
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORT_ALPHA = {"minimal": 0.3, "low": 0.2, "medium": 0.1, "high": 0.05, "xhigh": 0.02}


def effort_asks(effort: str | None, alpha: float | None) -> tuple[bool, float | None]:
    """What an effort word asks of early exit: whether it runs ("max" thinks to the end) and
    the risk level (the word's own, else ``alpha``). The doors and the chat read efforts here."""
    return effort != "max", EFFORT_ALPHA.get(effort or "", alpha)


class FunctionTool(BaseModel):
    """A function the model may call: its name, what it does, and its arguments' JSON schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


def _field(description: str, default: Any = None, *, example: str | None = None, **limits: float) -> Any:
    """A field with its help text and, for a bad value, the example a message suggests."""
    extra = {"example": example} if example is not None else None
    return Field(default, description=description, json_schema_extra=extra, **limits)


class GenerationOptions(BaseModel):
    """How to answer one request. ``None`` fields take the model preset's (or probe's) default.

    ``exit`` picks who may close the thinking early: the probe (LYNX, with a calibrated risk
    level), a training-free trial policy (``deer`` / ``consistency``, no guarantee), ``none``
    (the plain loop: the baseline), or ``auto`` (the probe when the model has one, else the
    training-free default).
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    max_tokens: int | None = _field("Cap on thinking + answer tokens (default: the preset's).", ge=1, example="256")
    temperature: float | None = _field(
        "Sampling temperature; 0 is greedy (default: the preset's).", ge=0, le=2, example="0.6"
    )
    top_p: float | None = _field("Nucleus probability (default: the preset's).", gt=0, le=1, example="0.95")
    top_k: int = _field("Sample among this many likeliest tokens (0: all).", 100, ge=0, example="100")
    seed: int | None = _field("Sampling seed (default: random, reported in --json).")
    exit: ExitPolicyName = _field(
        "Who may close the thinking early. auto: the probe when the model has one, else the training-free "
        "default; none: never exit.",
        "auto",
    )
    alpha: float | None = _field(
        "Risk level in (0, 1): the calibrated entry at or below it is used (default: the probe's).",
        gt=0,
        lt=1,
        example="0.1",
    )
    mode: Mode | None = _field("Which calibration to use (default: per-answer when the probe has it).")
    promise: Promise | None = _field(
        "What the risk level bounds. agreement: answers that differ from full thinking's; harm: answers "
        "full thinking gets right that an exit spoils (default: the probe's)."
    )
    trial_level: float | None = _field(
        "DEER's confidence λ, or consistency's run length k (training-free exits).", gt=0, example="0.95"
    )
    exit_style: ExitStyle = _field(
        "conclude: close the thinking, the model answers; boxed: greedy \\boxed{} answer.", "conclude"
    )
    measure_savings: bool = _field(
        "After an exit, run the un-exited trajectory to its end and report the exact saving.", False
    )
    think: bool = _field("False: close the thinking at once (the template's own switch where it has one).", True)
    json_schema: dict[str, Any] | None = _field(
        "The answer (not the thinking) must be JSON valid against this schema; {'type': 'object'} for any object."
    )
    answer_reserve: int | None = _field(
        "Tokens of max_tokens kept for the answer: the thinking closes in time, at a sentence end "
        "(a budget exit). Default: 64 or a quarter of the limit, whichever is smaller; 0: off.",
        ge=0,
        example="64",
    )
    thinking_budget: int | None = _field(
        "Close the thinking after about this many tokens, at the next sentence or line end (a budget "
        "exit); LYNX may exit earlier. Default: no budget beyond max_tokens.",
        ge=1,
        example="256",
    )
    loop_guard: bool = _field(
        "Close a thinking that repeats itself in a loop and answer (a loop exit); stop an answer that loops.",
        True,
    )
    logprobs: bool = _field("Report the log-probability of each answer token.", False)
    top_logprobs: int = _field(
        "Log-probabilities of the answer tokens, with this many alternatives.", 0, ge=0, le=MAX_TOP_LOGPROBS
    )
    frequency_penalty: float = _field("Penalise tokens by how often they appeared.", 0.0, ge=-2, le=2)
    presence_penalty: float = _field("Penalise tokens that appeared at all.", 0.0, ge=-2, le=2)
    repeat_penalty: float = _field(
        "Divide a repeated token's logit by this (llama.cpp's and Ollama's penalty; 1: off).", 1.0, gt=0, le=2
    )
    logit_bias: tuple[tuple[int, Annotated[float, Field(ge=-100, le=100)]], ...] = _field(
        "TOKEN=BIAS pairs added to those tokens' logits (bias in [-100, 100]).", ()
    )

    tools: tuple[FunctionTool, ...] = _field(
        "Functions the model may call after its thinking (their arguments follow each one's schema).", ()
    )
    tool_choice: str = _field(
        "auto: an answer or calls; none: no calls; required: at least one call; or a tool's name: call it.",
        "auto",
        example="auto",
    )
    parallel_tool_calls: bool = _field(f"Let one answer hold up to {MAX_PARALLEL_CALLS} calls (else one).", True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _setting_error(exc) from None

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """A {token: bias} mapping (the wire's shape) or pairs, as a tuple of pairs."""
        if isinstance(value, Mapping):
            value = list(value.items())
        if isinstance(value, (list, tuple)):
            return tuple(tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in value)
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_list(cls, value: Any) -> Any:
        """A list (the wire's shape) as a tuple."""
        return tuple(value) if isinstance(value, list) else value

    @field_validator(
        "temperature", "top_p", "trial_level", "alpha", "frequency_penalty", "presence_penalty", "repeat_penalty"
    )
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("not finite")
        return value

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> GenerationOptions:
        names = [t.name for t in self.tools]
        if len(set(names)) < len(names):
            raise ValueError("tools: two tools share a name; give each its own")
        if self.tool_choice not in (*TOOL_CHOICES, *names):
            raise ValueError(
                f"tool_choice: {self.tool_choice!r} is neither {', '.join(TOOL_CHOICES)} nor a tool's name "
                f"({', '.join(names) or 'no tools given'})"
            )
        if self.tool_choice != "none" and self.tool_choice != "auto" and not names:
            raise ValueError("tool_choice: a call is required but no tools are given; pass tools")
        return self

    @property
    def calls_forced(self) -> bool:
        """Whether the answer must be a call (``required`` or a named tool)."""
        return bool(self.tools) and self.tool_choice not in ("auto", "none")

    @property
    def callable_tools(self) -> tuple[FunctionTool, ...]:
        """The tools a call may name under ``tool_choice``."""
        if self.tool_choice == "none":
            return ()
        return tuple(t for t in self.tools if self.tool_choice in (*TOOL_CHOICES, t.name))

    def but(self, **changes: object) -> GenerationOptions:
        """A copy with ``changes`` (validated again)."""
        return GenerationOptions(**{**self.model_dump(), **changes})


def field_type(name: str) -> Any:
    """The type field ``name`` holds when set (``int`` for ``int | None``, the ``Literal`` of
    a choice): what a flag parses and what a message says it takes."""
    ann = GenerationOptions.model_fields[name].annotation
    kinds = get_args(ann) if get_origin(ann) in (Union, UnionType) else (ann,)
    return next(k for k in kinds if k is not type(None))


def expects(name: str) -> str:
    """What field ``name`` accepts, in words ("a number in (0, 1)", "one of a, b")."""
    info = GenerationOptions.model_fields[name]
    kind = field_type(name)
    if get_origin(kind) is Literal:
        return f"one of {', '.join(get_args(kind))}"
    if name == "logit_bias":
        return "TOKEN=BIAS pairs with a bias in [-100, 100]"
    if kind is bool:
        return "true or false"
    if get_origin(kind) is dict:
        return "a JSON schema object"
    low = high = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = f"[{m.ge:g}"
        elif isinstance(m, annotated_types.Gt):
            low = f"({m.gt:g}"
        elif isinstance(m, annotated_types.Le):
            high = f"{m.le:g}]"
        elif isinstance(m, annotated_types.Lt):
            high = f"{m.lt:g})"
    kind = "an integer" if kind is int else "a number"
    if low and high:
        return f"{kind} in {low}, {high}"
    if low:
        return f"{kind} {'≥' if low[0] == '[' else '>'} {low[1:]}"
    return kind


def _setting_error(exc: ValidationError) -> SettingError:
    """One line for the first bad field: what it accepts, what it got, what to pass."""
    error = exc.errors()[0]
    loc = error["loc"]
    if not loc:  # a check across fields says which field it is about first
        message = str(error["msg"]).removeprefix("Value error, ")
        return SettingError(message, field=message.split(":")[0])
    name = str(loc[0])
    if name == "tools":
        where = ".".join(str(part) for part in loc)
        return SettingError(
            f"{where}: {error['msg']}; each tool is {{name, description, parameters}} with a name of "
            "letters, digits, '_', '.' or '-'",
            field="tools",
        )
    if name not in GenerationOptions.model_fields:
        return SettingError(f"unknown option {name!r}", field=name)
    got = error.get("input")
    extra = GenerationOptions.model_fields[name].json_schema_extra or {}
    hint = f": pass e.g. {name}={extra['example']}" if isinstance(extra, dict) and "example" in extra else ""
    return SettingError(f"{name} must be {expects(name)}, got {got!r}{hint}", field=name)
