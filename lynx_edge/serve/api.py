"""The OpenAI chat-completions wire format: the request schema and the response shapes.

Requests are parsed by pydantic models (unknown fields are accepted, logged at debug level,
and ignored; the fields lynx-edge cannot honour are refused with a 400 that names them) and
turned into one ``GenerationOptions``, whose schema checks every value's range once: a bad
value is a 400 naming the request's own parameter. Responses are built only from a ``Reply``
(the folded events), so the server shows what the CLI and the chat show. No HTTP here.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from lynx_edge.errors import SettingError
from lynx_edge.events import GenerationResult, Reply, TokenLogprob
from lynx_edge.runtime.options import GenerationOptions

log = logging.getLogger("lynx_edge.serve")

# less effort = more risk = earlier exits; "none" skips the thinking, "max" thinks to the end
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORT_ALPHA = {"minimal": 0.3, "low": 0.2, "medium": 0.1, "high": 0.05, "xhigh": 0.02}
MAX_STOP = 4
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
)
IGNORED = ("user", "metadata", "store", "service_tier")


class ApiError(Exception):
    """An error the client caused or must handle, with its HTTP status and OpenAI fields."""

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

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


Number = StrictFloat | StrictInt


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: StrictStr | list[TextPart] | None = None

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class LynxOptions(BaseModel):
    """lynx-edge's own request fields (``extra_body={"lynx": {...}}`` in the openai client)."""

    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool = True
    alpha: Number | None = None
    exit: StrictStr | None = None
    measure_savings: StrictBool = False
    answer_reserve: StrictInt | None = None
    loop_guard: StrictBool | None = None
    exit_style: StrictStr | None = None


class Reasoning(BaseModel):
    """OpenRouter's ``reasoning`` object."""

    model_config = ConfigDict(extra="ignore")
    effort: Effort | None = None
    max_tokens: StrictInt | None = None
    exclude: StrictBool = False
    enabled: StrictBool | None = None


class Thinking(BaseModel):
    """Anthropic's ``thinking`` object, as OpenAI-compatible clients pass it through."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["enabled", "disabled", "adaptive"] = "enabled"
    budget_tokens: StrictInt | None = None


class TemplateKwargs(BaseModel):
    """``chat_template_kwargs`` (llama-server, vLLM): only the thinking switch is read."""

    model_config = ConfigDict(extra="allow")
    enable_thinking: StrictBool | None = None


class ThinkingAsked(BaseModel):
    """What a request's thinking dialects ask for, merged: whether to think, a budget, an
    effort, whether to show the reasoning. Each dialect is read here and nowhere else."""

    think: bool = True
    budget: int | None = None
    effort: Effort | None = None
    exclude: bool = False


class ChatRequest(BaseModel):
    """A chat-completions body (the fields lynx-edge reads)."""

    model_config = ConfigDict(extra="allow")
    messages: Annotated[list[Message], Field(min_length=1)]
    model: StrictStr | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    seed: StrictInt | None = None
    stop: StrictStr | Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=MAX_STOP)] | None = (
        None
    )
    n: Literal[1] = 1
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    frequency_penalty: Number = 0.0
    presence_penalty: Number = 0.0
    logit_bias: dict[StrictStr, Number] | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Effort | None = None
    reasoning: Reasoning | None = None
    thinking: Thinking | None = None
    thinking_budget_tokens: StrictInt | None = None
    reasoning_budget_tokens: StrictInt | None = None
    chat_template_kwargs: TemplateKwargs | None = None
    lynx: LynxOptions | None = None

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    def thinking_asked(self) -> ThinkingAsked:
        """The thinking every dialect asks for: off if any off-switch is set (or a budget is
        0), the smallest budget any field names (clients send several, since servers differ),
        the effort word of ``reasoning_effort`` or ``reasoning.effort``."""
        reasoning, thinking = self.reasoning or Reasoning(), self.thinking or Thinking()
        budgets = {
            "thinking_budget_tokens": self.thinking_budget_tokens,
            "reasoning_budget_tokens": self.reasoning_budget_tokens,
            "reasoning.max_tokens": reasoning.max_tokens,
            "thinking.budget_tokens": thinking.budget_tokens,
        }
        for name, value in budgets.items():
            if value is not None and value < 0:
                raise ApiError(
                    400, f"'{name}' must be 0 (no thinking) or more, got {value}", param=name, code="invalid_value"
                )
        given = [v for v in budgets.values() if v is not None]
        effort = self.reasoning_effort or reasoning.effort
        off = (
            effort == "none"
            or reasoning.enabled is False
            or thinking.type == "disabled"
            or (self.chat_template_kwargs is not None and self.chat_template_kwargs.enable_thinking is False)
            or 0 in given
        )
        return ThinkingAsked(
            think=not off, budget=min(given) if given else None, effort=effort, exclude=reasoning.exclude
        )

    def chat(self) -> list[dict[str, str]]:
        return [m.plain() for m in self.messages]

    def options(self, defaults: GenerationOptions | None = None) -> GenerationOptions:
        """The request in the engine's terms, over the server's ``defaults`` (its --alpha and
        --mode); each value's range is checked here, by the options' schema."""
        defaults = defaults or GenerationOptions()
        lynx = self.lynx or LynxOptions()
        asked = self.thinking_asked()
        alpha = lynx.alpha if lynx.alpha is not None else EFFORT_ALPHA.get(asked.effort or "", defaults.alpha)
        exit_policy = "none" if not lynx.enabled or asked.effort == "max" else (lynx.exit or defaults.exit)
        json_schema = None
        if self.wants_json:
            spec = self.response_format.json_schema
            json_schema = spec.schema_ if self.response_format.type == "json_schema" and spec else {"type": "object"}
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise ApiError(
                400,
                "'logit_bias' keys must be token ids (integers as strings)",
                param="logit_bias",
                code="invalid_value",
            ) from None
        try:
            return defaults.but(
                max_tokens=self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
                exit=exit_policy,
                alpha=None if alpha is None or exit_policy == "none" else alpha,
                measure_savings=lynx.measure_savings,
                think=asked.think,
                thinking_budget=asked.budget if asked.think and asked.budget is not None else defaults.thinking_budget,
                loop_guard=defaults.loop_guard if lynx.loop_guard is None else lynx.loop_guard,
                exit_style=lynx.exit_style or defaults.exit_style,
                json_schema=json_schema,
                answer_reserve=defaults.answer_reserve if lynx.answer_reserve is None else lynx.answer_reserve,
                logprobs=self.logprobs,
                top_logprobs=self.top_logprobs or 0,
                frequency_penalty=self.frequency_penalty,
                presence_penalty=self.presence_penalty,
                logit_bias=bias,
            )
        except SettingError as exc:
            raise ApiError(400, str(exc), param=self._wire_name(exc.field), code="invalid_value") from None

    def _wire_name(self, field: str | None) -> str | None:
        """The request parameter that carried option ``field``."""
        if field in ("alpha", "exit", "answer_reserve", "measure_savings", "loop_guard", "exit_style"):
            return f"lynx.{field}"
        if field == "max_tokens":
            return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        if field == "json_schema":
            return "response_format"
        return field


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat-completions body; raises ``ApiError`` (400) naming the bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", param="body", code="invalid_type")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, [], {}, False):
            raise ApiError(
                400,
                f"'{name}' is not supported by lynx-edge: send the request without it",
                param=name,
                code="unsupported_parameter",
            )
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _as_api_error(exc) from None
    extra = sorted(set(request.model_extra or {}) - set(IGNORED))
    if extra:
        log.debug("ignoring unknown request fields: %s", ", ".join(extra))
    if request.messages[-1].role == "assistant":
        raise ApiError(
            400, "the last message must come from the user (or system)", param="messages", code="invalid_value"
        )
    return request


def _as_api_error(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, as an OpenAI 400 naming the field."""
    error = exc.errors()[0]
    wrappers = ("function-", "list[", "constrained-", "json-or", "literal[", "union[")
    types = {"str", "float", "int", "bool", "TextPart", "list", "dict"}
    param = ""
    for part in error["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not str(part).startswith(wrappers) and part not in types:
            param += f".{part}" if param else str(part)
    kind = error["type"]
    code = (
        "invalid_type"
        if kind.endswith("_type") or kind in ("model_type", "dict_type", "list_type", "string_type")
        else "invalid_value"
    )
    return ApiError(400, f"'{param or 'body'}': {error['msg']}", param=param or "body", code=code)


class StopFilter:
    """Cuts streamed answer text at the first stop string, never letting part of one out."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to send now (empty once stopped)."""
        if self.stopped:
            return ""
        self.held += text
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.held = self.held[: min(hits)], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(out) :]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


def usage(result: GenerationResult) -> dict[str, Any]:
    t = result.tokens
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.total,
        "prompt_tokens_details": {"cached_tokens": t.cached},
        "completion_tokens_details": {"reasoning_tokens": t.thinking},
    }


def lynx_stats(reply: Reply) -> dict[str, Any]:
    """The ``lynx`` object on the final chunk / response: which policy ran, and what it did."""
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
        "probe": result.probe,
        "probe_calls": result.probe_calls,
        "trial_tokens": result.tokens.trial,
        "loops": list(result.loops),
        "tokens_saved": reply.savings.tokens_saved if reply.savings else None,
        "saving_is_lower_bound": reply.savings.capped if reply.savings else None,
    }


def finish_reason(result: GenerationResult, stopped: bool) -> str:
    if stopped:
        return "stop"
    return "length" if result.finish_reason == "length" else "stop"


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


class Completion:
    """Ids and shapes shared by the chunks and the response of one completion."""

    def __init__(self, model: str, *, logprobs: bool = False, show_reasoning: bool = True) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.logprobs = logprobs
        self.show_reasoning = show_reasoning  # False: reasoning.exclude (the thinking still runs)

    def _logprobs(self, answer: list[TokenLogprob], reasoning: list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        shown = {"reasoning_content": logprob_entries(reasoning)} if self.show_reasoning else {}
        return {"content": logprob_entries(answer), "refusal": None, **shown}

    def chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        answer_lp: list[TokenLogprob] | None = None,
        reasoning_lp: list[TokenLogprob] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        logprobs = self._logprobs(answer_lp or [], reasoning_lp or []) if (answer_lp or reasoning_lp) else None
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            **extra,
        }

    def usage_chunk(self, result: GenerationResult) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage(result),
        }

    def response(self, reply: Reply, answer: str, stopped: bool) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer}
        if self.show_reasoning:
            message.update(reasoning_content=reply.thinking, reasoning=reply.thinking)
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(reply.result, stopped),
            "logprobs": self._logprobs(reply.answer_logprobs, reply.thinking_logprobs),
        }
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(reply.result),
            "lynx": lynx_stats(reply),
        }
