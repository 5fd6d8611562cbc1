"""Thinking that always ends in an answer, measured: the answer reserve under tight token
limits, and the loop guard on a set of prompts that loop.

    python studies/thinking_limits.py loop-set    # find loops → data/loops/loop-set.jsonl
    python studies/thinking_limits.py loop-guard  # guard on vs off on the loop set (512 tokens)
    python studies/thinking_limits.py loop-guard 2048  # the same up to the context's end
    python studies/thinking_limits.py reserve     # max_tokens 40/60/80, reserve on vs off
    python studies/thinking_limits.py false-alarms  # how close the bench's full traces come to a loop

Every run goes through the runtime's own loop (``Replay`` lanes, greedy, so the same on every
run of one machine); results land in ``studies/results/thinking-limits.json``.

The loop set: the models and prompts here that loop at greedy when nothing stops them — the
base SmolLM2-135M with its reasoning scaffold on the synthetic test problems, the reasoner on
SVAMP's problems, and a few prompts that invite repetition — each kept when its unguarded
reply holds a loop by the guard's own definition (``loops.find_loop``) and runs to the limit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lynx_edge.lab.grading import grade
from lynx_edge.lab.problems import Problem, load_problems
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.limits import MIN_SPAN, find_loop, max_copies
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.replay import Lane, Replay

ROOT = Path(__file__).resolve().parents[1]
LOOP_SET = ROOT / "data/loops/loop-set.jsonl"
RESULTS = ROOT / "studies/results/thinking-limits.json"
MAX_TOKENS = 512
SOURCES = (  # (model preset, data file, first N problems, thinking forced long)
    ("smollm2-135m", ROOT / "data/synthetic/test.jsonl", 60, False),
    ("smollm2-135m-reasoner", ROOT.parent / "shared/data/svamp/test.jsonl", 100, False),
    ("smollm2-135m-reasoner", ROOT / "data/synthetic/test.jsonl", 60, True),
)
REPEATING = (  # prompts that invite a model to repeat itself
    "Count from 1 to 200, one number per line.",
    "List the multiples of 7 below 500.",
    "Write the word 'apple' 100 times.",
    "Repeat after me forever: the answer is 4.",
)
PARALLEL = 4


def run_all(engine: Engine, items: list[tuple[str, GenerationOptions]]) -> list[Any]:
    """The runtime's result for each (prompt, options), decoded ``PARALLEL`` at a time."""
    results: dict[int, Any] = {}
    replay = Replay(engine)

    def job(i: int, prompt: str, options: GenerationOptions):  # noqa: ANN202 - a replay job
        def run(lane: Lane):  # noqa: ANN202 - a step
            result = yield from lane.generate(engine.plan(prompt, options))
            return i, result

        return run

    replay.run((job(i, p, o) for i, (p, o) in enumerate(items)), lambda done: results.__setitem__(done[0], done[1]))
    return [results[i] for i in range(len(items))]


def forced_long(engine: Engine) -> dict[str, Any]:
    """Options that keep the thinking open: the close tag's first token is never sampled
    (the reply ends at the limit, or wherever the model stops: the runtime then closes it)."""
    return {"logit_bias": ((engine.backend.tokenize(engine.think_close)[0], -100.0),)}


def unguarded(max_tokens: int = MAX_TOKENS, **more: Any) -> GenerationOptions:
    return GenerationOptions(
        temperature=0, seed=0, exit="none", max_tokens=max_tokens, answer_reserve=0, loop_guard=False, **more
    )


def build_loop_set() -> list[dict[str, Any]]:
    """Every candidate run unguarded; the ones that loop to the limit are the loop set."""
    found = []
    for preset, data, n, long in SOURCES:
        problems = load_problems(data).problems[:n]
        engine = Engine(preset, probe=None, n_ctx=1024, parallel=PARALLEL)
        options = unguarded(**forced_long(engine)) if long else unguarded()
        repeats = [] if long else [(q, unguarded()) for q in REPEATING]
        items = [(p.prompt, options) for p in problems] + repeats
        for i, result in enumerate(run_all(engine, items)):
            loop = find_loop(result.token_ids)
            if loop is None or result.finish_reason != "length":
                continue
            problem = problems[i] if i < len(problems) else None
            found.append(
                {
                    "id": f"{preset}/{problem.id if problem else f'repeat-{i - len(problems)}'}",
                    "model": preset,
                    "prompt": problem.prompt if problem else items[i][0],
                    "gold": problem.gold if problem else None,
                    "kind": problem.kind if problem else None,
                    "source": str(data.relative_to(ROOT.parent)) if problem else "studies/thinking_limits.py",
                    "thinking_forced_long": long,
                    "loop_period": loop.period,
                    "loop_start": loop.start,
                }
            )
        engine.close()
        print(f"{preset} ({data.name}): {len(found)} loops so far, {len(items)} prompts here", file=sys.stderr)
    LOOP_SET.parent.mkdir(parents=True, exist_ok=True)
    LOOP_SET.write_text("".join(json.dumps(f) + "\n" for f in found))
    return found


def correct(record: dict[str, Any], answer: str) -> bool | None:
    if record["gold"] is None:
        return None
    return grade(answer, record["gold"], record["kind"]).correct


def looping_tokens(result: Any) -> int:
    """Tokens a guarded reply spent in loops: the thinking from its loop's first copy to the
    loop exit, and the answer from its loop's first copy (a new loop, or the thinking's cycle
    resumed) to where it stopped — or all of an answer that ran to the limit (a loop the
    guard did not see as one)."""
    thinking = result.tokens.thinking
    kept = result.exit.token_index if result.exit else thinking
    in_thinking = find_loop(result.token_ids[:kept])
    spent = kept - in_thinking.start if in_thinking else 0
    answer = result.token_ids[thinking:]
    if result.finish_reason == "length":
        return spent + len(answer)
    cycle = result.token_ids[in_thinking.end - in_thinking.period : in_thinking.end] if in_thinking else None
    in_answer = find_loop(answer, relapse=cycle)
    return spent + (len(answer) - in_answer.start if in_answer else 0)


def measure_loop_guard(max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """Guard off vs on, per loop-set entry: tokens, the tokens spent looping, accuracy.

    How much of a loop the guard saves depends on how long the loop would have run: at the
    loop set's 512 tokens a loop of ~85-token cycles that starts ~50 tokens in has ~5 copies,
    and the guard must see 2.5 (normal rechecks repeat up to 2.1), so it cannot save much
    more than half. ``max_tokens`` past the context (2048 for the reasoner) runs each reply to
    the context's end, as a client that sends no limit gets from llama-server."""
    records = [json.loads(line) for line in LOOP_SET.open()]
    rows = []
    for preset in sorted({r["model"] for r in records}):
        mine = [r for r in records if r["model"] == preset]
        engine = Engine(preset, probe=None, n_ctx=max(1024, min(max_tokens, 2048)), parallel=PARALLEL)
        options = [
            unguarded(max_tokens, **forced_long(engine)) if r["thinking_forced_long"] else unguarded(max_tokens)
            for r in mine
        ]
        off = run_all(engine, [(r["prompt"], o) for r, o in zip(mine, options)])
        on = run_all(engine, [(r["prompt"], o.but(loop_guard=True)) for r, o in zip(mine, options)])
        engine.close()
        for r, a, b in zip(mine, off, on):
            loop = find_loop(a.token_ids)  # None: this run did not loop (another batch, another near-tie)
            looping = a.tokens.completion - loop.start if loop else 0  # from the loop's first copy on
            spent = looping_tokens(b)
            rows.append(
                {
                    "id": r["id"],
                    "looped_off": loop is not None,
                    "tokens_off": a.tokens.completion,
                    "tokens_on": b.tokens.completion,
                    "looping_tokens": looping,
                    "looping_tokens_on": spent,
                    "looping_saved": round(1 - spent / looping, 4) if looping else 0.0,
                    "exit_on": b.exit.policy if b.exit else None,
                    "loops_on": list(b.loops),
                    "finish_off": a.finish_reason,
                    "finish_on": b.finish_reason,
                    "answered_off": bool(a.answer),
                    "answered_on": bool(b.answer),
                    "correct_off": correct(r, a.answer),
                    "correct_on": correct(r, b.answer),
                }
            )
    graded = [r for r in rows if r["correct_off"] is not None]
    looping = sum(r["looping_tokens"] for r in rows)
    saved = looping - sum(r["looping_tokens_on"] for r in rows)
    return {
        "entries": len(rows),
        "looped_off": sum(r["looped_off"] for r in rows),
        "looping_tokens_saved": round(saved / looping, 4) if looping else 0.0,
        "mean_tokens_off": round(sum(r["tokens_off"] for r in rows) / len(rows), 1),
        "mean_tokens_on": round(sum(r["tokens_on"] for r in rows) / len(rows), 1),
        "answered_off": sum(r["answered_off"] for r in rows),
        "answered_on": sum(r["answered_on"] for r in rows),
        "graded": len(graded),
        "accuracy_off": round(sum(bool(r["correct_off"]) for r in graded) / len(graded), 4) if graded else None,
        "accuracy_on": round(sum(bool(r["correct_on"]) for r in graded) / len(graded), 4) if graded else None,
        "rows": rows,
    }


def measure_reserve(limits: tuple[int, ...] = (40, 60, 80), n: int = 100) -> dict[str, Any]:
    """max_tokens alone (what apps send) on the first ``n`` synthetic test problems, with the
    default answer reserve and with it off: non-empty answers and accuracy at each limit."""
    problems: list[Problem] = load_problems(ROOT / "data/synthetic/test.jsonl").problems[:n]
    engine = Engine(probe=None, n_ctx=1024, parallel=PARALLEL)
    out = {}
    for limit in limits:
        base = GenerationOptions(temperature=0, seed=0, exit="none", max_tokens=limit)
        for name, options in (("reserve", base), ("no reserve", base.but(answer_reserve=0))):
            results = run_all(engine, [(p.prompt, options) for p in problems])
            out[f"{limit} {name}"] = {
                "max_tokens": limit,
                "answered": round(sum(bool(r.answer.strip()) for r in results) / n, 4),
                "accuracy": round(
                    sum(grade(r.answer, p.gold, p.kind).correct for p, r in zip(problems, results)) / n, 4
                ),
                "budget_exits": sum(1 for r in results if r.exit and r.exit.policy == "budget"),
                "finish_length": sum(1 for r in results if r.finish_reason == "length"),
            }
            print(f"max_tokens {limit} {name}: {out[f'{limit} {name}']}", file=sys.stderr)
    engine.close()
    return {"problems": n, "model": engine.model_name, "rows": out}


def false_alarms() -> dict[str, Any]:
    """The most back-to-back copies of any cycle in the bench's full greedy traces (what the
    guard's thresholds must stay above), and how many of those traces the guard flags."""
    out = {}
    for name in ("reasoner-synthetic500", "reasoner-svamp300"):
        traces = [json.loads(line) for line in (ROOT / "studies/results" / name / "traces.jsonl").open()]
        thinking = [t["trace"][: t["thinking_tokens"]] for t in traces]
        out[name] = {
            "traces": len(traces),
            "max_copies_span_16": round(max(max_copies(t) for t in thinking), 4),
            f"max_copies_span_{MIN_SPAN}": round(max(max_copies(t, min_span=MIN_SPAN) for t in thinking), 4),
            "loops_found": sum(find_loop(t["trace"]) is not None for t in traces),
        }
        print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def save(key: str, value: Any) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[key] = value
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "loop-set":
        save("loop_set", {"entries": len(build_loop_set()), "file": str(LOOP_SET.relative_to(ROOT))})
    elif what == "loop-guard":
        limit = int(sys.argv[2]) if len(sys.argv) > 2 else MAX_TOKENS
        report = measure_loop_guard(limit)
        save("loop_guard" if limit == MAX_TOKENS else f"loop_guard_{limit}", {"max_tokens": limit, **report})
        print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    elif what == "false-alarms":
        save("false_alarms", false_alarms())
    elif what == "reserve":
        save("answer_reserve", measure_reserve())
    else:
        sys.exit(__doc__)
