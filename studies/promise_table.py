"""The README's promise tables from the benches' summaries: for every promise kind and level, the
realised rate it bounds beside the level, with a 95 % interval.

    python studies/promise_table.py studies/results/reasoner-synthetic500 studies/results/reasoner-svamp300

Reads each directory's ``summary.json`` (written by ``lynx-edge bench``) and prints one Markdown
table per directory: full thinking, then each LYNX rule of the card (agreement and harm, per answer
then per cue) with accuracy, mean tokens, thinking saved, answers changed and answers spoilt among
the ones full thinking gets right. A row whose realised rate is over its level is marked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lynx_edge.lab.report import rate_cell


def level_of(method: str) -> tuple[str, str, float] | None:
    """("agreement", "α", 0.02) for "lynx agreement α=0.02"; None for other methods."""
    parts = method.split()
    if len(parts) != 3 or parts[0] != "lynx" or "=" not in parts[2]:
        return None
    symbol, level = parts[2].split("=")
    return parts[1], symbol, float(level)


def table(summary: dict[str, Any]) -> str:
    rows = {r["method"]: r for r in summary["rows"]}
    full = rows["full"]
    lines = [
        f"{summary['problems']} problems ({', '.join(summary['data'])}), {summary['probe']}: full thinking "
        f"{full['accuracy']:.1%} accurate, {full['mean_tokens']:.0f} tokens",
        "",
        "| rule | accuracy | tokens (mean) | thinking saved | answers changed [95 %] "
        "| spoilt among full-right [95 %] |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, r in rows.items():
        parsed = level_of(method)
        if parsed is None:
            continue
        promise, symbol, level = parsed
        bound = r["changed"] if promise == "agreement" else r["spoilt_among_right"]
        over = " **over**" if symbol == "α" and bound["rate"] is not None and bound["rate"] > level else ""
        lines.append(
            f"| {promise} {symbol} {level:g}{over} | {r['accuracy']:.1%} | {r['mean_tokens']:.0f} | "
            f"{r['thinking_saved']:.1%} | {rate_cell(r['changed'])} | {rate_cell(r['spoilt_among_right'])} |"
        )
    return "\n".join(lines)


def main(dirs: list[str]) -> None:
    for d in dirs:
        summary = json.loads((Path(d) / "summary.json").read_text())
        print(f"### {d}\n\n{table(summary)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
