"""``lynx-edge bench``: paired evaluation of exit methods, and the speed benchmarks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lynx_edge.cli.options import MODEL, N_CTX, NO_PROBE, PROBE, THREADS, checked_schema_option, schema_option
from lynx_edge.errors import exits_on_user_error

EXIT_INTERRUPTED = 130


def fractions(ctx: click.Context, param: click.Parameter, value: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(set(value)))


@click.group(invoke_without_command=True)
@click.option(
    "--data",
    "-d",
    multiple=True,
    type=click.Path(),
    help="Benchmark JSONL (GSM8K, MATH-500, AIME, CommonsenseQA, SVAMP, ASDiv, MAWPS, synthetic); repeatable.",
)
@click.option(
    "--out", "-o", type=click.Path(), default="bench-out", show_default=True, help="Output directory (resumable)."
)
@click.option("--limit", type=int, help="Take this many problems (a seeded mix of all files).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the problem order and every trace.")
@MODEL
@PROBE
@NO_PROBE
@THREADS
@N_CTX
@checked_schema_option("max_tokens", "--max-tokens", help="Cap on a full trace (default: the preset's).")
@checked_schema_option("temperature", "--temperature", "-t", help="Trace sampling temperature (default: the preset's).")
@checked_schema_option("top_p", "--top-p", help="Trace nucleus probability (default: the preset's).")
@click.option(
    "--deer-lambda",
    type=float,
    multiple=True,
    default=(0.95,),
    show_default=True,
    callback=fractions,
    help="DEER confidence threshold; repeatable.",
)
@click.option(
    "--deer-cues", help="Comma-separated cues where trial methods try an answer (default: all the model's cues)."
)
@click.option(
    "--consistency-k",
    type=int,
    multiple=True,
    default=(2,),
    show_default=True,
    help="Consistency run length; repeatable.",
)
@click.option(
    "--trial-min-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Training-free methods: no trial before this many thinking tokens.",
)
@click.option(
    "--trial-gap",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Training-free methods: thinking tokens between two trials.",
)
@click.option(
    "--budget",
    type=float,
    multiple=True,
    default=(0.25, 0.5, 0.75),
    show_default=True,
    callback=fractions,
    help="Thinking budget as a fraction of the median full thinking length (a soft and a raw cut); repeatable.",
)
@schema_option("exit_style", "--exit-style", help="What an exit writes, as in `run --exit-style`.")
@schema_option("promise", "--promise", help="The kind of the default LYNX rule the budget rows pair with.")
@click.pass_context
@exits_on_user_error
def bench(
    ctx,
    data,
    out,
    limit,
    seed,
    model,
    probe,
    no_probe,
    threads,
    n_ctx,
    max_tokens,
    temperature,
    top_p,  # noqa: ANN001, ANN201
    deer_lambda,
    deer_cues,
    consistency_k,
    trial_min_tokens,
    trial_gap,
    budget,
    exit_style,
    promise,
):
    """Paired evaluation: full thinking, LYNX at every calibrated level, DEER, consistency,
    fixed budgets and the oracle exit, all on the same trace of each problem. Subcommands
    measure speed against plain llama.cpp."""
    if ctx.invoked_subcommand is not None:
        return
    if not data:
        raise click.UsageError("pass --data FILE (e.g. a SVAMP or GSM8K JSONL), or a subcommand such as `overhead`")
    from lynx_edge.lab.evaluate import BenchDir, BenchSettings, click_progress, run_bench
    from lynx_edge.lab.problems import load_many, order
    from lynx_edge.lab.report import write_report
    from lynx_edge.runtime.engine import Engine

    problems, notes = load_many(data)
    for note in notes:
        click.echo(note, err=True)
    problems = order(problems, seed)[:limit] if limit else order(problems, seed)
    if ungraded := [p.id for p in problems if p.gold is None]:
        raise click.UsageError(
            f"bench grades answers, and {len(ungraded)} problem(s) have no gold answer ({ungraded[0]}, …): "
            "pass benchmark files with answers (questions alone feed `lynx-edge probe collect`)"
        )
    settings = BenchSettings(
        seed=seed,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        deer_lambdas=deer_lambda,
        deer_cues=tuple(c.strip().lower() for c in deer_cues.split(",") if c.strip()) if deer_cues else (),
        consistency_ks=tuple(sorted(set(consistency_k))),
        trial_min_tokens=trial_min_tokens,
        trial_gap=trial_gap,
        budgets=budget,
        exit_style=exit_style,
        promise=promise,
    )
    engine = Engine(model, probe=None if no_probe else (probe or "auto"), n_ctx=n_ctx, n_threads=threads)
    store = BenchDir(out)
    click.echo(
        f"{engine.model_name} · probe {engine.probe_name or 'none'} · {len(problems)} problems → {out}", err=True
    )
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
@exits_on_user_error
def bench_overhead(model, tokens, repeats, threads, out):  # noqa: ANN001, ANN201
    """P1 armed-probe/plain loop, P2 loop/llama-cpp-python, P3 cost per cue, P4 cost per trial,
    P5 the model's decode speed against its base model (a merged adapter)."""
    from lynx_edge.bench.overhead import format_table, measure_overhead

    report = measure_overhead(model, n_tokens=tokens, repeats=repeats, n_threads=threads)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    click.echo(format_table(report))
    click.echo(f"wrote {out}")


@bench.command("chat")
@click.option("--model", "-m", help="GGUF path or preset name.")
@click.option(
    "--prompt",
    default="Write a long story about a cat who learns to fly.",
    show_default=True,
    help="A prompt that keeps the model writing for all --tokens.",
)
@click.option("--tokens", type=click.IntRange(min=1), default=256, show_default=True, help="Tokens per timed answer.")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Rounds; each runs both paths in a random order.",
)
@click.option("--threads", type=int, help="CPU threads (same for both).")
@click.option(
    "--switch-to",
    default="smollm2-135m",
    show_default=True,
    help="The model the chat switches to and back from (timed: the first load, then the switches).",
)
@click.option("--out", type=click.Path(), default="bench-chat.json", show_default=True, help="JSON report path.")
@exits_on_user_error
def bench_chat(model, prompt, tokens, rounds, threads, switch_to, out):  # noqa: ANN001, ANN201
    """Tokens/s inside the chat app against the `lynx-edge run` loop, same engine and prompt;
    then the time a model switch takes in the chat."""
    from lynx_edge.bench.chat_speed import measure_chat_speed

    report = measure_chat_speed(model, prompt, max_tokens=tokens, rounds=rounds, n_threads=threads, switch_to=switch_to)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    lo, hi = report["chat_vs_run_90ci"]
    click.echo(f"run  {report['median_run']:.1f} tok/s (median of {rounds}, {report['threads']} threads)")
    click.echo(f"chat {report['median_chat']:.1f} tok/s in a {report['terminal']}")
    click.echo(f"chat/run = {report['chat_vs_run']:.3f} (90% interval {lo:.3f}–{hi:.3f})")
    click.echo(
        f"model switch to {switch_to}: first load {report['switch_first_load_s']:.2f} s, "
        f"then at most {report['switch_loaded_max_s']:.3f} s with both loaded"
    )
    click.echo(f"wrote {out}")
