"""``python -m tools``: the probe toolkit (collect → train → calibrate) for any GGUF model.

Every step is resumable or cheap to rerun; see tools/README.md for a full run.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lynx_edge.cli import user_errors


@click.group()
def main() -> None:
    """Make a LYNX probe for a GGUF model: collect, train, calibrate."""


@main.command()
@click.option("--model", "-m", help="GGUF path or preset name (default: the embedded SmolLM2).")
@click.option("--data", "-d", multiple=True, required=True, type=click.Path(), help="JSONL corpus (repeatable).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Collection directory (resumed when it exists).")
@click.option("--limit", type=int, help="Use this many problems (a seeded mix of all files).")
@click.option("--temperature", type=float, default=0.6, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-tokens", type=int, default=None, help="Token cap per trace (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split hash, the order and each trace.")
@click.option("--train-frac", type=float, default=0.6, show_default=True)
@click.option("--cal-frac", type=float, default=0.2, show_default=True, help="The rest is the test split.")
@click.option("--baseline", type=int, default=20, show_default=True, help="Also time plain generation of this many traces.")
@click.option("--batch", type=int, default=25, show_default=True, help="Problems per saved shard.")
@click.option("--threads", type=int, help="CPU threads for llama.cpp.")
@user_errors
def collect(model, data, out, limit, temperature, top_p, max_tokens, seed, train_frac, cal_frac, baseline, batch, threads):  # noqa: ANN001
    """Generate traces, capture cue features, and label each cue by a forced exit."""
    from tools.collect import run_collect, throughput
    from tools.collection import Collection

    if not (0 < train_frac < 1 and 0 < cal_frac < 1 and train_frac + cal_frac < 1):
        raise click.BadParameter("train and cal fractions must be positive and sum to less than 1")
    try:
        counts = run_collect(
            model=model, data=data, out=out, limit=limit, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, seed=seed, fractions=(train_frac, cal_frac), baseline=baseline,
            batch=batch, threads=threads,
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    traces = Collection(out).traces()
    click.echo(f"cue events per split: {json.dumps(counts)}")
    click.echo(f"throughput: {json.dumps(throughput(traces))}")


@main.command()
@click.argument("collection", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Probe directory to write probe.onnx into.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-iter", type=int, default=200, show_default=True, help="Most epochs (early stopping usually ends sooner).")
@user_errors
def train(collection, out, seed, max_iter):  # noqa: ANN001
    """Train the probe on COLLECTION's train split and export it to ONNX."""
    from tools.train import run_train

    with click.progressbar(length=1, label="train", show_eta=False) as bar:
        report = run_train(collection, out, seed=seed, max_iter=max_iter)
        bar.update(1)
    for split in ("train", "cal", "test"):
        r = report[split]
        click.echo(f"{split:5s}: {r['n']} events ({r['positives']} right exits)  AUC {r['auc']}  accuracy {r['accuracy']}")
    click.echo(f"ONNX check: max |Δp| {report['onnx_max_abs_diff']:.1e}; wrote {out / 'probe.onnx'}")


@main.command()
@click.argument("collection", type=click.Path(path_type=Path))
@click.option("--probe", "-p", "probe_dir", required=True, type=click.Path(path_type=Path), help="Probe directory from `train`.")
@click.option("--resplits", type=int, default=200, show_default=True, help="Evaluate over this many random re-splits (0: skip).")
@click.option("--p-value", type=click.Choice(["binomial", "hb"]), default="binomial", show_default=True, help="Learn-then-Test p-values.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def calibrate(collection, probe_dir, resplits, p_value, seed):  # noqa: ANN001
    """Calibrate thresholds per δ and α and write the probe card (with test-split metrics)."""
    from tools.calibrate import run_calibrate

    card = run_calibrate(collection, probe_dir, resplits=resplits, seed=seed, p_value=p_value)
    click.echo(report_card(card))


def report_card(card) -> str:  # noqa: ANN001
    """The card's calibration and test metrics as a few readable lines."""
    m = card.metrics
    lines = [f"traces {m['traces']}, cue events {m['events']}, traces without cues {m['traces_without_cues']}"]
    t = m["test"]
    lines.append(f"test: AUC {t['auc']}, accuracy without exits {t['accuracy_without_exits']}")
    for r in t["rules"]:
        lines.append(
            f"  {r['mode']:10s} {r['level']:<5} premature/cue {r['per_cue_premature_exit_rate']}  "
            f"premature/answer {r['per_answer_premature_exit_rate']}  exits {r['exit_rate']}  "
            f"saved {r['tokens_saved']:.1%}  accuracy {r['accuracy_with_exits']}"
        )
    for e in card.calibration["per_cue"]:
        if e["q_neg"] is None:
            lines.append(f"  δ={e['delta']}: never exits at this δ (too few wrong-exit calibration events)")
    for e in card.calibration["per_answer"]:
        if e["threshold"] is None:
            lines.append(f"  α={e['alpha']}: never exits at this α (too few calibration traces to certify it)")
    if ev := m.get("resplit_evaluation"):
        lines.append(f"re-splits ({ev['resplits']}): how often the promised rate was exceeded")
        for key, r in ev["rates"].items():
            lines.append(f"  {key:18s} {r['violation_frequency']:.1%} (mean rate {r['mean_rate']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
