"""The OpenAI Responses door: ``POST /v1/responses``, a response object or its server-sent events.

``reasoning.effort`` is the dial, with the chat endpoint's words (``none`` skips the thinking,
``minimal`` … ``xhigh`` pick a risk level, ``max`` thinks to the end); the thinking comes back as
a ``reasoning`` output item with its ``reasoning_text``, before the ``message`` item that
``output_text`` reads. Nothing is stored: ``store`` is answered ``false`` and
``previous_response_id`` / ``conversation`` are a 400 naming the field (send the whole
conversation as ``input``). Errors are OpenAI's shape. No HTTP here.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from lynx_edge.events import GenerationResult, TokenLogprob, ToolCall
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.tool_calls import assistant_turn, calls_of, tool_turn
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
    generation_options,
    last_turn_check,
    lynx_stats,
    reasoning_summary,
    refuse_present,
    sse,
    tool_fields,
    unsupported,
    validate,
)

UNSUPPORTED = ("prompt", "background")
STATEFUL = ("previous_response_id", "conversation")
STATELESS = "lynx-edge keeps no responses: send the whole conversation as 'input'"


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class Item(BaseModel):
    """An ``input`` item: a message (its text parts are read), an earlier call and its output;
    earlier reasoning is dropped."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message", "reasoning", "function_call", "function_call_output"] | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: StrictStr | list[Part] | None = None
    call_id: StrictStr | None = None
    name: StrictStr | None = None
    arguments: StrictStr | None = None
    output: StrictStr | None = None


class ResponsesFunction(BaseModel):
    """A Responses tool of type ``function`` (name, description and parameters at its top level)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None

    def declared(self) -> dict[str, Any]:
        parameters = self.parameters or {"type": "object", "properties": {}}
        return {"name": self.name, "description": self.description or "", "parameters": parameters}


class NamedFunction(BaseModel):
    type: Literal["function"]
    name: StrictStr


class Format(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class Text(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Format | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: StrictStr | Annotated[list[Item], Field(min_length=1)]
    model: StrictStr | None = None
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_logprobs: StrictInt | None = None
    reasoning: Reasoning | None = None
    text: Text | None = None
    stream: StrictBool = False
    store: StrictBool | None = None
    tools: list[ResponsesFunction] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: StrictBool = True
    lynx: LynxOptions | None = None

    def tool_fields(self) -> dict[str, Any]:
        """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in the options' terms."""
        choice = self.tool_choice
        named = choice.name if isinstance(choice, NamedFunction) else choice
        return tool_fields([t.declared() for t in self.tools or []], named, self.parallel_tool_calls)

    def chat(self) -> list[dict[str, Any]]:
        chat: list[dict[str, Any]] = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            return [*chat, {"role": "user", "content": self.input}]
        for i, item in enumerate(self.input):
            if item.type == "reasoning":
                continue
            if item.type == "function_call":
                chat.append(_call_turn(chat, item, i))
                continue
            if item.type == "function_call_output":
                chat.append(tool_turn(item.call_id or "", item.output or ""))
                continue
            if item.role is None:
                raise ApiError(400, f"'input[{i}].role' is required for a message item", param=f"input[{i}].role")
            if isinstance(item.content, list):
                texts = []
                for j, part in enumerate(item.content):
                    if part.type not in ("input_text", "output_text", "text") or part.text is None:
                        raise unsupported(f"input[{i}].content[{j}].type {part.type!r}")
                    texts.append(part.text)
                content = "".join(texts)
            else:
                content = item.content or ""
            chat.append({"role": "system" if item.role == "developer" else item.role, "content": content})
        last_turn_check(chat, "the last input item must be a user or system message, or a call's output", "input")
        return chat

    def json_schema(self) -> dict[str, Any] | None:
        spec = self.text.format if self.text else None
        if spec is None or spec.type == "text":
            return None
        if spec.type == "json_schema" and spec.schema_ is None:
            raise ApiError(400, "'text.format.schema' is required for a json_schema format", param="text.format.schema")
        return spec.schema_ if spec.type == "json_schema" else {"type": "object"}


def _call_turn(chat: list[dict[str, Any]], item: Item, index: int) -> dict[str, Any]:
    """An earlier ``function_call`` item as an assistant call (calls in a row join one turn:
    the previous assistant turn is taken off ``chat`` and returned with this call added)."""
    if not item.name or item.call_id is None:
        raise ApiError(
            400, f"'input[{index}]': a function_call item needs 'name' and 'call_id'", param=f"input[{index}]"
        )
    call = ToolCall(item.name, call_arguments(item.arguments, f"input[{index}].arguments"), item.call_id)
    if chat and chat[-1]["role"] == "assistant":
        earlier = chat.pop()
        return assistant_turn(earlier["content"], [*calls_of(earlier), call])
    return assistant_turn(None, [call])


def start(body: Any, defaults: GenerationOptions, served: Served) -> tuple[Ask, ResponseWriter]:
    if isinstance(body, dict):
        for name in STATEFUL:
            if body.get(name) not in (None, {}, ""):
                raise ApiError(400, f"'{name}' is not supported: {STATELESS}", param=name, code="unsupported_parameter")
        refuse_present(body, UNSUPPORTED)
    request = validate(ResponsesRequest, body)
    effort = request.reasoning.effort if request.reasoning else None
    asked = ThinkingAsked(think=effort != "none", effort=effort)
    options = generation_options(
        defaults,
        asked,
        request.lynx,
        {"max_tokens": "max_output_tokens", "json_schema": "text.format", "top_logprobs": "top_logprobs"},
        **request.tool_fields(),
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        json_schema=request.json_schema(),
        logprobs=request.top_logprobs is not None,
        top_logprobs=request.top_logprobs or 0,
    )
    ask = Ask(messages=request.chat(), options=options, stops=[], stream=request.stream, model=request.model)
    return ask, ResponseWriter(served.name, request)


def _logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.text,
            "bytes": list(lp.bytes),
            "logprob": lp.logprob,
            "top_logprobs": [{"token": t, "bytes": list(t.encode()), "logprob": v} for t, v in lp.top],
        }
        for lp in items
    ]


class ResponseWriter:
    """One reply as a ``response`` object, or as its events: ``response.created``, a reasoning
    item streamed as ``reasoning_text`` deltas, the message item streamed as ``output_text``
    deltas, ``response.completed`` (or ``response.incomplete`` at the token limit)."""

    media_type = "text/event-stream"

    def __init__(self, model: str, request: ResponsesRequest) -> None:
        self.id = f"resp_{uuid.uuid4().hex[:24]}"
        self.reasoning_id = f"rs_{uuid.uuid4().hex[:24]}"
        self.message_id = f"msg_{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.request = request
        self.sequence = 0
        self.open: str | None = None  # "reasoning" or "message": the item being streamed
        self.items = 0
        self.thought = ""
        self.said = ""

    def _event(self, kind: str, **fields: Any) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(event, kind)

    def _response(self, status: str, output: list[dict[str, Any]], result: GenerationResult | None) -> dict[str, Any]:
        request = self.request
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": None,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": request.reasoning.summary if request.reasoning else None,
            },
            "store": False,
            "temperature": request.temperature,
            "text": {
                "format": request.text.format.model_dump(by_alias=True)
                if request.text and request.text.format
                else {"type": "text"}
            },
            "tool_choice": request.tool_choice.model_dump()
            if isinstance(request.tool_choice, NamedFunction)
            else request.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or []],
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": None,
            "metadata": {},
        }
        if result is not None:
            t = result.tokens
            body["usage"] = {
                "input_tokens": t.prompt,
                "input_tokens_details": {"cached_tokens": t.cached, "cache_write_tokens": 0},
                "output_tokens": t.completion,
                "output_tokens_details": {"reasoning_tokens": t.thinking},
                "total_tokens": t.total,
            }
        return body

    @property
    def summary(self) -> str | None:
        """The reasoning summary asked for (``reasoning.summary``), by ``reasoning_summary``'s rule."""
        return reasoning_summary(self.thought, self.request.reasoning.summary if self.request.reasoning else None)

    def _reasoning_item(self, status: str) -> dict[str, Any]:
        content = [{"type": "reasoning_text", "text": self.thought}] if status != "in_progress" else []
        summary = self.summary if status != "in_progress" else None
        parts = [{"type": "summary_text", "text": summary}] if summary else []
        return {"id": self.reasoning_id, "type": "reasoning", "summary": parts, "content": content, "status": status}

    def _summary_events(self) -> list[str]:
        """The summary's part as the Responses stream writes it: added, its text, done."""
        summary = self.summary
        if not summary:
            return []
        at = {"item_id": self.reasoning_id, "output_index": self.items - 1, "summary_index": 0}
        part = {"type": "summary_text", "text": summary}
        return [
            self._event("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""}),
            self._event("response.reasoning_summary_text.delta", **at, delta=summary),
            self._event("response.reasoning_summary_text.done", **at, text=summary),
            self._event("response.reasoning_summary_part.done", **at, part=part),
        ]

    def _message_item(self, status: str, logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
        text = {"type": "output_text", "text": self.said, "annotations": [], "logprobs": _logprobs(logprobs or [])}
        content = [text] if status != "in_progress" else []
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def _finish_open(self) -> list[str]:
        if self.open == "reasoning":
            self.open = None
            return [
                self._event(
                    "response.reasoning_text.done",
                    item_id=self.reasoning_id,
                    output_index=self.items - 1,
                    content_index=0,
                    text=self.thought,
                ),
                *self._summary_events(),
                self._event(
                    "response.output_item.done", output_index=self.items - 1, item=self._reasoning_item("completed")
                ),
            ]
        return []

    def _open_message(self) -> list[str]:
        if self.open == "message":
            return []
        frames = self._finish_open()
        self.open = "message"
        self.items += 1
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            *frames,
            self._event(
                "response.output_item.added", output_index=self.items - 1, item=self._message_item("in_progress")
            ),
            self._event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=self.items - 1,
                content_index=0,
                part=part,
            ),
        ]

    def opening(self) -> list[str]:
        shell = self._response("in_progress", [], None)
        return [
            self._event("response.created", response=shell),
            self._event("response.in_progress", response=shell),
        ]

    def thinking(self, piece: Piece) -> list[str]:
        frames = []
        if self.open != "reasoning":
            self.open = "reasoning"
            self.items += 1
            item = self._reasoning_item("in_progress")
            frames.append(self._event("response.output_item.added", output_index=self.items - 1, item=item))
        self.thought += piece.thinking
        delta = {"item_id": self.reasoning_id, "output_index": self.items - 1, "content_index": 0}
        return [*frames, self._event("response.reasoning_text.delta", **delta, delta=piece.thinking)]

    def keepalive(self) -> list[str]:
        return []  # the Responses stream has no keep-alive event

    def answer(self, piece: Piece) -> list[str]:
        frames = self._open_message()
        self.said += piece.answer
        where = {"item_id": self.message_id, "output_index": self.items - 1, "content_index": 0}
        logprobs = _logprobs(piece.answer_logprobs)
        return [*frames, self._event("response.output_text.delta", **where, delta=piece.answer, logprobs=logprobs)]

    @staticmethod
    def _call_item(call: ToolCall, status: str = "completed") -> dict[str, Any]:
        arguments = call.arguments_json if status == "completed" else ""
        return {
            "id": f"fc_{call.id.removeprefix('call_')}",
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": arguments,
            "status": status,
        }

    def _calls(self, calls: tuple[ToolCall, ...]) -> list[str]:
        """Each call as a ``function_call`` item: added, its arguments as one delta, done."""
        frames = []
        for call in calls:
            self.items += 1
            at = self.items - 1
            item = self._call_item(call)
            frames += [
                self._event("response.output_item.added", output_index=at, item=self._call_item(call, "in_progress")),
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=at,
                    delta=item["arguments"],
                ),
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=at,
                    arguments=item["arguments"],
                ),
                self._event("response.output_item.done", output_index=at, item=item),
            ]
        return frames

    def closing(self, got: Collected) -> list[str]:
        calls = got.reply.result.tool_calls
        status = "incomplete" if got.length_cut else "completed"
        frames = []
        if self.said or not calls:
            frames = self._open_message()
            where = {"item_id": self.message_id, "output_index": self.items - 1, "content_index": 0}
            message = self._message_item(status, got.reply.answer_logprobs)
            frames += [
                self._event("response.output_text.done", **where, text=self.said, logprobs=[]),
                self._event("response.content_part.done", **where, part=message["content"][0]),
                self._event("response.output_item.done", output_index=self.items - 1, item=message),
            ]
        else:
            frames = self._finish_open()
        frames += self._calls(calls)
        body = self._final(got, status)
        return [*frames, self._event(f"response.{status}", response=body)]

    def _final(self, got: Collected, status: str) -> dict[str, Any]:
        output = [self._reasoning_item("completed")] if self.thought else []
        calls = got.reply.result.tool_calls
        if self.said or not calls:
            output.append(self._message_item(status, got.reply.answer_logprobs))
        output += [self._call_item(call) for call in calls]
        body = self._response(status, output, got.reply.result)
        body["lynx"] = lynx_stats(got.reply)
        return body

    def failed(self, error: ApiError) -> list[str]:
        return [self._event("error", code=error.code, message=error.message, param=error.param)]

    def response(self, got: Collected) -> dict[str, Any]:
        self.thought, self.said = got.reply.thinking, got.answer
        return self._final(got, "incomplete" if got.length_cut else "completed")
