"""Tool calls on the embedded reasoner, measured: forced calls that parse and validate, and the
decode speed of a call under its grammar against free decoding.

    python studies/tool_calls.py            # → studies/results/tool-calls.json

1. ``forced``: the first 100 problems of ``data/synthetic/test.jsonl`` with a ``calculator``
   and a ``lookup`` tool and ``tool_choice`` required, one call per reply (then each tool by
   name for 10 problems more): every reply must end in calls that parse and validate against
   their tool's schema (``jsonschema``). ``parallel``: 30 more with parallel calls allowed.
2. ``speed``: the answer phase alone (thinking off, so each reply is only a call or only
   text), greedy, on 20 problems, interleaved: tokens per second of a forced call under its
   grammar over those of a free answer (``tool_choice`` none, no grammar) in the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import jsonschema

from lynx_edge.events import Done, GenerationResult
from lynx_edge.lab.problems import load_problems
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "studies/results/tool-calls.json"
TOOLS = [t["function"] for t in json.loads((ROOT / "data/tools/calculator-lookup.json").read_text())]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}


def answer(engine: Engine, question: str, **options: Any) -> GenerationResult:
    events = engine.generate(question, GenerationOptions(temperature=0, seed=0, tools=TOOLS, **options))
    return next(e.result for e in events if isinstance(e, Done))


def valid(result: GenerationResult) -> bool:
    """The reply is one or more calls, each to a known tool with arguments its schema accepts."""
    if result.finish_reason != "tool_calls" or not result.tool_calls:
        return False
    try:
        for call in result.tool_calls:
            jsonschema.validate(call.arguments, SCHEMAS[call.name])
    except (KeyError, jsonschema.ValidationError):
        return False
    return True


def forced(engine: Engine, runs: list[tuple[str, str]], *, parallel: bool) -> dict[str, Any]:
    rows = []
    for choice, question in runs:
        result = answer(engine, question, tool_choice=choice, max_tokens=512, parallel_tool_calls=parallel)
        rows.append(
            {
                "tool_choice": choice,
                "valid": valid(result) and all(choice in ("required", c.name) for c in result.tool_calls),
                "calls": [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls],
                "thinking_tokens": result.tokens.thinking,
                "answer_tokens": result.tokens.answer,
                "finish_reason": result.finish_reason,
            }
        )
        print(f"{len(rows):4d} {choice:10s} {rows[-1]['valid']} {rows[-1]['calls']}", file=sys.stderr)
    required = [r for r in rows if r["tool_choice"] == "required"]
    named = [r for r in rows if r["tool_choice"] != "required"]
    return {
        "required_valid": sum(r["valid"] for r in required),
        "required_total": len(required),
        "named_valid": sum(r["valid"] for r in named),
        "named_total": len(named),
        "calls_per_reply_mean": statistics.mean(len(r["calls"]) for r in rows),
        "rows": rows,
    }


def speed(engine: Engine, questions: list[str]) -> dict[str, Any]:
    called, free = [], []
    for question in questions[:20]:
        call = answer(engine, question, think=False, tool_choice="required", parallel_tool_calls=False, max_tokens=96)
        text = answer(engine, question, think=False, tool_choice="none", max_tokens=96)
        called.append((call.tokens.answer, call.tokens_per_second))
        free.append((text.tokens.answer, text.tokens_per_second))
    with_grammar = statistics.median(tps for _, tps in called)
    without = statistics.median(tps for _, tps in free)
    return {
        "problems": len(called),
        "tokens_per_second_call_with_grammar": with_grammar,
        "tokens_per_second_free_answer": without,
        "ratio": round(with_grammar / without, 3),
        "mean_tokens_call": statistics.mean(n for n, _ in called),
        "mean_tokens_free": statistics.mean(n for n, _ in free),
    }


def main() -> None:
    questions = [p.question for p in load_problems(ROOT / "data/synthetic/test.jsonl").problems]
    engine = Engine(n_threads=2)
    single = [("required", q) for q in questions[:100]] + [(t["name"], q) for t in TOOLS for q in questions[100:110]]
    results = {
        "model": engine.model_name,
        "speed": speed(engine, questions),
        "forced": forced(engine, single, parallel=False),
        "parallel": forced(engine, [("required", q) for q in questions[110:140]], parallel=True),
    }
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    summary = {name: {k: v for k, v in results[name].items() if k != "rows"} for name in ("forced", "parallel")}
    print(json.dumps({"speed": results["speed"], **summary}, indent=1))


if __name__ == "__main__":
    main()
