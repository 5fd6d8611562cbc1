"""``lynx-edge probe``: make a probe (collect → train → calibrate) for any GGUF model.

    lynx-edge probe make --model MODEL -d data.jsonl -o probes/NAME   # all three steps
    lynx-edge probe collect --model MODEL -d data.jsonl -o runs/NAME --parallel 8 [--shard 1/4]
    lynx-edge probe merge runs/a runs/b -o runs/all                   # join shards
    lynx-edge probe train runs/NAME -o probes/NAME
    lynx-edge probe calibrate runs/NAME -p probes/NAME
    lynx-edge probe info probes/NAME

Every step is resumable or cheap to rerun; see tools/README.md for a full run on a GPU box.
Training needs the ``train`` extra (``pip install 'lynx-edge[train]'``); the commands say so
in one line when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from lynx_edge.cli.options import MODEL, THREADS, checked_schema_option
from lynx_edge.errors import SettingError, exits_on_user_error

TRAIN_EXTRA = {"collect": ("sympy",), "train": ("sklearn", "onnx"), "calibrate": ("sklearn",)}


def require_train_extra(step: str) -> None:
    """Refuse a step whose libraries are not installed, naming the extra that brings them."""
    missing = [m for m in TRAIN_EXTRA[step] if importlib.util.find_spec(m) is None]
    if missing:
        raise SettingError(f"lynx-edge probe {step} needs {', '.join(missing)}: pip install 'lynx-edge[train]'")


@click.group()
def probe() -> None:
    """Make a LYNX probe for a GGUF model (make, or collect → train → calibrate) and inspect one."""


def shard_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int]:
    """``I/N`` (1-based) → (I-1, N)."""
    if value is None:
        return 0, 1
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("use I/N, e.g. 2/8 for the second of eight shards") from None
    if not 1 <= index <= count:
        raise click.BadParameter(f"shard {value}: I must lie in 1..N")
    return index - 1, count


class TemperatureRange(click.ParamType):
    """A temperature (``0.6``) or a range of them (``0.6:0.8``)."""

    name = "T|LOW:HIGH"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, (float, tuple)):
            return value
        try:
            parts = [float(v) for v in str(value).split(":")]
        except ValueError:
            parts = []
        if len(parts) == 1 and parts[0] >= 0:
            return parts[0]
        if len(parts) == 2 and 0 < parts[0] < parts[1]:
            return (parts[0], parts[1])
        self.fail(f"{value!r} is neither a temperature nor a range LOW:HIGH with 0 < LOW < HIGH, e.g. 0.6:0.8")


def collect_options(func):  # noqa: ANN001, ANN201
    """Options shared by ``collect`` and ``make``."""
    for option in reversed(
        [
            MODEL,
            click.option(
                "--data", "-d", multiple=True, required=True, type=click.Path(), help="JSONL corpus (repeatable)."
            ),
            click.option("--limit", type=int, help="Use this many problems (a seeded mix of all files)."),
            click.option(
                "--temperature",
                type=TemperatureRange(),
                help="Sampling temperature, or a range LOW:HIGH that each trace draws from "
                "(default: the preset's, as the runtime runs).",
            ),
            checked_schema_option("top_p", "--top-p"),
            checked_schema_option(
                "exit_style",
                "--exit-style",
                help="Label each cue by the exit the runtime takes in this style (run/chat/serve: conclude).",
            ),
            checked_schema_option("max_tokens", "--max-tokens", help="Token cap per trace (default: the preset's)."),
            click.option(
                "--seed", type=int, default=0, show_default=True, help="Seeds the split hash, the order and each trace."
            ),
            click.option("--train-frac", type=float, default=0.6, show_default=True),
            click.option("--cal-frac", type=float, default=0.2, show_default=True, help="The rest is the test split."),
            click.option(
                "--parallel",
                "-p",
                "parallel",
                type=click.IntRange(1, 64),
                help="Problems decoded together (default: 8 with a GPU, 4 on a CPU).",
            ),
            click.option(
                "--baseline",
                type=int,
                default=0,
                show_default=True,
                help="Also time plain sequential generation of this many traces.",
            ),
            click.option("--batch", type=int, default=25, show_default=True, help="Problems per saved shard."),
            THREADS,
        ]
    ):
        func = option(func)
    return func


def _collect(
    out: Path,
    *,
    model,
    data,
    limit,
    temperature,
    top_p,
    exit_style,
    max_tokens,
    seed,
    train_frac,
    cal_frac,  # noqa: ANN001
    parallel,
    baseline,
    batch,
    threads,
    shard=(0, 1),
) -> None:
    require_train_extra("collect")
    from lynx_edge.lab.collect import run_collect, throughput
    from lynx_edge.lab.collection import Collection

    if not (0 < train_frac < 1 and 0 < cal_frac < 1 and train_frac + cal_frac < 1):
        raise click.BadParameter("train and cal fractions must be positive and sum to less than 1")
    try:
        counts = run_collect(
            model=model,
            data=data,
            out=out,
            limit=limit,
            temperature=temperature,
            top_p=top_p,
            exit_style=exit_style,
            max_tokens=max_tokens,
            seed=seed,
            fractions=(train_frac, cal_frac),
            baseline=baseline,
            batch=batch,
            threads=threads,
            parallel=parallel,
            shard=shard,
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    click.echo(f"cue events per split: {json.dumps(counts)}")
    click.echo(f"throughput: {json.dumps(throughput(Collection(out)))}")


@probe.command()
@collect_options
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Collection directory (resumed when it exists)."
)
@click.option(
    "--shard",
    callback=shard_option,
    help="Collect only slice I of N of the problems (I/N, e.g. 3/8); join with `merge`.",
)
@exits_on_user_error
def collect(out, shard, **kwargs) -> None:  # noqa: ANN001
    """Generate traces, capture cue features, and label each cue by a forced exit."""
    _collect(out, shard=shard, **kwargs)


@probe.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="The merged collection directory.")
@exits_on_user_error
def merge(sources, out) -> None:  # noqa: ANN001
    """Join shard collections (same model, settings and seed) into one."""
    from lynx_edge.lab.collection import merge as merge_collections

    counts = merge_collections(list(sources), out)
    click.echo(f"merged {len(sources)} collections into {out}; cue events per split: {json.dumps(counts)}")


@probe.command()
@click.argument("collection", type=click.Path(path_type=Path))
@click.option(
    "--out", "-o", required=True, type=click.Path(path_type=Path), help="Probe directory to write probe.onnx into."
)
@click.option(
    "--probe",
    "kind",
    type=click.Choice(["auto", "mlp", "linear"]),
    default="auto",
    show_default=True,
    help="The method's MLP, a logistic regression, or whichever cross-validates better on the train split.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--max-iter", type=int, default=200, show_default=True, help="Most epochs (early stopping usually ends sooner)."
)
@exits_on_user_error
def train(collection, out, kind, seed, max_iter) -> None:  # noqa: ANN001
    """Train the probe on COLLECTION's train split and export it to ONNX."""
    _train(collection, out, kind=kind, seed=seed, max_iter=max_iter)


def _train(collection: Path, out: Path, *, kind: str, seed: int, max_iter: int) -> None:
    require_train_extra("train")
    from lynx_edge.lab.train import run_train

    report = run_train(collection, out, kind=kind, seed=seed, max_iter=max_iter)
    for promise, made in report["probes"].items():
        click.echo(f"{promise} probe ({made['label']}): {made['probe']}")
        if made["cross_validation_auc"]:
            tried = ", ".join(f"{name} {auc}" for name, auc in made["cross_validation_auc"].items())
            click.echo(f"  cross-validated AUC on the train split: {tried}")
        for split in ("train", "cal", "test"):
            r = made[split]
            click.echo(
                f"  {split:5s}: {r['n']} events ({r['positives']} positive)  AUC {r['auc']}  accuracy {r['accuracy']}"
            )
        click.echo(f"  ONNX check: max |Δp| {made['onnx_max_abs_diff']:.1e}; wrote {out / made['file']}")


@probe.command()
@click.argument("collections", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--probe",
    "-p",
    "probe_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Probe directory from `train` (or a new one with --score trial).",
)
@click.option(
    "--score",
    type=click.Choice(["probe", "trial"]),
    default="probe",
    show_default=True,
    help="What to calibrate: the probe's output, or the trial answers' confidence (no probe needed).",
)
@click.option(
    "--draws",
    type=click.IntRange(0),
    default=2000,
    show_default=True,
    help="Check each promise over this many calibration sets drawn from the held-out traces (0: skip).",
)
@click.option(
    "--p-value",
    type=click.Choice(["binomial", "hb"]),
    default="binomial",
    show_default=True,
    help="Learn-then-Test p-values.",
)
@click.option(
    "--per-cue",
    type=click.Choice(["pac", "marginal"]),
    default="pac",
    show_default=True,
    help="Per-cue promise: PAC (rate ≤ δ in 90 % of calibration draws) or marginal (≤ δ on average).",
)
@click.option(
    "--default-alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="The level run/chat/serve use when none is asked for, in (0, 1).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@exits_on_user_error
def calibrate(collections, probe_dir, score, draws, p_value, per_cue, default_alpha, seed) -> None:  # noqa: ANN001
    """Calibrate thresholds per δ and α and write the probe card (with test-split metrics).

    Each COLLECTION is one condition set of the card (e.g. one greedy, one sampled at
    T 0.6:0.8), calibrated apart; the first is the card's main one. Without COLLECTIONS the
    card is re-derived from the probe directory's events.json."""
    _calibrate(
        list(collections),
        probe_dir,
        score=score,
        draws=draws,
        p_value=p_value,
        per_cue=per_cue,
        default_alpha=default_alpha,
        seed=seed,
    )


def _calibrate(collections: list[Path], probe_dir: Path, **kwargs) -> None:  # noqa: ANN003
    require_train_extra("calibrate")
    from lynx_edge.lab.calibrate import report_card, run_calibrate

    card = run_calibrate(collections, probe_dir, **kwargs)
    click.echo(report_card(card))


@probe.command("make")
@collect_options
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Probe directory to write (probe.onnx, card.json).",
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    help="Collection directory (default: runs/<probe name>; resumed when it exists).",
)
@exits_on_user_error
def make_probe(out, work, seed, **kwargs) -> None:  # noqa: ANN001
    """Collect, train and calibrate with the method's defaults, then print the card."""
    from lynx_edge.display import describe_card
    from lynx_edge.runtime.probe_card import ProbeCard

    for step in TRAIN_EXTRA:  # all three steps' libraries, before an hour of collection
        require_train_extra(step)
    work = work or Path("runs") / out.name
    _collect(work, seed=seed, **kwargs)
    _train(work, out, kind="auto", seed=seed, max_iter=200)
    _calibrate([work], out, score="probe", draws=2000, p_value="binomial", per_cue="pac", seed=seed)
    click.echo(describe_card(ProbeCard.load(out)))


@probe.command("info")
@click.argument("path", type=click.Path())
@exits_on_user_error
def info(path: str) -> None:
    """Print a probe card: model fingerprint, features, cues, exit text, the conditions each
    calibration holds in, thresholds and their promises, test metrics."""
    from lynx_edge.display import describe_card
    from lynx_edge.runtime.probe_card import ProbeCard

    click.echo(describe_card(ProbeCard.load(Path(path))))
