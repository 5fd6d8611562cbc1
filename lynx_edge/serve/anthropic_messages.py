"""The Anthropic Messages door: ``POST /v1/messages`` (a message, or its server-sent events) and
``POST /v1/messages/count_tokens``.

``thinking`` is the dial: ``{"type": "enabled", "budget_tokens": N}`` shows the thinking as a
``thinking`` block and closes it after about N tokens (LYNX may exit sooner);
``{"type": "disabled"}`` skips it; ``display: "omitted"`` runs it unseen; without the field the
model still thinks (it is a reasoning model, and exits as LYNX decides) but the reply holds only
the text block, as a client that did not ask for thinking expects (``content[0].text``).
``output_config.effort`` picks the risk level with the effort words of every door (``max``
thinks to the end) and ``output_config.format`` constrains the answer to a JSON schema.
``temperature``, ``top_p`` and ``top_k`` (which older clients send) are honoured. Thinking blocks of earlier turns are
dropped, as Anthropic's API drops them. Errors are Anthropic's shape; a busy server is its 529
``overloaded_error``, which the official client retries. No HTTP here.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from lynx_edge.events import ToolCall
from lynx_edge.runtime.options import FunctionTool, GenerationOptions
from lynx_edge.runtime.tool_calls import assistant_turn, tool_turn
from lynx_edge.serve.wire import (
    ApiError,
    Ask,
    Collected,
    LynxOptions,
    Number,
    Piece,
    Served,
    ThinkingAsked,
    generation_options,
    last_turn_check,
    lynx_stats,
    refuse_present,
    sse,
    tool_fields,
    unsupported,
    validate,
)

ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}
UNSUPPORTED = ("mcp_servers", "container")
PING_SECONDS = 5.0  # how often a stream whose thinking is not shown says it is alive
HISTORY_ONLY = ("thinking", "redacted_thinking")
TOOL_WIRE = {
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use"
}  # earlier turns' thinking: dropped, as Anthropic does


def error_shape(error: ApiError) -> tuple[int, dict[str, Any]]:
    kind = ERROR_TYPES.get(error.status, "invalid_request_error")
    status = 529 if error.status == 503 else error.status
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


class SystemBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: StrictStr


class Block(BaseModel):
    """A content block: text, tool calls and their results are read, earlier thinking is
    dropped, the rest is refused."""

    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None
    id: StrictStr | None = None  # tool_use
    name: StrictStr | None = None
    input: dict[str, Any] | None = None
    tool_use_id: StrictStr | None = None  # tool_result
    content: StrictStr | list[SystemBlock] | None = None
    is_error: StrictBool = False

    def result_text(self) -> str:
        text = self.content if isinstance(self.content, str) else "".join(b.text for b in self.content or [])
        return f"Error: {text}" if self.is_error else text


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class Thinking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: StrictInt | None = None
    display: Literal["summarized", "omitted"] | None = None


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """``output_config``: the effort word (the risk level, as on every door) and a JSON schema
    for the answer (the thinking stays free)."""

    model_config = ConfigDict(extra="forbid")
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class Tool(BaseModel):
    """A client tool (``input_schema`` is its arguments' schema); server tools are refused."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["custom"] | None = None
    name: StrictStr
    description: StrictStr = ""
    input_schema: dict[str, Any]

    def declared(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.input_schema}


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool = False

    def choice(self) -> str:
        if self.type == "tool":
            if not self.name:
                raise ApiError(400, "tool_choice of type 'tool' needs the tool's name", param="tool_choice.name")
            return self.name
        return {"any": "required"}.get(self.type, self.type)


class CountRequest(BaseModel):
    """What ``count_tokens`` reads: the prompt (with its tools), and whether it opens a
    thinking block."""

    model_config = ConfigDict(extra="allow")
    model: Annotated[StrictStr, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: StrictStr | list[SystemBlock] | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None

    def chat(self) -> list[dict[str, Any]]:
        """The conversation in the engine's terms: an assistant's ``tool_use`` blocks become
        its calls, each ``tool_result`` a tool message (before the user's own text)."""
        system = self.system if isinstance(self.system, str) else "".join(b.text for b in self.system or [])
        chat: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for i, message in enumerate(self.messages):
            if isinstance(message.content, str):
                chat.append({"role": message.role, "content": message.content})
                continue
            texts, calls = [], []
            for j, block in enumerate(message.content):
                if block.type == "text" and block.text is not None:
                    texts.append(block.text)
                elif block.type == "tool_use" and message.role == "assistant" and block.name:
                    calls.append(ToolCall(block.name, block.input or {}, block.id or ""))
                elif block.type == "tool_result" and message.role == "user":
                    chat.append(tool_turn(block.tool_use_id or "", block.result_text()))
                elif block.type not in HISTORY_ONLY:
                    raise unsupported(f"messages[{i}].content[{j}].type {block.type!r}")
            if calls:
                chat.append(assistant_turn("".join(texts), calls))
            elif texts or message.role == "assistant":
                chat.append({"role": message.role, "content": "".join(texts)})
        return chat

    def tool_fields(self) -> dict[str, Any]:
        """``tools`` and ``tool_choice`` in the options' terms."""
        choice = self.tool_choice or ToolChoice(type="auto")
        return tool_fields(
            [t.declared() for t in self.tools or []], choice.choice(), not choice.disable_parallel_tool_use
        )

    def thinking_asked(self) -> ThinkingAsked:
        effort = self.output_config.effort if self.output_config else None
        if self.thinking is None:
            return ThinkingAsked(exclude=True, effort=effort)
        if self.thinking.type == "disabled":
            return ThinkingAsked(think=False)
        hidden = self.thinking.display == "omitted"
        return ThinkingAsked(budget=self.thinking.budget_tokens, effort=effort, exclude=hidden)


class MessagesRequest(CountRequest):
    max_tokens: StrictInt
    stop_sequences: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=16)] | None = None
    stream: StrictBool = False
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    lynx: LynxOptions | None = None


def _parse(model: type[CountRequest], body: Any) -> CountRequest:
    if isinstance(body, dict):
        refuse_present(body, UNSUPPORTED)
    request = validate(model, body)
    last = "the last message must come from the user: lynx-edge does not continue a prefilled assistant turn"
    last_turn_check([{"role": m.role} for m in request.messages], last, "messages")
    return request


def counted(body: Any) -> tuple[list[dict[str, Any]], bool, tuple[FunctionTool, ...]]:
    """The prompt ``count_tokens`` measures, whether it opens a thinking block, its tools."""
    request = _parse(CountRequest, body)
    asked = request.thinking_asked()
    options = generation_options(GenerationOptions(), asked, None, TOOL_WIRE, **request.tool_fields())
    return request.chat(), asked.think, options.callable_tools


def start(body: Any, defaults: GenerationOptions, served: Served) -> tuple[Ask, MessageWriter]:
    request = _parse(MessagesRequest, body)
    asked = request.thinking_asked()
    sampling = {"temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens}
    if request.top_k is not None:
        sampling["top_k"] = request.top_k
    output = request.output_config
    schema = output.format.schema_ if output and output.format else None
    wire = {"thinking_budget": "thinking.budget_tokens", "json_schema": "output_config.format", **TOOL_WIRE}
    options = generation_options(
        defaults, asked, request.lynx, wire, json_schema=schema, **sampling, **request.tool_fields()
    )
    ask = Ask(
        messages=request.chat(),
        options=options,
        stops=list(request.stop_sequences or []),
        stream=request.stream,
        model=request.model,
        show_thinking=not asked.exclude,
    )
    return ask, MessageWriter(request.model, show_thinking=ask.show_thinking)


class MessageWriter:
    """One reply as a Messages ``message``, or as its events: a thinking block (when shown),
    then the text block, each opened, filled with deltas and stopped."""

    media_type = "text/event-stream"

    def __init__(self, model: str, *, show_thinking: bool) -> None:
        self.show_thinking = show_thinking
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = model
        self.open: str | None = None  # the kind of the block being streamed
        self.index = -1
        self.pinged = time.monotonic()

    def _message(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }

    def _switch(self, kind: str) -> list[str]:
        """Stop the open block and start one of ``kind`` (if it is not the open one)."""
        if self.open == kind:
            return []
        frames = self._stop()
        self.index += 1
        self.open = kind
        block = (
            {"type": "thinking", "thinking": "", "signature": ""}
            if kind == "thinking"
            else {"type": "text", "text": ""}
        )
        event = {"type": "content_block_start", "index": self.index, "content_block": block}
        return [*frames, sse(event, "content_block_start")]

    def _stop(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")]

    def _delta(self, delta: dict[str, Any]) -> str:
        return sse({"type": "content_block_delta", "index": self.index, "delta": delta}, "content_block_delta")

    def opening(self) -> list[str]:
        return [
            sse({"type": "message_start", "message": self._message([])}, "message_start"),
            sse({"type": "ping"}, "ping"),
        ]

    def thinking(self, piece: Piece) -> list[str]:
        return [*self._switch("thinking"), self._delta({"type": "thinking_delta", "thinking": piece.thinking})]

    def keepalive(self) -> list[str]:
        """A ``ping`` every PING_SECONDS while the thinking runs unseen (thinking not asked for):
        a big model thinks for minutes, and a silent stream times clients out."""
        now = time.monotonic()
        if now - self.pinged < PING_SECONDS:
            return []
        self.pinged = now
        return [sse({"type": "ping"}, "ping")]

    def answer(self, piece: Piece) -> list[str]:
        return [*self._switch("text"), self._delta({"type": "text_delta", "text": piece.answer})]

    def _tool_use(self, call: ToolCall) -> list[str]:
        """One call as a ``tool_use`` block: started empty, its input as one JSON delta."""
        frames = self._stop()
        self.index += 1
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        arguments = call.arguments_json
        return [
            *frames,
            sse({"type": "content_block_start", "index": self.index, "content_block": block}, "content_block_start"),
            self._delta({"type": "input_json_delta", "partial_json": arguments}),
            sse({"type": "content_block_stop", "index": self.index}, "content_block_stop"),
        ]

    def closing(self, got: Collected) -> list[str]:
        result = got.reply.result
        calls = [frame for call in result.tool_calls for frame in self._tool_use(call)]
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(got), "stop_sequence": got.stop.matched},
            "usage": {"input_tokens": result.tokens.prompt, "output_tokens": result.tokens.completion},
            "lynx": lynx_stats(got.reply),
        }
        return [
            *([] if calls and self.open != "text" else self._switch("text")),
            *self._stop(),
            *calls,
            sse(delta, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]

    def failed(self, error: ApiError) -> list[str]:
        return [sse(error_shape(error)[1], "error")]

    def response(self, got: Collected) -> dict[str, Any]:
        reply = got.reply
        shown = self.show_thinking and reply.thinking  # a model that did not think has no thinking block
        content = [{"type": "thinking", "thinking": reply.thinking, "signature": ""}] if shown else []
        calls = reply.result.tool_calls
        if got.answer or not calls:
            content.append({"type": "text", "text": got.answer})
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls]
        message = self._message(content)
        message.update(
            stop_reason=_stop_reason(got),
            stop_sequence=got.stop.matched,
            usage={"input_tokens": reply.result.tokens.prompt, "output_tokens": reply.result.tokens.completion},
            lynx=lynx_stats(reply),
        )
        return message


def _stop_reason(got: Collected) -> str:
    if got.stop.stopped:
        return "stop_sequence"
    if got.length_cut:
        return "max_tokens"
    return "tool_use" if got.reply.result.tool_calls else "end_turn"
