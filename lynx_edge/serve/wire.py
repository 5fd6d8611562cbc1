"""What every door of the server shares: one request in the engine's terms (``Ask``), the
errors a client caused, the thinking a request asks for, lynx-edge's own fields, stop strings,
and how a door writes a reply (``Writer``).

Each door (OpenAI chat, OpenAI Responses, Anthropic Messages, Ollama) parses its own body into
an ``Ask`` and writes the engine's events back in its own shapes; everything between — the
queue, the generation, stop strings, disconnects — is the same code for all of them. No HTTP here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from lynx_edge.errors import SettingError
from lynx_edge.events import AnswerDelta, Done, Reply, ThinkingDelta, TokenLogprob
from lynx_edge.runtime.options import Effort, GenerationOptions, effort_asks
from lynx_edge.runtime.rules import PROMISE_SENTENCES

log = logging.getLogger("lynx_edge.serve")

LYNX_FIELDS = ("alpha", "exit", "answer_reserve", "measure_savings", "loop_guard", "exit_style", "promise")
Number = StrictFloat | StrictInt
Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    """An error the client caused or must handle: its HTTP status, the parameter at fault and
    a machine-readable code; each door writes it in its API's own error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind


def error_body(error: ApiError) -> dict[str, Any]:
    """OpenAI's error shape (both OpenAI doors, and the server's own errors)."""
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event (``event:`` named for the APIs that name theirs)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def logprob_entries(items: list[TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content[]`` entries."""
    return [
        {
            "token": lp.text,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in lp.top],
        }
        for lp in items
    ]


def last_turn_check(chat: list[dict[str, Any]], message: str, param: str) -> None:
    """lynx-edge answers a turn; it does not continue a prefilled assistant turn: a 400 naming
    the door's own field when the conversation ends with one (or is empty)."""
    if not chat or chat[-1]["role"] == "assistant":
        raise ApiError(400, message, param=param, code="invalid_value")


def tool_fields(tools: list[dict[str, Any]], choice: str | None, parallel: bool) -> dict[str, Any]:
    """A door's ``tools``, ``tool_choice`` (a mode, or the name of the tool to call) and
    parallel calls, in the options' terms."""
    return {"tools": tools, "tool_choice": choice or "auto", "parallel_tool_calls": parallel}


def unsupported(name: str, what: str = "lynx-edge") -> ApiError:
    return ApiError(
        400,
        f"'{name}' is not supported by {what}: send the request without it",
        param=name,
        code="unsupported_parameter",
    )


class LynxOptions(BaseModel):
    """lynx-edge's own request fields (``extra_body={"lynx": {...}}`` in the official clients),
    the same on every door."""

    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool = True
    alpha: Number | None = None
    exit: StrictStr | None = None
    measure_savings: StrictBool = False
    answer_reserve: StrictInt | None = None
    loop_guard: StrictBool | None = None
    exit_style: StrictStr | None = None
    promise: StrictStr | None = None


class Reasoning(BaseModel):
    """OpenRouter's ``reasoning`` object (the chat door), and the Responses API's."""

    model_config = ConfigDict(extra="ignore")
    effort: Effort | None = None
    max_tokens: StrictInt | None = None
    exclude: StrictBool = False
    enabled: StrictBool | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # the Responses API's


def reasoning_summary(thinking: str, kind: str | None) -> str | None:
    """The reasoning summary a client asked for, by a stated rule (a local model does not
    write a second text to summarise its first): ``auto`` and ``detailed`` give the whole
    thinking; ``concise`` its last paragraph, where the model states what it concluded.
    None when no summary was asked for or there was no thinking."""
    text = thinking.strip()
    if kind is None or not text:
        return None
    if kind == "concise":
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        return paragraphs[-1]
    return text


class ThinkingAsked(BaseModel):
    """What a request's thinking fields ask for, in one vocabulary: whether to think, a budget,
    an effort word, and whether the thinking is shown (it runs either way)."""

    think: bool = True
    budget: int | None = None
    effort: Effort | None = None
    exclude: bool = False


@dataclass(frozen=True)
class Served:
    """What a door may need to know of the model it serves."""

    name: str
    n_ctx: int
    thinks: bool = True  # a model that does not think has no thinking to ask for


@dataclass(frozen=True)
class Ask:
    """One request in the engine's terms, whichever door it came through."""

    messages: list[dict[str, Any]]
    options: GenerationOptions
    stops: list[str]
    stream: bool
    model: str | None
    show_thinking: bool = True


def call_arguments(text: str | None, where: str) -> dict[str, Any]:
    """An earlier call's arguments, sent back as JSON text; a 400 naming ``where`` when they
    are not JSON."""
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        raise ApiError(
            400,
            f"'{where}': the call's arguments are not JSON; send them as the JSON text the call returned",
            param=where,
            code="invalid_value",
        ) from None


def generation_options(
    defaults: GenerationOptions,
    asked: ThinkingAsked,
    lynx: LynxOptions | None,
    wire_names: Mapping[str, str],
    **sampling: Any,
) -> GenerationOptions:
    """A request's options over the server's ``defaults`` (its --alpha and --mode): the effort
    word picks the risk level unless ``lynx.alpha`` does; every value's range is checked by the
    options' schema, and a bad one is a 400 naming the request's own parameter
    (``wire_names`` maps option fields to it) and the message says that name too."""
    lynx = lynx or LynxOptions()
    exits, effort_alpha = effort_asks(asked.effort, defaults.alpha)
    alpha = lynx.alpha if lynx.alpha is not None else effort_alpha
    exit_policy = "none" if not lynx.enabled or not exits else (lynx.exit or defaults.exit)
    try:
        return defaults.but(
            exit=exit_policy,
            alpha=None if alpha is None or exit_policy == "none" else alpha,
            measure_savings=lynx.measure_savings,
            think=asked.think,
            thinking_budget=asked.budget if asked.think and asked.budget is not None else defaults.thinking_budget,
            loop_guard=defaults.loop_guard if lynx.loop_guard is None else lynx.loop_guard,
            exit_style=lynx.exit_style or defaults.exit_style,
            promise=lynx.promise or defaults.promise,
            answer_reserve=defaults.answer_reserve if lynx.answer_reserve is None else lynx.answer_reserve,
            **sampling,
        )
    except SettingError as exc:
        field = exc.field or ""
        param = f"lynx.{field}" if field in LYNX_FIELDS else wire_names.get(field, field)
        message = str(exc)
        if field and param != field and message.startswith(field):
            message = param + message[len(field) :]
        raise ApiError(400, message, param=param, code="invalid_value") from None


def validate(model: type[Model], body: Any) -> Model:
    """``body`` as ``model``; a 400 naming the first bad field otherwise."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", param="body", code="invalid_type")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        raise _as_api_error(exc) from None
    extra = sorted(request.model_extra or {})
    if extra:
        log.debug("ignoring unknown request fields: %s", ", ".join(extra))
    return request


def refuse_present(body: Mapping[str, Any], names: tuple[str, ...], what: str = "lynx-edge") -> None:
    """A 400 for the first of ``names`` the body sets to something (tools, images, …)."""
    for name in names:
        if body.get(name) not in (None, [], {}, False, ""):
            raise unsupported(name, what)


def _as_api_error(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming the field (``messages[0].content``)."""
    error = exc.errors()[0]
    wrappers = ("function-", "list[", "constrained-", "json-or", "literal[", "union[", "tagged-union[")
    param = ""
    for part in error["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not str(part).startswith(wrappers) and not str(part)[:1].isupper() and part not in _TYPE_NAMES:
            param += f".{part}" if param else str(part)
    kind = error["type"]
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    return ApiError(400, f"'{param or 'body'}': {error['msg']}", param=param or "body", code=code)


_TYPE_NAMES = {"str", "float", "int", "bool", "list", "dict"}


class StopFilter:
    """Cuts streamed answer text at the first stop string, never letting part of one out."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the answer

    def feed(self, text: str) -> str:
        """Text that is safe to send now (empty once stopped)."""
        if self.stopped:
            return ""
        self.held += text
        hits = [(i, s) for s in self.stops if (i := self.held.find(s)) >= 0]
        if hits:
            at, self.matched = min(hits)
            self.stopped = True
            out, self.held = self.held[:at], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(out) :]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


@dataclass
class Piece:
    """What one engine event adds to the reply, as a door writes it."""

    thinking: str = ""
    answer: str = ""
    thinking_logprobs: tuple[TokenLogprob, ...] = ()
    answer_logprobs: tuple[TokenLogprob, ...] = ()


class Collected:
    """A job's reply so far, with the answer cut at stop strings."""

    def __init__(self, stops: list[str]) -> None:
        self.reply = Reply()
        self.stop = StopFilter(stops)
        self.answer = ""
        self.error: BaseException | None = None

    def take(self, item: Any) -> Piece:
        if isinstance(item, BaseException):
            self.error = item
            return Piece()
        self.reply.fold(item)
        if isinstance(item, ThinkingDelta):
            return Piece(thinking=item.text, thinking_logprobs=item.logprobs)
        if isinstance(item, AnswerDelta):
            text = self.stop.feed(item.text)
            self.answer += text
            return Piece(answer=text, answer_logprobs=item.logprobs if text else ())
        if isinstance(item, Done):
            tail = self.stop.flush()
            self.answer += tail
            return Piece(answer=tail)
        return Piece()

    @property
    def length_cut(self) -> bool:
        """The reply ended at the token limit (not at its end or a stop string)."""
        result = self.reply.result
        return not self.stop.stopped and result is not None and result.finish_reason == "length"


class Writer(Protocol):
    """How one door writes one reply: the frames of a stream, or the whole response."""

    media_type: str

    def opening(self) -> list[str]: ...

    def thinking(self, piece: Piece) -> list[str]: ...

    def keepalive(self) -> list[str]:
        """Frames while the thinking runs unseen (a client that does not show it still hears
        the stream is alive); [] where the API has no such frame."""
        ...

    def answer(self, piece: Piece) -> list[str]: ...

    def closing(self, got: Collected) -> list[str]: ...

    def failed(self, error: ApiError) -> list[str]: ...

    def response(self, got: Collected) -> dict[str, Any]: ...


def lynx_stats(reply: Reply) -> dict[str, Any]:
    """The ``lynx`` object every door adds to its last chunk / response: which policy ran, and
    what it did."""
    result = reply.result
    exit_ = result.exit
    last = [c.threshold for c in result.cues if c.threshold is not None]
    return {
        "exited": result.exited,
        "exit_policy": exit_.policy if exit_ else None,
        "exit_cue": exit_.cue if exit_ else None,
        "exit_score": exit_.score if exit_ else None,
        "threshold": exit_.threshold if exit_ else (last[-1] if last else None),
        "policy": result.policy,
        "guarantee": result.guarantee,
        "estimate_because": list(result.estimate_because),
        "alpha": result.alpha,
        "mode": result.mode,
        "promise": result.promise,
        "risk": result.risk,
        "promise_statement": PROMISE_SENTENCES.get(result.promise or ""),
        "probe": result.probe,
        "probe_calls": result.probe_calls,
        "trial_tokens": result.tokens.trial,
        "loops": list(result.loops),
        "tool_call_in_thinking": result.tool_call_in_thinking,
        "tokens_saved": reply.savings.tokens_saved if reply.savings else None,
        "saving_is_lower_bound": reply.savings.capped if reply.savings else None,
    }
