"""Where a thinking budget should cut: the runtime's soft rule against alternatives, measured.

    python studies/budget_cuts.py   # → studies/results/budget-cuts.json

On the bench's 500 recorded greedy traces of the reasoner (``studies/results/reasoner-synthetic500``)
each rule picks its cut at 25, 50 and 75 % of the median thinking; what the runtime writes there
(the conclude exit, then the model's greedy answer) is generated once per new cut on the bench's
replay door and graded — cuts the bench already answered are read from its ``problems.jsonl``.
Rules (grace: tokens the cut may run past the budget to reach a line or sentence end):

- ``raw``: exactly at the budget (llama.cpp's ``--reasoning-budget``);
- ``back``: the first line or sentence end within a grace of an eighth after the budget, else
  back to the last one before it (the runtime's rule until this study);
- ``runtime``: the runtime's rule now (``CutWindow.budget``): the same grace, else the last gap
  between words in it — forward, so the cut never returns to a finished step, whose result the
  answer would then repeat — and back only when there is no room ahead;
- ``back, grace ¼`` and ``runtime, grace ¼``: the same with a grace of a quarter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lynx_edge.lab.evaluate import Bench, BenchSettings, _Answers
from lynx_edge.lab.methods import budget_key, budget_tokens, median_thinking
from lynx_edge.lab.problems import load_problems
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.limits import MAX_GRACE, MAX_REACH, NATURAL, CutWindow, boundary_at

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "studies/results/reasoner-synthetic500"
OUT = ROOT / "studies/results/budget-cuts.json"
FRACTIONS = (0.25, 0.5, 0.75)


def window(tokens: int, grace_share: int) -> CutWindow:
    grace = min(MAX_GRACE, max(1, tokens // grace_share))
    return CutWindow(tokens, tokens + grace, tokens - min(MAX_REACH, max(1, tokens // 4)))


def back_first(w: CutWindow, pieces: Sequence[str]) -> int:
    """The rule before this study: a natural boundary in the grace, else the last one before
    the target, else the last gap between words in the window, else the hard end."""
    text = "".join(pieces[: w.start])
    kinds = {}
    for i in range(w.start, min(w.hard + 1, len(pieces))):
        kinds[i] = boundary_at(text, pieces[i])
        text += pieces[i]
    after = [i for i in range(w.target, w.hard + 1) if kinds.get(i) in NATURAL]
    if after or w.hard >= len(pieces):
        return after[0] if after else len(pieces)
    natural = [i for i in range(w.start, w.target) if kinds[i] in NATURAL]
    gaps = [i for i, kind in kinds.items() if kind is not None]
    return (natural or gaps or [w.hard])[-1]


RULES: dict[str, Callable[[Sequence[str], int], int]] = {
    "raw": lambda pieces, tokens: tokens,
    "back": lambda pieces, tokens: back_first(window(tokens, 8), pieces),
    "runtime": lambda pieces, tokens: CutWindow.budget(tokens).cut(pieces),
    "back, grace ¼": lambda pieces, tokens: back_first(window(tokens, 4), pieces),
    "runtime, grace ¼": lambda pieces, tokens: window(tokens, 4).cut(pieces),
}


def main() -> None:
    traces = [json.loads(line) for line in (BENCH / "traces.jsonl").open()]
    known = {r["id"]: r for r in map(json.loads, (BENCH / "problems.jsonl").open())}
    problems = {p.id: p for p in load_problems(ROOT / "data/synthetic/test.jsonl").problems}
    engine = Engine("smollm2-135m-reasoner", n_threads=2)
    bench = Bench(engine, BenchSettings())
    median = median_thinking([t["thinking_tokens"] for t in traces])
    results: dict[str, dict[str, list[tuple[bool, int]]]] = {r: {f"{f:.0%}": [] for f in FRACTIONS} for r in RULES}
    for n, trace in enumerate(traces):
        problem = problems[trace["id"]]
        thinking = trace["thinking_tokens"]
        pieces = engine.token_texts(trace["trace"])[:thinking]
        answered = {
            m["cut"]: (m["correct"], m["tokens"]) for m in known[trace["id"]]["methods"].values() if m.get("exited")
        }
        full = known[trace["id"]]["methods"]["full"]
        cuts = {
            (rule, f): cut if (cut := pick(pieces, budget_tokens(median, f))) < thinking else None
            for rule, pick in RULES.items()
            for f in FRACTIONS
        }
        new = sorted({c for c in cuts.values() if c is not None and c not in answered})
        if new:
            answers = _Answers(
                bench._exit_text(engine.token_texts(trace["trace"])), engine.exit_text, bench._answer_cap
            )
            answers.prepare(bench.replay, trace, new, [])
            for cut in new:
                forced, _ = answers.get(cut)
                answered[cut] = (bench._graded(problem, forced)[1], cut + forced.tokens)
        for (rule, f), cut in cuts.items():
            results[rule][f"{f:.0%}"].append(answered[cut] if cut is not None else (full["correct"], full["tokens"]))
        if n % 50 == 0:
            print(f"{n}/{len(traces)} problems", file=sys.stderr)
    table = {
        rule: {
            f: {
                "accuracy": round(sum(c for c, _ in rows) / len(rows), 4),
                "mean_tokens": round(sum(t for _, t in rows) / len(rows), 1),
            }
            for f, rows in by_f.items()
        }
        for rule, by_f in results.items()
    }
    bench_rows = {f"{f:.0%}": budget_key(f) for f in FRACTIONS}
    OUT.write_text(
        json.dumps(
            {"problems": len(traces), "median_thinking": median, "rules": table, "bench_keys": bench_rows}, indent=2
        )
        + "\n"
    )
    for rule, by_f in table.items():
        print(rule, {f: (v["accuracy"], v["mean_tokens"]) for f, v in by_f.items()})


if __name__ == "__main__":
    main()
