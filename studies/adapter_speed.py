"""Decode speed of the embedded reasoner's two possible forms against its base model.

    python studies/adapter_speed.py --rounds 5 --out studies/results/adapter-speed.json

The reasoner is SmolLM2-135M-Instruct Q4_1 plus a shipped LoRA adapter. llama.cpp can apply the
adapter at load time (the base's Q4_1 weights plus B·A on every decode), or lynx-edge can merge
it once into a Q8_0 GGUF. This times, interleaved round by round on the same prompts, greedy
generation with llama-cpp-python's own ``Llama`` for: the base model, the base with the adapter
applied at load time, and the merged model — the measurement behind merging (`adapters.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lynx_edge.lab.problems import load_problems
from lynx_edge.runtime.adapters import adapter_path
from lynx_edge.runtime.llama_backend import plain_llama
from lynx_edge.runtime.model_files import packaged_file, preset_file
from lynx_edge.runtime.presets import PRESETS

SYSTEM = PRESETS["smollm2-135m-reasoner"].scaffold[0]["content"]


def prompt(question: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path("data/synthetic/test.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("adapter-speed.json"))
    args = ap.parse_args()
    preset = PRESETS["smollm2-135m-reasoner"]
    base = packaged_file(preset)
    kinds = {
        "base Q4_1": {"path": base},
        "base Q4_1 + adapter at load time": {"path": base, "lora_path": str(adapter_path(preset.adapter))},
        "merged Q8_0": {"path": preset_file(preset)},
    }
    models = {
        name: plain_llama(spec.pop("path"), n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads, **spec)
        for name, spec in kinds.items()
    }
    questions = [p.question for p in load_problems(args.data).problems[:2]]
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, llm in models.items():
            for question in questions:
                llm.reset()
                start = time.perf_counter()
                out = llm.create_completion(prompt(question), max_tokens=args.tokens, temperature=0.0)
                rates[name].append(out["usage"]["completion_tokens"] / (time.perf_counter() - start))
    base_rate = statistics.median(rates["base Q4_1"])
    report = {
        name: {"tok_s": round(statistics.median(r), 1), "vs_base": round(statistics.median(r) / base_rate, 3)}
        for name, r in rates.items()
    }
    report["settings"] = {"rounds": args.rounds, "tokens": args.tokens, "threads": args.threads}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
