"""The OpenAI chat-completions wire format: the request schema and the response shapes.

Requests are parsed by pydantic models (unknown fields are accepted, logged at debug level,
and ignored; the fields lynx-edge cannot honour are refused with a 400 that names them) and
turned into one ``GenerationOptions``, whose schema checks every value's range once: a bad
value is a 400 naming the request's own parameter. Responses are built only from a ``Reply``
(the folded events), so the server shows what the CLI and the chat show. No HTTP here.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from lynx_edge.events import GenerationResult, TokenLogprob, ToolCall
from lynx_edge.runtime.options import Effort, GenerationOptions
from lynx_edge.runtime.tool_calls import assistant_turn, tool_turn
from lynx_edge.serve.wire import (
    ApiError,
    Ask,
    Collected,
    LynxOptions,
    Number,
    Piece,
    Reasoning,
    Served,
    ThinkingAsked,
    call_arguments,
    error_body,
    generation_options,
    last_turn_check,
    logprob_entries,
    lynx_stats,
    refuse_present,
    sse,
    tool_fields,
    validate,
)

MAX_STOP = 4
UNSUPPORTED = (
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
)


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    arguments: StrictStr = "{}"


class WireToolCall(BaseModel):
    """An earlier assistant turn's call, as the client sends it back."""

    model_config = ConfigDict(extra="ignore")
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall

    def call(self, where: str) -> ToolCall:
        return ToolCall(self.function.name, call_arguments(self.function.arguments, where), self.id)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: StrictStr | list[TextPart] | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: StrictStr | None = None
    name: StrictStr | None = None

    def plain(self, index: int) -> dict[str, Any]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        if self.role == "tool":
            return tool_turn(self.tool_call_id or "", text, self.name)
        if self.tool_calls:
            where = f"messages[{index}].tool_calls"
            return assistant_turn(text, [call.call(f"{where}[{j}]") for j, call in enumerate(self.tool_calls)])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatFunction(BaseModel):
    """A chat tool's ``function``: its name, what it does, its arguments' schema."""

    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    description: StrictStr = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: StrictBool | None = None

    def declared(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class WireTool(BaseModel):
    type: Literal["function"]
    function: ChatFunction


class NamedFunction(BaseModel):
    name: StrictStr


class NamedChoice(BaseModel):
    """``{"type": "function", "function": {"name": …}}``: call this tool."""

    type: Literal["function"]
    function: NamedFunction


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


class Thinking(BaseModel):
    """Anthropic's ``thinking`` object, as OpenAI-compatible clients pass it through."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["enabled", "disabled", "adaptive"] = "enabled"
    budget_tokens: StrictInt | None = None


class TemplateKwargs(BaseModel):
    """``chat_template_kwargs`` (llama-server, vLLM): only the thinking switch is read."""

    model_config = ConfigDict(extra="allow")
    enable_thinking: StrictBool | None = None


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
    tools: list[WireTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    parallel_tool_calls: StrictBool = True
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

    def chat(self) -> list[dict[str, Any]]:
        return [m.plain(i) for i, m in enumerate(self.messages)]

    def tool_fields(self) -> dict[str, Any]:
        """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in the options' terms."""
        choice = self.tool_choice
        named = choice.function.name if isinstance(choice, NamedChoice) else choice
        return tool_fields([t.function.declared() for t in self.tools or []], named, self.parallel_tool_calls)

    def options(self, defaults: GenerationOptions | None = None) -> GenerationOptions:
        """The request in the engine's terms, over the server's ``defaults`` (its --alpha and
        --mode); each value's range is checked here, by the options' schema."""
        asked = self.thinking_asked()
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
        wire = {
            "max_tokens": "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens",
            "json_schema": "response_format",
        }
        return generation_options(
            defaults or GenerationOptions(),
            asked,
            self.lynx,
            wire,
            max_tokens=self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            json_schema=json_schema,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs or 0,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            logit_bias=bias,
            **self.tool_fields(),
        )


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat-completions body; raises ``ApiError`` (400) naming the bad field."""
    if isinstance(body, dict):
        refuse_present(body, UNSUPPORTED)
    request = validate(ChatRequest, body)
    last_turn_check(request.chat(), "the last message must come from the user, a tool or the system", "messages")
    return request


def start(body: Any, defaults: GenerationOptions, served: Served) -> tuple[Ask, Completion]:
    """A chat-completions body as an ``Ask``, and the writer of its reply."""
    request = parse_request(body)
    ask = Ask(
        messages=request.chat(),
        options=request.options(defaults),
        stops=request.stops,
        stream=request.stream,
        model=request.model,
        show_thinking=not request.thinking_asked().exclude,
    )
    return ask, Completion(served.name, request, ask)


def usage(result: GenerationResult) -> dict[str, Any]:
    t = result.tokens
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.completion,
        "total_tokens": t.total,
        "prompt_tokens_details": {"cached_tokens": t.cached},
        "completion_tokens_details": {"reasoning_tokens": t.thinking},
    }


class Completion:
    """The chat door's writer: ids and shapes shared by the chunks and the response of one
    completion."""

    media_type = "text/event-stream"

    def __init__(self, model: str, request: ChatRequest, ask: Ask) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.logprobs = request.logprobs
        self.include_usage = request.include_usage
        self.show_reasoning = ask.show_thinking  # False: reasoning.exclude (the thinking still runs)

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

    def opening(self) -> list[str]:
        return [sse(self.chunk({"role": "assistant", "content": ""}))]

    def thinking(self, piece: Piece) -> list[str]:
        delta = {"reasoning_content": piece.thinking, "reasoning": piece.thinking}
        return [sse(self.chunk(delta, reasoning_lp=list(piece.thinking_logprobs)))]

    def keepalive(self) -> list[str]:
        return []  # SSE has no keep-alive event the OpenAI clients read

    def answer(self, piece: Piece) -> list[str]:
        return [sse(self.chunk({"content": piece.answer}, answer_lp=list(piece.answer_logprobs)))]

    def closing(self, got: Collected) -> list[str]:
        calls = tool_call_entries(got.reply.result)
        frames = [sse(self.chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))] if calls else []
        frames.append(sse(self.chunk({}, finish_reason(got), lynx=lynx_stats(got.reply))))
        if self.include_usage:
            frames.append(
                sse(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage(got.reply.result),
                    }
                )
            )
        return [*frames, "data: [DONE]\n\n"]

    def failed(self, error: ApiError) -> list[str]:
        return [sse(error_body(error)), "data: [DONE]\n\n"]

    def response(self, got: Collected) -> dict[str, Any]:
        reply = got.reply
        calls = tool_call_entries(reply.result)
        message: dict[str, Any] = {"role": "assistant", "content": got.answer or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        if self.show_reasoning:
            message.update(reasoning_content=reply.thinking, reasoning=reply.thinking)
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(got),
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


def finish_reason(got: Collected) -> str:
    if got.length_cut:
        return "length"
    return "tool_calls" if got.reply.result.tool_calls else "stop"


def tool_call_entries(result: GenerationResult) -> list[dict[str, Any]]:
    """The calls of a reply in OpenAI's shape (arguments as JSON text)."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json},
        }
        for call in result.tool_calls
    ]
