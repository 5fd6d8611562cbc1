"""A bench summary as files: ``summary.json``, a Markdown table and ``pareto.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lynx_edge.errors import SettingError
from lynx_edge.lab.methods import FULL, ORACLE, pareto_front

COLUMNS = (
    ("method", "method", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("mean_tokens", "mean tokens", "{:.1f}"),
    ("median_tokens", "median tokens", "{:g}"),
    ("saved", "saved vs full", "{:.1%}"),
    ("decoded_tokens", "decoded tokens", "{:.1f}"),
    ("decoded_saved", "decoded saved", "{:.1%}"),
    ("thinking_saved", "thinking saved", "{:.1%}"),
    ("exit_rate", "exit rate", "{:.1%}"),
    ("help", "help", "{}"),
    ("harm", "harm", "{}"),
    ("premature_rate", "premature", "{:.1%}"),
    ("changed", "answers changed [95 %]", "rate"),
    ("spoilt_among_right", "spoilt among full-right [95 %]", "rate"),
    ("seconds", "s / problem", "{:.2f}"),
    ("time_saved", "time saved", "{:.1%}"),
    ("extra_tokens", "trial tokens", "{:.1f}"),
    ("loops", "loops", "{}"),
)
SECONDS = next(i for i, (key, _, _) in enumerate(COLUMNS) if key == "seconds")


def rate_cell(rate: dict[str, Any] | None) -> str:
    """A realised rate with its 95 % interval: "1.2 % [0.5–2.6 %] (6/500)"."""
    if not rate or rate["rate"] is None:
        return "—"
    low, high = rate["interval_95"]
    return f"{rate['rate']:.1%} [{low:.1%}–{high:.1%}] ({rate['hits']}/{rate['n']})"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary rows as a Markdown table, with what the run was above it."""
    head = (
        f"**{summary['model']}**, probe {summary['probe'] or 'none'}, {summary['problems']} problems "
        f"({', '.join(Path(d).name for d in summary['data'])}), seed {summary['seed']}; "
        f"median full thinking {summary['median_thinking_tokens']:g} tokens.\n\n"
    )
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---" if key == "method" else "---:" for key, _, _ in COLUMNS) + "|",
    ]
    front = set(summary.get("pareto_front", []))
    for row in summary["rows"]:
        cells = [rate_cell(row.get(key)) if fmt == "rate" else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        if not row.get("seconds_measured", True):
            cells[SECONDS] += "*"
        if row["method"] in front:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    foot = (
        f"\n\nTokens = thinking kept + exit text + answer ({summary.get('exit_style', 'boxed')} exits); decoded "
        "tokens add the trial answers decoded on a branch (not part of the output). Help: full wrong → right; "
        "harm: full right → wrong; premature = harm / problems. Answers changed: the reply's answer differs from "
        "full thinking's (what an `agreement` α bounds); spoilt among full-right: harm / the problems full "
        "thinking gets right (what a `harm` α bounds); each with its 95 % Wilson interval. Seconds per problem "
        "include trials and probe calls; * = estimated (the trace's measured prefill and per-token rate up to the "
        "cut, plus the measured answer and trials), else measured. Budget rows cut as the runtime's thinking "
        "budget does: at the first line or sentence end within a small grace after the budget, else the last one "
        "before it (never inside a word or number); `raw` rows cut at exactly the budget's token (llama.cpp's "
        "--reasoning-budget); `lynx … ≤ budget` rows: the default LYNX rule inside that budget. The loop guard "
        "row cuts where the runtime's guard closes a looping thinking; loops = replies that loop to the token "
        "limit. The oracle exits at the first cue whose forced answer is right (a bound, not a "
        "method). Bold: on the accuracy–tokens Pareto front.\n"
    )
    return head + "\n".join(lines) + foot


def pareto_plot(summary: dict[str, Any], path: Path) -> None:
    """Accuracy against mean tokens, one point per method setting, ``full`` as the reference."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SettingError("the Pareto plot needs matplotlib: pip install 'lynx-edge[bench]'") from None
    colors = {
        "lynx": "tab:blue",
        "deer": "tab:orange",
        "consistency": "tab:green",
        "budget": "tab:gray",
        ORACLE: "tab:purple",
        FULL: "black",
    }
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    labels: dict[tuple[float, float], list[str]] = {}
    for z, (family, color) in enumerate(colors.items()):
        rows = [r for r in summary["rows"] if r["method"].split()[0] == family]
        if not rows:
            continue
        xs = [r["mean_tokens"] for r in rows]
        ys = [100 * r["accuracy"] for r in rows]
        is_full = family == FULL
        ax.scatter(
            xs, ys, color=color, label=family, marker="*" if is_full else "o", s=160 if is_full else 40, zorder=3 + z
        )
        for r, x, y in zip(rows, xs, ys):
            labels.setdefault((x, y), []).append(r["method"].split(" ", 1)[1] if " " in r["method"] else r["method"])
    xs_all = [x for x, _ in labels]
    mid = (min(xs_all) + max(xs_all)) / 2 if xs_all else 0.0
    near = (max(xs_all) - min(xs_all)) / 40 if xs_all else 0.0
    merged: dict[tuple[float, float], list[str]] = {}
    for (x, y), names in sorted(labels.items()):  # settings on (nearly) one point share one label
        home = next((k for k in merged if k[1] == y and abs(k[0] - x) <= near), (x, y))
        merged.setdefault(home, []).extend(names)
    row_count: dict[float, int] = {}
    for (x, y), names in merged.items():
        k = row_count[y] = row_count.get(y, -1) + 1  # alternate above/below along one accuracy level
        note = ax.annotate(
            ", ".join(names),
            (x, y),
            textcoords="offset points",
            xytext=(5, 5 if k % 2 == 0 else -12),
            fontsize=7,
            ha="right" if x > mid else "left",
            annotation_clip=False,
        )
        note.set_in_layout(False)
    full = next((r for r in summary["rows"] if r["method"] == FULL), None)
    if full:
        ax.axhline(100 * full["accuracy"], color="black", lw=0.6, ls="--")
        ax.axvline(full["mean_tokens"], color="black", lw=0.6, ls="--")
    ax.set_xlabel("mean tokens per problem (thinking + answer)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{summary['model']} — {summary['problems']} problems", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path) -> list[Path]:
    """Write summary.json, table.md and pareto.png into ``out``; returns their paths."""
    summary = {**summary, "pareto_front": pareto_front(summary["rows"])}
    written = [out / "summary.json", out / "table.md"]
    written[0].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    written[1].write_text(markdown_table(summary))
    pareto_plot(summary, out / "pareto.png")
    return [*written, out / "pareto.png"]
