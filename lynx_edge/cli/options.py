"""Click options shared by the commands; the generation flags are derived from the one schema.

Each request flag is made from its ``GenerationOptions`` field (type, choices, default, help
text), and the values become one ``GenerationOptions`` in ``options_from`` — the edge where
they are checked, once. A value click cannot parse, or one outside its field's range, is a
usage error naming the flag (exit code 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import click

from lynx_edge.errors import SettingError
from lynx_edge.runtime.options import GenerationOptions, field_type

F = Callable[..., Any]


class LogitBias(click.ParamType):
    """``TOKEN=BIAS`` (a token id and a bias in [-100, 100])."""

    name = "token=bias"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, float]:
        if isinstance(value, tuple):
            return value
        try:
            token, bias = value.split("=")
            return int(token), float(bias)
        except ValueError:
            self.fail(f"logit bias must look like TOKEN=BIAS (e.g. 1234=-100), got {value!r}", param, ctx)


def apply(options: list[Callable[[F], F]], func: F) -> F:
    for option in reversed(options):
        func = option(func)
    return func


# The flags every command that loads a model spells the same way (run, chat, serve, bench, probe).
MODEL = click.option(
    "--model", "-m", help="GGUF path or preset name (see `lynx-edge models`; default: the embedded reasoner)."
)
PROBE = click.option(
    "--probe", type=click.Path(), help="Probe directory or card.json (default: the probe shipped for this model)."
)
NO_PROBE = click.option("--no-probe", is_flag=True, help="Run without a probe (training-free exits only).")
N_CTX = click.option(
    "--n-ctx", type=click.IntRange(min=16), help="Context size in tokens per request (default: the preset's)."
)
THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads for llama.cpp (default: the physical cores no other busy process wants, re-checked as it runs).",
)


def checked_schema_option(name: str, *flags: str, **extra: Any) -> Callable[[F], F]:
    """``schema_option`` for a command that does not build ``GenerationOptions`` from its flags
    (bench, probe): the value is checked against its field's range as it is parsed."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and value != ():
            try:
                GenerationOptions(**{name: value})
            except SettingError as exc:
                raise click.BadParameter(str(exc).split(": pass e.g.")[0]) from None
        return value

    return schema_option(name, *flags, callback=check, **extra)


def auto_choice(flag: str, choices: tuple[str, ...], help: str) -> Callable[[F], F]:
    """A flag that takes "auto" (the default: lynx-edge decides) or one of ``choices``."""
    return click.option(flag, type=click.Choice(["auto", *choices]), default="auto", show_default=True, help=help)


def model_options(func: F) -> F:
    """Options shared by every command that loads a model and probe."""
    return apply(
        [
            MODEL,
            PROBE,
            NO_PROBE,
            N_CTX,
            THREADS,
            auto_choice(
                "--thinks",
                ("yes", "no"),
                "Whether the model thinks before answering: auto judges by its chat template and tokenizer; "
                "no serves it as a plain chat model (no forced <think>, no early exit).",
            ),
            auto_choice(
                "--probe-device",
                ("cpu", "coreml"),
                "Where the probe runs: auto keeps small probes on the CPU (faster than a CoreML "
                "dispatch) and moves large ones to CoreML on macOS.",
            ),
        ],
        func,
    )


def schema_option(name: str, *flags: str, **extra: Any) -> Callable[[F], F]:
    """The click option for ``GenerationOptions`` field ``name``: its type or choices, its
    default and its help text, with no range of its own (``options_from`` checks it)."""
    info = GenerationOptions.model_fields[name]
    kind = field_type(name)
    settings: dict[str, Any] = {"help": info.description}
    if get_origin(kind) is Literal:
        settings["type"] = click.Choice(get_args(kind))
    elif kind in (int, float):
        settings["type"] = kind
    if info.default not in (None, ()):
        settings.update(default=info.default, show_default=True)
    return click.option(*flags, name, **{**settings, **extra})


FLAGS = {
    "think": "--no-think",
    "json_schema": "--json-schema",
    "tools": "--tools",
}  # fields whose flag is not --field-name


def risk_options(func: F) -> F:
    """The risk level and the calibration it is read from (a request's, or a server's and a
    chat's default for requests that name none)."""
    return apply(
        [schema_option("alpha", "--alpha"), schema_option("mode", "--mode"), schema_option("promise", "--promise")],
        func,
    )


def exit_options(func: F) -> F:
    """Who may close the thinking early."""
    return apply(
        [
            schema_option("exit", "--exit"),
            click.option("--no-exit", is_flag=True, help="Same as --exit none: the plain loop, the baseline."),
            schema_option("trial_level", "--trial-level"),
        ],
        func,
    )


def thinking_options(func: F) -> F:
    """How long the thinking may run: a budget and the loop guard (a request's, or a server's
    and a chat's default)."""
    return apply(
        [
            schema_option("thinking_budget", "--thinking-budget"),
            click.option(
                "--loop-guard",
                "loop_guard_switch",
                type=click.Choice(["on", "off"]),
                default="on",
                show_default=True,
                help=GenerationOptions.model_fields["loop_guard"].description,
            ),
        ],
        func,
    )


def tool_options(func: F) -> F:
    """The functions the model may call (the run prints a call; the chat shows it)."""
    return apply(
        [
            click.option(
                "--tools",
                "tools_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="A JSON list of functions the model may call ({name, description, parameters}, "
                "or OpenAI's {type: function, function: …}).",
            ),
            schema_option("tool_choice", "--tool-choice"),
        ],
        func,
    )


def generation_options(func: F) -> F:
    """Sampling and answer options of one request."""
    return apply(
        [
            schema_option("seed", "--seed"),
            schema_option("temperature", "--temperature", "-t"),
            schema_option("top_p", "--top-p"),
            schema_option("max_tokens", "--max-tokens"),
            schema_option("exit_style", "--exit-style"),
            click.option("--no-think", is_flag=True, help=GenerationOptions.model_fields["think"].description),
            click.option(
                "--json-schema",
                "json_schema_file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="The answer (not the thinking) must be JSON valid against this schema file.",
            ),
            click.option("--json-object", is_flag=True, help="The answer must be a JSON object."),
            tool_options,
            schema_option("answer_reserve", "--answer-reserve"),
            thinking_options,
            schema_option("frequency_penalty", "--frequency-penalty"),
            schema_option("presence_penalty", "--presence-penalty"),
            schema_option(
                "logit_bias", "--logit-bias", type=LogitBias(), multiple=True, default=(), show_default=False
            ),
        ],
        func,
    )


def options_from(kwargs: dict[str, Any]) -> GenerationOptions:
    """The request the flags in ``kwargs`` ask for (the flags are taken out of ``kwargs``),
    checked here once; a bad value is a usage error naming its flag."""
    values: dict[str, Any] = {k: kwargs.pop(k) for k in list(kwargs) if k in GenerationOptions.model_fields}
    if kwargs.pop("no_exit", False):
        values["exit"] = "none"
    if kwargs.pop("no_think", False):
        values["think"] = False
    if "loop_guard_switch" in kwargs:
        values["loop_guard"] = kwargs.pop("loop_guard_switch") == "on"
    values["json_schema"] = _json_schema(kwargs.pop("json_schema_file", None), kwargs.pop("json_object", False))
    values["tools"] = _tools(kwargs.pop("tools_file", None))
    if values.get("top_logprobs"):
        values["logprobs"] = True
    given = {k: v for k, v in values.items() if v is not None and v != ()}
    try:
        return GenerationOptions(**given)
    except SettingError as exc:
        flag = FLAGS.get(exc.field or "", f"--{(exc.field or '').replace('_', '-')}")
        message = str(exc).replace(f"pass e.g. {exc.field}=", f"pass e.g. {flag} ")  # the flag, not the field
        raise click.BadParameter(message, param_hint=f"'{flag}'") from None


def _tools(path: Path | None) -> list[dict[str, Any]] | None:
    """The functions of a --tools file, in either common shape."""
    if path is None:
        return None
    try:
        tools = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingError(f"cannot read the tools {path} ({exc}): pass a JSON file", field="tools") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise SettingError(f"the tools in {path} are not a JSON list of objects: pass [{{name, parameters}}, …]")
    return [t.get("function", t) if t.get("type") == "function" else t for t in tools]


def _json_schema(path: Path | None, json_object: bool) -> dict[str, Any] | None:
    """The JSON schema the answer must follow, from --json-schema FILE / --json-object."""
    if path is not None:
        try:
            schema = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingError(f"cannot read the JSON schema {path} ({exc}): pass a JSON file") from None
        if not isinstance(schema, dict):
            raise SettingError(f"the JSON schema in {path} is not a JSON object: pass a schema file")
        return schema
    return {"type": "object"} if json_object else None
