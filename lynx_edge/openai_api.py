"""The OpenAI chat-completions wire format: parse a request, shape chunks and responses.

Pure functions and dataclasses (no HTTP, no model), so every validation rule and every
field a client reads is testable on its own. ``server.py`` moves these over HTTP.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lynx_edge.events import GenerationResult

ROLES = ("system", "user", "assistant", "developer")
EFFORT_ALPHA = {"low": 0.2, "medium": 0.1, "high": 0.05}  # less effort = more risk = earlier exits
MAX_STOP = 4


class ApiError(Exception):
    """An error the client caused or must handle, with its HTTP status and OpenAI fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatRequest:
    """A validated request, in the engine's terms."""

    messages: list[dict[str, str]]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    lynx: bool = True
    alpha: float | None = None
    measure_savings: bool = False


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{key}' must be a number, got {type(value).__name__}", key, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"'{key}' must lie in [{low}, {high}], got {value}", key)
    return float(value)


def _content(message: Any, index: int) -> dict[str, str]:
    if not isinstance(message, dict):
        raise _bad(f"messages[{index}] must be an object", f"messages[{index}]", "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise _bad(f"messages[{index}].role must be one of {', '.join(ROLES)}", f"messages[{index}].role")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text is understood
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{index}].content parts must be text parts", f"messages[{index}].content")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise _bad(f"messages[{index}].content must be a string", f"messages[{index}].content", "invalid_type")
    return {"role": "system" if role == "developer" else role, "content": content}


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat-completions body; raises ``ApiError`` (400) naming the bad field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "body", "invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    parsed = [_content(m, i) for i, m in enumerate(messages)]
    if parsed[-1]["role"] == "assistant":
        raise _bad("the last message must come from the user (or system)", "messages")
    n = body.get("n", 1)
    if n != 1:
        raise _bad("only n = 1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _bad("'max_tokens' must be a positive integer", "max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("'seed' must be an integer", "seed", "invalid_type")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP:
        raise _bad(f"'stop' must be a string or up to {MAX_STOP} non-empty strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream", "invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options", "invalid_type")
    lynx = body.get("lynx") or {}
    if not isinstance(lynx, dict):
        raise _bad("'lynx' must be an object like {\"enabled\": true, \"alpha\": 0.1}", "lynx", "invalid_type")
    enabled = lynx.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _bad("'lynx.enabled' must be a boolean", "lynx.enabled", "invalid_type")
    alpha = lynx.get("alpha")
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise _bad("'lynx.alpha' must be a number", "lynx.alpha", "invalid_type")
        if not 0 < alpha < 1:
            raise _bad(f"'lynx.alpha' must lie strictly between 0 and 1, got {alpha}", "lynx.alpha")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORT_ALPHA:
            raise _bad(f"'reasoning_effort' must be one of {', '.join(EFFORT_ALPHA)}", "reasoning_effort")
        if alpha is None:
            alpha = EFFORT_ALPHA[effort]
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string", "model", "invalid_type")
    return ChatRequest(
        messages=parsed,
        model=model,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
        lynx=enabled,
        alpha=None if alpha is None else float(alpha),
        measure_savings=bool(lynx.get("measure_savings", False)),
    )


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
    completion = result.tokens["thinking"] + result.tokens["answer"]
    return {
        "prompt_tokens": result.tokens["prompt"],
        "completion_tokens": completion,
        "total_tokens": result.tokens["prompt"] + completion,
        "prompt_tokens_details": {"cached_tokens": result.tokens["cached"]},
        "completion_tokens_details": {"reasoning_tokens": result.tokens["thinking"]},
    }


def lynx_stats(result: GenerationResult) -> dict[str, Any]:
    """The ``lynx`` object on the final chunk / response."""
    exit_info = result.exit or {}
    return {
        "exited": result.exited,
        "exit_cue": exit_info.get("cue"),
        "exit_score": exit_info.get("score"),
        "threshold": exit_info.get("threshold") if result.exited else _last_threshold(result),
        "alpha": result.alpha,
        "mode": result.extra.get("mode"),
        "probe": result.probe,
        "probe_calls": result.probe_calls,
        "tokens_saved": result.tokens_saved,
    }


def _last_threshold(result: GenerationResult) -> float | None:
    scored = [c["threshold"] for c in result.cues if c.get("threshold") is not None]
    return scored[-1] if scored else None


def finish_reason(result: GenerationResult, stopped: bool) -> str:
    if stopped:
        return "stop"
    return "length" if result.finish_reason == "length" else "stop"


class Completion:
    """Ids and shapes shared by the chunks and the response of one completion."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }

    def usage_chunk(self, result: GenerationResult) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage(result)}

    def response(self, thinking: str, answer: str, result: GenerationResult, stopped: bool) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer, "reasoning_content": thinking, "reasoning": thinking}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(result, stopped), "logprobs": None}],
            "usage": usage(result),
            "lynx": lynx_stats(result),
        }
