"""The ``lynx-edge`` command line: run, chat, serve, models, probe info, bench.

Exit codes: 0 done; 1 a problem with a file, a model or the request (one line that names it
and the fix); 2 a malformed command line (an unknown option, a value out of its range);
130 interrupted (what was generated stays on screen). ``LYNX_EDGE_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lynx_edge.cli.bench import bench
from lynx_edge.cli.options import (
    exit_options,
    generation_options,
    model_options,
    options_from,
    risk_options,
    schema_option,
    thinking_options,
    tool_options,
)
from lynx_edge.cli.probe import probe
from lynx_edge.errors import SettingError, exits_on_user_error

EXIT_INTERRUPTED = 130


def prepare_model(model: str | None) -> None:
    """Make a preset's model file before any screen is drawn (merging the shipped adapter
    into its base takes ~10 s, once per machine), saying so."""
    from lynx_edge.runtime.model_files import local_file, resolve_model
    from lynx_edge.runtime.presets import DEFAULT_PRESET, PRESETS

    preset = PRESETS.get(model or DEFAULT_PRESET)
    if preset is not None and preset.adapter and local_file(preset) is None:
        click.echo(f"preparing {preset.name}: merging its adapter into the base model, once (about 10 s)", err=True)
        resolve_model(model)


def load_engine(model, probe, no_probe, n_ctx, threads, probe_device, thinks, *, parallel: int = 1):  # noqa: ANN001, ANN201
    from lynx_edge.runtime.engine import Engine

    return Engine(
        model,
        probe=None if no_probe else (probe or "auto"),
        n_ctx=n_ctx,
        n_threads=threads,
        parallel=parallel,
        probe_device=probe_device,
        thinks={"auto": None, "yes": True, "no": False}[thinks],
    )


def engine_args(kwargs: dict[str, Any]) -> tuple:
    keys = ("model", "probe", "no_probe", "n_ctx", "threads", "probe_device", "thinks")
    return tuple(kwargs.pop(k) for k in keys)


def read_prompt(prompt: str | None) -> str:
    """The prompt argument, or stdin for '-' (or when stdin is piped and no prompt is given)."""
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = sys.stdin.read()
    if prompt is None:
        raise click.UsageError("pass a PROMPT, or '-' to read it from stdin")
    if not prompt.strip():
        raise SettingError("the prompt is empty: type a question (or pass '-' to read it from stdin)")
    return prompt


class OneLineErrors(click.Group):
    """Bad input is one line on stderr that names the problem (and ``--help`` for the
    syntax), never a usage dump: exit code 2 for a malformed command line, 1 otherwise."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "lynx-edge"
            click.echo(f"Error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):
                click.echo("interrupted before any output", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("Aborted.", err=True)
            sys.exit(1)


@click.group(cls=OneLineErrors)
@click.version_option(package_name="lynx-edge")
def main() -> None:
    """Reasoning models that stop thinking once they know the answer (LYNX on llama.cpp)."""


main.add_command(bench)
main.add_command(probe)


@main.command()
@click.argument("prompt", required=False)
@model_options
@risk_options
@exit_options
@generation_options
@schema_option("measure_savings", "--measure-savings", is_flag=True, show_default=False)
@schema_option(
    "top_logprobs",
    "--top-logprobs",
    help="With --json: log-probabilities of the answer tokens, with this many alternatives.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@exits_on_user_error
def run(prompt: str | None, as_json: bool, **kwargs: Any) -> None:
    """Answer PROMPT once ('-' reads stdin): the thinking (dimmed, stderr), the answer
    (stdout; with --json-schema, the JSON) and a stats line."""
    from lynx_edge.terminal import RunPrinter

    prompt = read_prompt(prompt)
    load = engine_args(kwargs)
    options = options_from(kwargs)
    try:
        prepare_model(load[0])
        engine = load_engine(*load)
    except KeyboardInterrupt:
        click.echo("interrupted while loading the model", err=True)
        sys.exit(EXIT_INTERRUPTED)
    events = engine.generate(prompt, options)
    printer = RunPrinter(as_json=as_json, notices=engine.notices)
    try:
        for event in events:
            printer.handle(event)
    except KeyboardInterrupt:
        events.close()
        printer.interrupted()
        sys.exit(EXIT_INTERRUPTED)
    printer.finish()


@main.command()
@model_options
@risk_options
@thinking_options
@tool_options
@schema_option("max_tokens", "--max-tokens", help="Cap on tokens per reply (default: the preset's).")
@click.option(
    "--no-measure-savings",
    is_flag=True,
    help="Do not finish un-exited thinking in the background to measure the saving.",
)
@exits_on_user_error
def chat(no_measure_savings: bool, **kwargs: Any) -> None:
    """Terminal chat: live thinking with every exit decision, answers, tokens saved, history."""
    from lynx_edge.chat.app import ChatApp
    from lynx_edge.runtime.presets import DEFAULT_PRESET

    model, probe, *rest = engine_args(kwargs)
    start = str(model or DEFAULT_PRESET)
    defaults = options_from(kwargs)
    prepare_model(start)

    def load(spec: str):  # noqa: ANN202 - an Engine; --probe is the start model's, a picked one gets its own
        return load_engine(spec, probe if spec == start else None, *rest)

    app = ChatApp(load, defaults, model=start, measure_savings=not no_measure_savings)
    app.run()


@main.command()
def models() -> None:
    """List model presets (which have a shipped probe) and the GGUF files on this machine."""
    from lynx_edge.display import probe_device_words
    from lynx_edge.runtime.model_files import available_models
    from lynx_edge.runtime.probe_card import ProbeCard

    for choice in available_models():
        plain = "  · this model does not think: no early exit" if choice.thinks is False else ""
        if not choice.preset:
            click.echo(f"  {Path(choice.name).name:32} {'':9} {choice.where}{plain}")
            continue
        mark = "*" if choice.default else " "
        click.echo(f"{mark} {choice.name:32} {'probe ✓' if choice.probe else 'no probe':9} {choice.description}{plain}")
        click.echo(f"  {'':32} {'':9} {choice.where}")
        if choice.probe:
            click.echo(f"  {'':32} {'':9} probe runs on {probe_device_words(ProbeCard.load(choice.probe))}")


@main.command()
@model_options
@risk_options
@thinking_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (keep 127.0.0.1 unless the network is trusted).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on; 0 takes a free one (the ready line on stdout says which).",
)
@click.option(
    "--allowed-host",
    multiple=True,
    help="A Host name to serve besides the loopback ones (repeatable; '*' turns the check off). "
    "Requests naming any other host get 403: web pages cannot reach the server by DNS rebinding.",
)
@click.option(
    "--parent-pid",
    type=click.IntRange(min=1),
    help="Stop when this process ends (the app that started the server: a sidecar).",
)
@click.option("--exit-with-stdin", is_flag=True, help="Stop when stdin closes (the app's end of a pipe).")
@click.option(
    "--api-key",
    envvar="LYNX_EDGE_API_KEY",
    help="Require 'Authorization: Bearer KEY' (or 'x-api-key: KEY') on every route but /health.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Requests decoded together (one KV slot each).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=0),
    default=32,
    show_default=True,
    help="Requests that may wait for a slot; more get 503.",
)
@click.option(
    "--cors-origin",
    multiple=True,
    help="A web origin allowed to call the API from a browser (repeatable; none by default).",
)
@exits_on_user_error
def serve(
    host: str,
    port: int,
    allowed_host: tuple[str, ...],
    parent_pid: int | None,
    exit_with_stdin: bool,
    api_key: str | None,
    parallel: int,
    max_queue: int,
    cors_origin: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Serve the model to apps over the APIs they speak.

    \b
    OpenAI:    POST /v1/chat/completions, POST /v1/responses, GET /v1/models
    Anthropic: POST /v1/messages, POST /v1/messages/count_tokens
    Ollama:    POST /api/chat, /api/generate, /api/show; GET /api/tags, /api/ps, /api/version
    GET /health (503 "loading" until the model is loaded, then "ready")

    \b
    Once the model is loaded, one JSON line goes to stdout:
    {"event": "ready", "url": "http://127.0.0.1:PORT", "port": PORT, "model": NAME}
    and nothing else does (logs go to stderr)."""
    from lynx_edge.runtime.presets import DEFAULT_PRESET
    from lynx_edge.serve.app import ServerSettings, model_id
    from lynx_edge.serve.app import serve as run_server
    from lynx_edge.serve.sidecar import Lifecycle

    load_args = engine_args(kwargs)
    defaults = options_from(kwargs)
    if "*" in allowed_host:
        click.echo(
            click.style("--allowed-host '*': any Host is served (web pages can reach it)", fg="yellow"), err=True
        )

    def load():  # noqa: ANN202 - the engine, on the loading thread
        prepare_model(load_args[0])
        engine = load_engine(*load_args, parallel=parallel)
        engine.policy_for(defaults)  # a risk level the probe cannot serve fails now, not per request
        for line in engine.notices:
            click.echo(click.style(line, fg="yellow"), err=True)
        click.echo(f"serving {model_id(engine)} (probe: {engine.probe_name or 'none'}, {parallel} at a time)", err=True)
        return engine

    settings = ServerSettings(
        host=host,
        port=port,
        api_key=api_key,
        max_queue=max_queue,
        cors_origins=cors_origin,
        defaults=defaults,
        allowed_hosts=allowed_host,
    )
    run_server(load, load_args[0] or DEFAULT_PRESET, settings, Lifecycle(parent_pid, exit_with_stdin))


if __name__ == "__main__":
    main()
