"""Tool calls in an answer: the formats model families write them in, which one a chat template
speaks, and reading a finished answer back into calls.

Each family wraps a call its own way — Hermes/Qwen ``<tool_call>{"name", "arguments"}</tool_call>``,
DeepSeek-R1's tool-call tokens with the arguments in a fenced JSON block, Llama-3.x a bare JSON
object with ``parameters`` (after ``<|python_tag|>`` when the template has it), Mistral
``[TOOL_CALLS]`` and a JSON list. ``format_for`` picks the family from the template's own text;
a template that knows no tools gets the generic form, which is the Hermes one (small models
imitate it best), described to the model in a system message. ``ToolFormat.framing`` gives the
literal text around one call's arguments, which is what a forced call's grammar is built from.
Pure Python: no model here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lynx_edge.events import ToolCall, new_call_id

DEEPSEEK_CALLS = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")
DEEPSEEK_CALL = ("<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>")


@dataclass(frozen=True)
class ToolFormat:
    """How one model family writes its calls."""

    name: str
    opener: str  # the text that starts the calls in an answer
    arguments_key: str = "arguments"

    def opens_at(self, text: str) -> int:
        """Where the calls start in ``text`` (-1: no call). A bare-JSON family's call is an
        object that starts the answer (after white space)."""
        if self.opener:
            return text.find(self.opener)
        stripped = text.lstrip()
        return len(text) - len(stripped) if stripped.startswith('{"') else -1

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The answer's text before its calls, and the calls (none when the answer has none or
        they do not parse: then the whole text is the answer)."""
        at = self.opens_at(text)
        if at < 0:
            return text, []
        calls = _PARSERS[self.name](text[at:], self)
        return (text[:at], calls) if calls else (text, [])

    def may_open_at(self, text: str) -> int:
        """Where a call starts or may be starting at the end of ``text`` (``len(text)``: no
        call can start before the next token): what an answer holds back from the stream."""
        at = self.opens_at(text)
        if at >= 0:
            return at
        if not self.opener:
            stripped = text.lstrip()
            return len(text) - len(stripped) if '{"'.startswith(stripped) or stripped.startswith('{"') else len(text)
        for n in range(min(len(self.opener) - 1, len(text)), 0, -1):
            if text.endswith(self.opener[:n]):
                return len(text) - n
        return len(text)

    def written(self, call: ToolCall) -> str:
        """``call`` as this family writes it (an earlier turn's call, for templates that cannot
        render ``tool_calls`` themselves)."""
        before, after = self.framing(call.name)
        return f"{before}{call.arguments_json}{after}"

    def framing(self, name: str) -> tuple[str, str]:
        """The literal text before and after the arguments of one call to ``name``."""
        if self.name == "deepseek-r1":
            before = f"{DEEPSEEK_CALLS[0]}{DEEPSEEK_CALL[0]}function{DEEPSEEK_CALL[1]}{name}\n```json\n"
            return before, f"\n```{DEEPSEEK_CALL[2]}{DEEPSEEK_CALLS[1]}"
        head = f'{{"name": {json.dumps(name)}, "{self.arguments_key}": '
        if self.name == "mistral":
            return f"{self.opener}[{head}", "}]"
        if self.name == "llama3-json":
            return f"{self.opener}{head}", "}"
        return f"{self.opener}\n{head}", "}\n</tool_call>"


HERMES = ToolFormat("hermes", "<tool_call>")
GENERIC = ToolFormat("generic", "<tool_call>")
DEEPSEEK = ToolFormat("deepseek-r1", DEEPSEEK_CALLS[0])
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]")
LLAMA3 = ToolFormat("llama3-json", "", "parameters")
LLAMA3_TAGGED = ToolFormat("llama3-json", "<|python_tag|>", "parameters")
FORMATS = (HERMES, DEEPSEEK, MISTRAL, LLAMA3, GENERIC)


def format_for(template: str | None) -> ToolFormat:
    """The call format a chat template speaks (the generic one when it knows no tools)."""
    text = template or ""
    if "tool▁calls▁begin" in text:
        return DEEPSEEK
    if "<tool_call>" in text:
        return HERMES
    if "[TOOL_CALLS]" in text:
        return MISTRAL
    if "<|start_header_id|>" in text and "tools" in text:
        return LLAMA3_TAGGED if "<|python_tag|>" in text else LLAMA3
    return GENERIC


def generic_instructions(tools: Sequence[dict[str, Any]]) -> str:
    """The system text that teaches a template without tools the generic call form."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "You may call these tools:\n"
        f"{listed}\n"
        "To call one, answer with exactly\n"
        '<tool_call>\n{"name": "<tool name>", "arguments": {<arguments as JSON>}}\n</tool_call>\n'
        "and nothing else; you will get its result in the next message."
    )


def template_messages(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], fmt: ToolFormat
) -> list[dict[str, Any]]:
    """The conversation as the template should see it. A template that speaks a tool format
    gets the messages as they are (an assistant's calls with their arguments as objects, the
    form templates index into); the generic form teaches the calls in the system message,
    writes earlier calls into the assistant's text and tool results as ``<tool_response>``
    user turns, since such templates know neither."""
    if fmt is not GENERIC:
        return [_with_object_arguments(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        elif m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [fmt.written(c) for c in calls_of(m)]
            out.append({"role": "assistant", "content": "\n".join(filter(None, [m.get("content") or "", *calls]))})
        else:
            out.append(dict(m))
    if tools:
        teach = generic_instructions(tools)
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{teach}".strip()}
        else:
            out.insert(0, {"role": "system", "content": teach})
    return out


def assistant_turn(text: str | None, calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    """An assistant turn in the engine's terms: its text and the calls it made (each template
    gets them in the form it takes: ``template_messages``)."""
    turn: dict[str, Any] = {"role": "assistant", "content": text or ""}
    if calls:
        turn["tool_calls"] = [_call_entry(c, as_text=False) for c in calls]
    return turn


def tool_turn(call_id: str, content: str, name: str | None = None) -> dict[str, Any]:
    """A tool's result, answering the call ``call_id``."""
    turn = {"role": "tool", "tool_call_id": call_id, "content": content}
    if name:
        turn["name"] = name
    return turn


def string_arguments(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each earlier call's arguments as a JSON string (OpenAI's wire form),
    for templates that concatenate them as text (DeepSeek-R1's)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [_call_entry(c, as_text=True) for c in calls_of(m)]}
        out.append(m)
    return out


def calls_of(message: dict[str, Any]) -> list[ToolCall]:
    """An assistant message's ``tool_calls`` (OpenAI's shape; arguments a JSON string or object)."""
    calls = []
    for entry in message.get("tool_calls") or []:
        function = entry.get("function", entry)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        calls.append(ToolCall(function["name"], arguments, entry.get("id") or new_call_id()))
    return calls


def _call_entry(call: ToolCall, *, as_text: bool) -> dict[str, Any]:
    arguments = call.arguments_json if as_text else call.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _with_object_arguments(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return dict(message)
    # a call without text has no content (None, as OpenAI sends it): templates branch on that
    content = message.get("content") or None
    return {**message, "content": content, "tool_calls": [_call_entry(c, as_text=False) for c in calls_of(message)]}


def _objects(text: str) -> list[Any]:
    """Every JSON value that starts at a '{' or '[' of ``text``, left to right, skipping what
    one value already covered."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (match := re.compile(r"[\[{]").search(text, at)) is not None:
        try:
            value, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            at = match.start() + 1
            continue
        found.append(value)
        at = end
    return found


def _call(value: Any, key: str) -> ToolCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get(key, value.get("arguments", value.get("parameters", {})))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return ToolCall(value["name"], arguments) if isinstance(arguments, dict) else None


def _tagged(text: str, fmt: ToolFormat) -> list[ToolCall]:
    """The call that follows each ``<tool_call>``, read as JSON (so a closing tag inside an
    argument's string is text, not the end of the call); a call cut short by the token limit
    is left out, and a reply with a block that is not a call is text, not calls."""
    decoder = json.JSONDecoder()
    calls, at = [], 0
    while (opened := text.find(fmt.opener, at)) >= 0:
        start = text.find("{", opened)
        try:
            value, at = decoder.raw_decode(text, start) if start >= 0 else (None, len(text))
        except json.JSONDecodeError:
            if "</tool_call>" in text[start:]:  # a closed block that is not a call
                return []
            break  # the last call, cut short
        call = _call(value, fmt.arguments_key)
        if call is None:
            return []
        calls.append(call)
    return calls


def _deepseek(text: str, _: ToolFormat) -> list[ToolCall]:
    calls = []
    pattern = (
        re.escape(DEEPSEEK_CALL[0])
        + r"\s*(?:function)?\s*"
        + re.escape(DEEPSEEK_CALL[1])
        + r"\s*([^\n]+?)\s*\n(.*?)(?:"
        + re.escape(DEEPSEEK_CALL[2])
        + r"|$)"
    )
    for name, body in re.findall(pattern, text, flags=re.S):
        values = _objects(body)
        if not values or not isinstance(values[0], dict):
            return []
        calls.append(ToolCall(name.strip(), values[0]))
    return calls


def _listed(text: str, fmt: ToolFormat) -> list[ToolCall]:
    values = _objects(text[len(fmt.opener) :])
    if not values:
        return []
    items = values[0] if isinstance(values[0], list) else values
    calls = [_call(v, fmt.arguments_key) for v in items]
    return [c for c in calls if c] if calls and all(calls) else []


_PARSERS = {"hermes": _tagged, "generic": _tagged, "deepseek-r1": _deepseek, "mistral": _listed, "llama3-json": _listed}
