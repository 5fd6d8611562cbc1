"""Free thinking, strict answers: the same problems with and without a JSON-schema answer.

    python studies/structured.py -d data/synthetic/test.jsonl --limit 100 --out studies/results/structured.json

For each problem, greedy, same seed: once unconstrained (the model writes ``\\boxed{N}``),
once with the schema ``{"answer": integer}`` (the thinking free, the answer under llama.cpp's
grammar). Reports: how many JSON answers parse and validate, how often the JSON number equals
the unconstrained boxed number, whether thinking tokens and exits are the same, and the answer
decode speed (tokens per second from the first answer token to the end) with and without the
grammar, with their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lynx_edge.events import AnswerDelta, Done
from lynx_edge.lab.grading import last_boxed
from lynx_edge.lab.problems import load_problems, order
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def timed(events) -> tuple[Done, float]:  # noqa: ANN001 - an event iterator
    """The run's Done event and the seconds from its first answer token to the end."""
    first = None
    for event in events:
        if isinstance(event, AnswerDelta) and first is None:
            first = time.perf_counter()
        if isinstance(event, Done):
            return event, time.perf_counter() - (first or time.perf_counter())
    raise RuntimeError("no Done event")


def answer_rate(done: Done, seconds: float) -> float | None:
    tokens = done.result.tokens.answer
    return tokens / seconds if seconds > 0 and tokens > 1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-d", "--data", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("structured.json"))
    args = ap.parse_args()
    problems = order(load_problems(args.data).problems, args.seed)[: args.limit]
    engine = Engine(args.model)
    rows = []
    for problem in problems:
        free = GenerationOptions(seed=args.seed)
        plain, plain_s = timed(engine.generate(problem.prompt, free))
        strict, strict_s = timed(engine.generate(problem.prompt, free.but(json_schema=SCHEMA)))
        boxed = last_boxed(plain.result.answer)
        try:
            parsed = json.loads(strict.result.answer)
            valid = isinstance(parsed, dict) and set(parsed) == {"answer"} and isinstance(parsed["answer"], int)
        except json.JSONDecodeError:
            parsed, valid = None, False
        rows.append(
            {
                "id": problem.id,
                "boxed": boxed,
                "json": strict.result.answer,
                "valid": valid,
                "agrees": valid and boxed is not None and str(parsed["answer"]) == boxed.strip(),
                "same_thinking": (plain.result.tokens.thinking, plain.result.exit)
                == (strict.result.tokens.thinking, strict.result.exit),
                "rate_free": answer_rate(plain, plain_s),
                "rate_grammar": answer_rate(strict, strict_s),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    free_rates = [r["rate_free"] for r in rows if r["rate_free"]]
    strict_rates = [r["rate_grammar"] for r in rows if r["rate_grammar"]]
    summary = {
        "model": engine.model_name,
        "problems": len(rows),
        "schema": SCHEMA,
        "valid": sum(r["valid"] for r in rows),
        "agrees_with_boxed": sum(r["agrees"] for r in rows),
        "same_thinking_and_exit": sum(r["same_thinking"] for r in rows),
        "answer_tok_s_free": round(statistics.median(free_rates), 1) if free_rates else None,
        "answer_tok_s_grammar": round(statistics.median(strict_rates), 1) if strict_rates else None,
    }
    if free_rates and strict_rates:
        summary["grammar_speed_ratio"] = round(statistics.median(strict_rates) / statistics.median(free_rates), 3)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
