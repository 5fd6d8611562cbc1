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
@model_options
@click.option("--max-tokens", type=int, help="Cap on generated tokens per reply (default: the preset's).")
@click.option("--no-measure-savings", is_flag=True, help="Do not finish un-exited thinking in the background to measure the saving.")
@user_errors
def chat(model, probe, no_probe, alpha, mode, n_ctx, threads, max_tokens, no_measure_savings):  # noqa: ANN001, ANN201
    """Terminal chat: live thinking with every exit decision, answers, tokens saved, history."""
    from lynx_edge.chat_app import ChatApp
    from lynx_edge.policy import check_alpha

    check_alpha(alpha)
    app = ChatApp(
        lambda: load_engine(model, probe, no_probe, alpha, mode, n_ctx, threads),
        measure_savings=not no_measure_savings,
        max_tokens=max_tokens,
    )
    app.run()


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


def fractions(ctx: click.Context, param: click.Parameter, value: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(set(value)))


@main.group(invoke_without_command=True)
@click.option("--data", "-d", multiple=True, type=click.Path(), help="Benchmark JSONL (GSM8K, MATH-500, AIME, CommonsenseQA, SVAMP, ASDiv, MAWPS); repeatable.")
@click.option("--out", "-o", type=click.Path(), default="bench-out", show_default=True, help="Output directory (resumable).")
@click.option("--limit", type=int, help="Take this many problems (a seeded mix of all files).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the problem order and every trace.")
@click.option("--model", "-m", help="GGUF path or preset name.")
@click.option("--probe", type=click.Path(), help="Probe directory (default: the model's shipped probe).")
@click.option("--threads", type=int, help="CPU threads for llama.cpp.")
@click.option("--n-ctx", type=int, help="Context size (default: the preset's).")
@click.option("--max-tokens", type=int, help="Cap on a full trace (default: the preset's).")
@click.option("--temperature", "-t", type=float, help="Trace sampling temperature (default: the preset's).")
@click.option("--top-p", type=float, help="Trace nucleus probability (default: the preset's).")
@click.option("--deer-lambda", type=float, multiple=True, default=(0.95,), show_default=True, callback=fractions, help="DEER confidence threshold; repeatable.")
@click.option("--deer-cues", help="Comma-separated cues where DEER tries an answer (default: all the model's cues).")
@click.option("--budget", type=float, multiple=True, default=(0.25, 0.5, 0.75), show_default=True, callback=fractions, help="Hard thinking budget as a fraction of the median full thinking length; repeatable.")
@click.pass_context
@user_errors
def bench(ctx, data, out, limit, seed, model, probe, threads, n_ctx, max_tokens, temperature, top_p, deer_lambda, deer_cues, budget):  # noqa: ANN001, ANN201, E501
    """Paired evaluation: full thinking, LYNX at every calibrated level, DEER and fixed
    budgets, all on the same trace of each problem. `bench overhead`: cost against plain
    llama.cpp."""
    if ctx.invoked_subcommand is not None:
        return
    if not data:
        raise click.UsageError("pass --data FILE (e.g. a SVAMP or GSM8K JSONL), or a subcommand such as `overhead`")
    from lynx_edge.bench_eval import BenchDir, BenchSettings, click_progress, run_bench
    from lynx_edge.bench_report import write_report
    from lynx_edge.engine import Engine
    from lynx_edge.tasks import load_many, order

    problems, notes = load_many(data)
    for note in notes:
        click.echo(note, err=True)
    problems = order(problems, seed)[:limit] if limit else order(problems, seed)
    settings = BenchSettings(
        seed=seed, max_tokens=max_tokens, temperature=temperature, top_p=top_p, deer_lambdas=deer_lambda,
        deer_cues=tuple(c.strip().lower() for c in deer_cues.split(",") if c.strip()) if deer_cues else (),
        budgets=budget,
    )
    engine = Engine(model, probe=probe or "auto", n_ctx=n_ctx, n_threads=threads)
    store = BenchDir(out)
    click.echo(f"{engine.model_name} · probe {engine.probe_name or 'none'} · {len(problems)} problems → {out}", err=True)
    try:
        summary = run_bench(engine, problems, settings, store, data, progress=click_progress)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished problems are kept in {out}; run the same command to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        engine.close()
    paths = write_report(summary, Path(out))
    click.echo(paths[1].read_text())
    click.echo("wrote " + ", ".join(str(p) for p in paths))


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


@bench.command("chat")
@click.option("--model", "-m", help="GGUF path or preset name.")
@click.option("--prompt", default="Write a long story about a cat who learns to fly.", show_default=True, help="A prompt that keeps the model writing for all --tokens.")
@click.option("--tokens", type=click.IntRange(min=1), default=256, show_default=True, help="Tokens per timed answer.")
@click.option("--rounds", type=click.IntRange(min=1), default=15, show_default=True, help="Rounds; each runs both paths in a random order.")
@click.option("--threads", type=int, help="CPU threads (same for both).")
@click.option("--out", type=click.Path(), default="bench-chat.json", show_default=True, help="JSON report path.")
@user_errors
def bench_chat(model, prompt, tokens, rounds, threads, out):  # noqa: ANN001, ANN201
    """Tokens/s inside the chat app against the `lynx-edge run` loop, same engine and prompt."""
    from lynx_edge.bench_chat import measure_chat_speed

    report = measure_chat_speed(model, prompt, max_tokens=tokens, rounds=rounds, n_threads=threads)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    lo, hi = report["chat_vs_run_90ci"]
    click.echo(f"run  {report['median_run']:.1f} tok/s (median of {rounds}, {report['threads']} threads)")
    click.echo(f"chat {report['median_chat']:.1f} tok/s in a {report['terminal']}")
    click.echo(f"chat/run = {report['chat_vs_run']:.3f} (90% interval {lo:.3f}–{hi:.3f})")
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
