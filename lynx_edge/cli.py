"""The ``lynx-edge`` command line: run, models, probe info, bench.

User errors (``LynxError``) print one line and exit 1; Ctrl-C prints what was generated so
far and exits 130. Set ``LYNX_EDGE_DEBUG=1`` to see tracebacks instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lynx_edge.errors import LynxError

EXIT_INTERRUPTED = 130


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``LynxError`` into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LynxError as exc:
            if os.environ.get("LYNX_EDGE_DEBUG"):
                raise
            raise click.ClickException(str(exc)) from None

    return wrapper


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that loads a model and probe."""
    for option in reversed(
        [
            click.option("--model", "-m", help="GGUF path or preset name (see `lynx-edge models`)."),
            click.option("--probe", type=click.Path(), help="Probe directory or card.json (default: the model's shipped probe)."),
            click.option("--no-probe", is_flag=True, help="Run without a probe: cues are shown, never scored."),
            click.option("--alpha", type=float, default=0.1, show_default=True, help="Risk level in (0, 1): the calibrated entry at or below it is used."),
            click.option("--mode", type=click.Choice(["per-cue", "per-answer"]), help="Which calibration to use (default: per-answer when the probe has it)."),
            click.option("--n-ctx", type=int, help="Context size in tokens (default: the preset's)."),
            click.option("--threads", type=int, help="CPU threads for llama.cpp."),
        ]
    ):
        func = option(func)
    return func


def load_engine(model, probe, no_probe, alpha, mode, n_ctx, threads):  # noqa: ANN001, ANN201
    from lynx_edge.engine import Engine

    return Engine(
        model,
        probe=None if no_probe else (probe or "auto"),
        alpha=alpha,
        mode=mode,
        n_ctx=n_ctx,
        n_threads=threads,
    )


@click.group()
@click.version_option(package_name="lynx-edge")
def main() -> None:
    """Reasoning models that stop thinking once they know the answer (LYNX on llama.cpp)."""


@main.command()
@click.argument("prompt")
@model_options
@click.option("--no-exit", is_flag=True, help="Same loop, never exits: the baseline.")
@click.option("--seed", type=int, help="Sampling seed (default: random, reported in --json).")
@click.option("--temperature", "-t", type=float, help="Sampling temperature; 0 is greedy (default: the preset's).")
@click.option("--top-p", type=float, help="Nucleus probability (default: the preset's).")
@click.option("--max-tokens", type=int, help="Cap on generated tokens (default: the preset's).")
@click.option("--exit-style", type=click.Choice(["conclude", "boxed"]), default="conclude", show_default=True, help="conclude: close the thinking, the model answers; boxed: greedy \\boxed{} answer.")
@click.option("--measure-savings", is_flag=True, help="After an exit, run the un-exited trajectory to its end and report the exact saving.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@user_errors
def run(prompt, model, probe, no_probe, alpha, mode, n_ctx, threads, no_exit, seed, temperature, top_p, max_tokens, exit_style, measure_savings, as_json):  # noqa: ANN001, ANN201, E501
    """Answer PROMPT once, printing the thinking (dimmed, stderr), the answer and a stats line."""
    from lynx_edge.render import RunPrinter

    engine = load_engine(model, probe, no_probe, alpha, mode, n_ctx, threads)
    events = engine.generate(
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        exit_style=exit_style,
        lynx=not no_exit,
        measure_savings=measure_savings,
    )
    printer = RunPrinter(as_json=as_json)
    try:
        for event in events:
            printer.handle(event)
    except KeyboardInterrupt:
        events.close()
        printer.interrupted()
        sys.exit(EXIT_INTERRUPTED)
    printer.finish()


@main.command()
def models() -> None:
    """List model presets and the GGUF files already on this machine."""
    from lynx_edge.model_files import cache_dir, cached_file, packaged_file
    from lynx_edge.presets import DEFAULT_PRESET, PRESETS

    for name, preset in PRESETS.items():
        local = packaged_file(preset) or cached_file(preset)
        where = str(local) if local else f"hub: {preset.hf_repo}/{preset.hf_file} (pulled on first use)"
        mark = "*" if name == DEFAULT_PRESET else " "
        click.echo(f"{mark} {name:32} {preset.description}")
        click.echo(f"  {'':32} {where}")
    extra = sorted(p for p in cache_dir().glob("*.gguf") if p.name not in {x.hf_file for x in PRESETS.values()}) if cache_dir().is_dir() else []
    for path in extra:
        click.echo(f"  {path.name:32} {path}")


@main.group()
def probe() -> None:
    """Inspect probe artifacts."""


@probe.command("info")
@click.argument("path", type=click.Path())
@user_errors
def probe_info(path: str) -> None:
    """Print a probe card: model fingerprint, features, cues, exit text, thresholds."""
    from lynx_edge.probe_card import ProbeCard
    from lynx_edge.render import describe_card

    click.echo(describe_card(ProbeCard.load(Path(path))))


@main.group()
def bench() -> None:
    """Benchmarks against plain llama.cpp, measured in the same run."""


@bench.command("overhead")
@click.option("--model", "-m", help="GGUF path or preset name.")
@click.option("--tokens", type=int, default=256, show_default=True, help="Tokens per timed run.")
@click.option("--repeats", type=int, default=15, show_default=True, help="Interleaved repeats per loop.")
@click.option("--threads", type=int, help="CPU threads (same for every loop).")
@click.option("--out", type=click.Path(), default="bench-overhead.json", show_default=True, help="JSON report path.")
@user_errors
def bench_overhead(model, tokens, repeats, threads, out):  # noqa: ANN001, ANN201
    """P1 armed-probe/plain loop, P2 loop/llama-cpp-python, P3 cost per cue."""
    from lynx_edge.bench_overhead import format_table, measure_overhead

    report = measure_overhead(model, n_tokens=tokens, repeats=repeats, n_threads=threads)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    click.echo(format_table(report))
    click.echo(f"wrote {out}")


@main.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep 127.0.0.1 unless the network is trusted).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--api-key", envvar="LYNX_EDGE_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health.")
@click.option("--max-queue", type=int, default=8, show_default=True, help="Requests that may wait while one runs; more get 503.")
@user_errors
def serve(model, probe, no_probe, alpha, mode, n_ctx, threads, host, port, api_key, max_queue):  # noqa: ANN001, ANN201
    """Serve the model over the OpenAI chat-completions API (POST /v1/chat/completions)."""
    from lynx_edge.server import model_id
    from lynx_edge.server import serve as run_server

    engine = load_engine(model, probe, no_probe, alpha, mode, n_ctx, threads)
    click.echo(f"serving {model_id(engine)} (probe: {engine.probe_name or 'none'}) on http://{host}:{port}/v1", err=True)
    run_server(engine, host=host, port=port, api_key=api_key, max_queue=max_queue)


if __name__ == "__main__":
    main()
