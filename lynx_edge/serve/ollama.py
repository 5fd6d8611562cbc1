"""The Ollama API door: ``/api/chat`` and ``/api/generate`` (NDJSON streaming by default, as
Ollama's), and the model routes Ollama apps call first (``/api/tags``, ``/api/show``,
``/api/ps``, ``/api/version``).

``think`` is the risk dial: ``true`` thinks at the server's level, ``"low"``/``"medium"``/
``"high"`` pick a risk level as OpenAI's ``reasoning_effort`` words do, ``false`` skips the
thinking. ``options`` maps onto the same ``GenerationOptions`` as every door; the options that
only say how Ollama loads a model (GPU layers, threads, mmap …) change nothing here and are
accepted, a sampler this runtime does not have (mirostat, tfs_z, typical_p, min_p,
repeat_last_n) is a 400 naming it unless it is set to its no-op value. Errors are Ollama's
``{"error": "…"}``. Durations are in nanoseconds: the total and the decode time are measured,
the prompt's is the rest. No HTTP here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from lynx_edge.events import GenerationResult, TokenLogprob, ToolCall, new_call_id
from lynx_edge.runtime.model_info import ModelDescription
from lynx_edge.runtime.options import GenerationOptions
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
    unsupported,
    validate,
)

VERSION = "0.12.6"  # the Ollama API these routes follow
HONOURED = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "num_predict": "max_tokens",
    "repeat_penalty": "repeat_penalty",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
LOADING = (  # how Ollama loads and runs a model: nothing here to change
    "numa",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "use_mmap",
    "use_mlock",
    "num_thread",
    "num_keep",
    "vocab_only",
    "f16_kv",
    "logits_all",
    "embedding_only",
    "penalize_newline",
)
NO_OP = {
    "mirostat": (0,),
    "tfs_z": (1,),
    "typical_p": (1,),
    "min_p": (0,),
    "repeat_last_n": (-1, 0),
}  # values that change nothing


def error_shape(error: ApiError) -> tuple[int, dict[str, Any]]:
    return error.status, {"error": error.message}


class Options(BaseModel):
    """Ollama's ``options``: the sampler's, the context's, and the loader's."""

    model_config = ConfigDict(extra="forbid")
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    seed: StrictInt | None = None
    num_predict: StrictInt | None = None
    repeat_penalty: Number | None = None
    frequency_penalty: Number | None = None
    presence_penalty: Number | None = None
    stop: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=16)] | None = None
    num_ctx: StrictInt | None = None
    mirostat: StrictInt | None = None
    mirostat_tau: Number | None = None
    mirostat_eta: Number | None = None
    tfs_z: Number | None = None
    typical_p: Number | None = None
    min_p: Number | None = None
    repeat_last_n: StrictInt | None = None
    numa: StrictBool | None = None
    num_batch: StrictInt | None = None
    num_gpu: StrictInt | None = None
    main_gpu: StrictInt | None = None
    low_vram: StrictBool | None = None
    use_mmap: StrictBool | None = None
    use_mlock: StrictBool | None = None
    num_thread: StrictInt | None = None
    num_keep: StrictInt | None = None
    vocab_only: StrictBool | None = None
    f16_kv: StrictBool | None = None
    logits_all: StrictBool | None = None
    embedding_only: StrictBool | None = None
    penalize_newline: StrictBool | None = None

    def sampling(self, served: Served) -> dict[str, Any]:
        """The options in ``GenerationOptions``' names; a 400 for what cannot be honoured."""
        for name, neutral in NO_OP.items():
            value = getattr(self, name)
            if value is not None and value not in neutral:
                raise ApiError(
                    400,
                    f"'options.{name}' is not supported by lynx-edge (only {neutral[0]}, its no-op): leave it out",
                    param=f"options.{name}",
                    code="unsupported_parameter",
                )
        if self.num_ctx is not None and self.num_ctx > served.n_ctx:
            raise ApiError(
                400,
                f"'options.num_ctx' {self.num_ctx} is over this server's context of {served.n_ctx} tokens: "
                f"ask for less, or restart `lynx-edge serve --n-ctx {self.num_ctx}`",
                param="options.num_ctx",
                code="invalid_value",
            )
        given = {ours: getattr(self, theirs) for theirs, ours in HONOURED.items() if getattr(self, theirs) is not None}
        if given.get("max_tokens", 0) < 0:  # Ollama's "no limit"
            del given["max_tokens"]
        return given


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    arguments: dict[str, Any] = {}


class CalledTool(BaseModel):
    """An earlier assistant turn's call, as Ollama sends it back."""

    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr = ""
    thinking: StrictStr | None = None  # an earlier turn's thinking: the template drops it
    images: list[Any] | None = None
    tool_calls: list[CalledTool] | None = None
    tool_name: StrictStr | None = None
    tool_call_id: StrictStr | None = None

    def plain(self) -> dict[str, Any]:
        if self.role == "tool":
            return tool_turn(self.tool_call_id or "", self.content, self.tool_name)
        if self.tool_calls:
            calls = [ToolCall(c.function.name, c.function.arguments, c.id or new_call_id()) for c in self.tool_calls]
            return assistant_turn(self.content, calls)
        return {"role": self.role, "content": self.content}


class WireTool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"] = "function"
    function: dict[str, Any]


class _Common(BaseModel):
    """The fields ``/api/chat`` and ``/api/generate`` share."""

    model_config = ConfigDict(extra="allow")
    model: Annotated[StrictStr, Field(min_length=1)]
    stream: StrictBool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: StrictStr | Number | None = None  # the model stays loaded while the server runs
    think: StrictBool | Literal["low", "medium", "high"] | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = None
    lynx: LynxOptions | None = None

    def thinking_asked(self) -> ThinkingAsked:
        if isinstance(self.think, str):
            return ThinkingAsked(effort=self.think)
        return ThinkingAsked(think=self.think is not False)

    def ask(self, messages: list[dict[str, Any]], defaults: GenerationOptions, served: Served, **tools: Any) -> Ask:
        options = self.options or Options()
        schema = {"type": "object"} if self.format == "json" else (self.format or None)
        wire = {ours: f"options.{theirs}" for theirs, ours in HONOURED.items()} | {"json_schema": "format"}
        sampling = options.sampling(served)
        return Ask(
            messages=messages,
            options=generation_options(
                defaults,
                self.thinking_asked(),
                self.lynx,
                wire,
                json_schema=schema,
                logprobs=self.logprobs or bool(self.top_logprobs),
                top_logprobs=self.top_logprobs or 0,
                **sampling,
                **tools,
            ),
            stops=list(options.stop or []),
            stream=self.stream,
            model=self.model,
        )


class ChatRequest(_Common):
    messages: list[ChatMessage] = []
    tools: list[WireTool] | None = None


class GenerateRequest(_Common):
    prompt: StrictStr = ""
    system: StrictStr | None = None
    suffix: StrictStr | None = None
    template: StrictStr | None = None
    context: list[Any] | None = None
    raw: StrictBool = False
    images: list[Any] | None = None


@dataclass(frozen=True)
class Route:
    """One generation route: how its body becomes an ``Ask``, and its reply's text field."""

    path: str
    request: type[_Common]

    @property
    def is_chat(self) -> bool:
        return self.path == "/api/chat"

    def parse(self, body: Any) -> _Common:
        request = validate(self.request, body)
        if isinstance(request, ChatRequest):
            for i, message in enumerate(request.messages):
                if message.images:
                    raise unsupported(f"messages[{i}].images")
        else:
            refuse_present(body, ("suffix", "template", "context", "raw", "images"))
        return request

    def start(self, body: Any, defaults: GenerationOptions, served: Served) -> tuple[Ask, OllamaWriter]:
        request = self.parse(body)
        if request.think not in (None, False) and not served.thinks:  # Ollama's own words and status
            raise ApiError(400, f'"{request.model}" does not support thinking', param="think")
        tools: dict[str, Any] = {}
        if isinstance(request, ChatRequest):
            messages = [m.plain() for m in request.messages]
            last_turn_check(messages, "the last message must come from the user, a tool or the system", "messages")
            tools = {"tools": [t.function for t in request.tools or []]}
        else:
            system = [{"role": "system", "content": request.system}] if request.system else []
            messages = [*system, {"role": "user", "content": request.prompt}]
        ask = request.ask(messages, defaults, served, **tools)
        return ask, OllamaWriter(request.model, chat=self.is_chat, logprobs=ask.options.logprobs)


ROUTES = {r.path: r for r in (Route("/api/chat", ChatRequest), Route("/api/generate", GenerateRequest))}


def only_loads(body: Any, route: Route) -> bool:
    """A request with nothing to answer (no messages / an empty prompt): Ollama loads the model
    and says so; apps send it to warm a model up."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return False
    return not body.get("messages") if route.is_chat else body.get("prompt") in (None, "")


def loaded(body: dict[str, Any], route: Route) -> dict[str, Any]:
    reply = {"model": body["model"], "created_at": _now(), "done": True, "done_reason": "load"}
    if route.is_chat:
        reply["message"] = {"role": "assistant", "content": ""}
    else:
        reply["response"] = ""
    return reply


def shown_model(body: Any) -> str:
    """The model ``/api/show`` asks about (``model``, or the older ``name``)."""
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'model' is required: the model's name, as /api/tags lists it", param="model")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _details(model: ModelDescription) -> dict[str, Any]:
    arch = model.info.architecture
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization,
    }


def _file(model: ModelDescription) -> tuple[int, str, str]:
    """The model file's size, a digest of its identity (not its bytes: hashing gigabytes would
    stall the route) and its modification time."""
    path = Path(model.info.path)
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{model.info.weights_fingerprint}".encode())
    modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return stat.st_size, digest.hexdigest(), modified


def listed(model: ModelDescription) -> dict[str, Any]:
    """The model as ``/api/tags`` lists it."""
    size, digest, modified = _file(model)
    tagged = f"{model.served_name}:latest"
    return {
        "name": tagged,
        "model": tagged,
        "modified_at": modified,
        "size": size,
        "digest": digest,
        "details": _details(model),
    }


def running(model: ModelDescription) -> dict[str, Any]:
    """The model as ``/api/ps`` lists it: loaded for as long as the server runs."""
    entry = listed(model)
    del entry["modified_at"]
    return {**entry, "expires_at": "2999-12-31T00:00:00Z", "size_vram": 0, "context_length": model.n_ctx}


def show(model: ModelDescription) -> dict[str, Any]:
    """``/api/show``: the template, the parameters, and the capabilities strict clients check."""
    info = model.info
    arch = info.architecture
    _, _, modified = _file(model)
    parameters = [f"temperature {model.temperature:g}", f"num_ctx {model.n_ctx}"]
    return {
        "modelfile": f"FROM {info.path}\n",
        "parameters": "\n".join(parameters),
        "template": model.chat_template,
        "license": "",
        "details": _details(model),
        "model_info": {
            "general.architecture": arch,
            "general.name": info.name,
            f"{arch}.context_length": info.n_ctx_train,
            f"{arch}.embedding_length": info.n_embd,
            f"{arch}.block_count": info.n_layer,
            "tokenizer.ggml.vocab_size": info.n_vocab,
        },
        "capabilities": ["completion", "thinking", "tools"] if model.thinks else ["completion", "tools"],
        "modified_at": modified,
    }


def _logprobs(items: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.text,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v} for t, v in lp.top],
        }
        for lp in items
    ]


class OllamaWriter:
    """One reply as Ollama writes it: NDJSON objects, the last with ``done`` and the counts."""

    media_type = "application/x-ndjson"

    def __init__(self, model: str, *, chat: bool, logprobs: bool) -> None:
        self.model = model
        self.chat = chat
        self.logprobs = logprobs

    def _part(self, content: str, thinking: str | None, logprobs: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:
        part: dict[str, Any] = {"model": self.model, "created_at": _now()}
        if self.chat:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            part["message"] = message
        else:
            part["response"] = content
            if thinking:
                part["thinking"] = thinking
        if self.logprobs and logprobs:
            part["logprobs"] = _logprobs(logprobs)
        return part

    @staticmethod
    def _line(part: dict[str, Any]) -> str:
        return json.dumps(part, ensure_ascii=False) + "\n"

    def opening(self) -> list[str]:
        return []

    def thinking(self, piece: Piece) -> list[str]:
        return [self._line({**self._part("", piece.thinking), "done": False})]

    def keepalive(self) -> list[str]:
        return []  # NDJSON has no keep-alive line

    def answer(self, piece: Piece) -> list[str]:
        return [self._line({**self._part(piece.answer, None, piece.answer_logprobs), "done": False})]

    def _done(self, got: Collected) -> dict[str, Any]:
        result: GenerationResult = got.reply.result
        tokens = result.tokens
        total = int(result.seconds * 1e9)
        decode = int(tokens.completion / result.tokens_per_second * 1e9) if result.tokens_per_second else total
        decode = min(decode, total)
        return {
            "done": True,
            "done_reason": "length" if got.length_cut else "stop",
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": tokens.prompt,
            "prompt_eval_duration": total - decode,
            "eval_count": tokens.completion,
            "eval_duration": decode,
            "lynx": lynx_stats(got.reply),
        }

    def _calls(self, part: dict[str, Any], result: GenerationResult) -> dict[str, Any]:
        """``part`` with the reply's calls in its message (Ollama's shape: arguments an object)."""
        if self.chat and result.tool_calls:
            calls = [{"id": c.id, "function": {"name": c.name, "arguments": c.arguments}} for c in result.tool_calls]
            part["message"]["tool_calls"] = calls
        return part

    def closing(self, got: Collected) -> list[str]:
        return [self._line({**self._calls(self._part("", None), got.reply.result), **self._done(got)})]

    def failed(self, error: ApiError) -> list[str]:
        return [self._line({"error": error.message})]

    def response(self, got: Collected) -> dict[str, Any]:
        reply = got.reply
        part = self._part(got.answer, reply.thinking or None, tuple(reply.answer_logprobs))
        return {**self._calls(part, reply.result), **self._done(got)}
