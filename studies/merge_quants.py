"""Which quantization should the merged reasoner be? Speed and accuracy of each candidate.

    python studies/merge_quants.py --problems 60 --out studies/results/merge-quants.json

The reasoner is SmolLM2-135M-Instruct Q4_1 plus the shipped LoRA, merged once into one GGUF
(``adapters.write_merged``; the probe belongs to that exact file). This merges the adapter into
each candidate type (gguf's quantizer, the llama.cpp project's reference port: deterministic on
every CPU, so the merged file's checksum can be pinned), then, interleaved round by round,
times pure greedy decoding with llama-cpp-python's own ``Llama`` against the Q4_1 base, and
grades each candidate's full greedy thinking on the same synthetic problems. n_embd 576 is
not a multiple of 256, so llama.cpp's K-quants would fall back to these types anyway.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from adapter_speed import prompt  # the reasoner's prompt, as studies/adapter_speed.py times it

from lynx_edge.lab.grading import grade
from lynx_edge.lab.problems import load_problems
from lynx_edge.runtime.adapters import adapter_path, sha256_of, write_merged
from lynx_edge.runtime.llama_backend import plain_llama
from lynx_edge.runtime.model_files import packaged_file
from lynx_edge.runtime.presets import PRESETS

PRESET = PRESETS["smollm2-135m-reasoner"]
CANDIDATES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--problems", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=Path("data/synthetic/test.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("merge-quants.json"))
    args = ap.parse_args()
    base = packaged_file(PRESET)
    work = Path(tempfile.mkdtemp(prefix="lynx-quants-"))
    paths = {"base Q4_1": base}
    for qtype in CANDIDATES:
        path = work / f"merged.{qtype}.gguf"
        write_merged(base, adapter_path(PRESET.adapter), path, name=PRESET.adapter.merged_name, qtype=qtype)
        paths[f"merged {qtype}"] = path
    models = {
        name: plain_llama(p, n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads)
        for name, p in paths.items()
    }
    problems = load_problems(args.data).problems
    speed_prompt = prompt(problems[0].question)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, llm in models.items():
            llm.reset()
            llm.eval(llm.tokenize(speed_prompt.encode(), special=True))
            start = time.perf_counter()
            n = 0
            for token in llm.generate([], temp=0.0, reset=False):
                n += 1
                if n >= args.tokens:
                    break
            rates[name].append(n / (time.perf_counter() - start))
    base_rate = statistics.median(rates["base Q4_1"])
    report: dict[str, dict] = {}
    reference: list[str] = []
    for name, llm in models.items():
        if name == "base Q4_1":
            continue
        right, tokens, texts = 0, 0, []
        for p in problems[: args.problems]:
            llm.reset()
            out = llm.create_completion(prompt(p.question), max_tokens=512, temperature=0.0)
            text = out["choices"][0]["text"]
            texts.append(text)
            right += grade(text, p.gold, p.kind).correct
            tokens += out["usage"]["completion_tokens"]
        if name == "merged Q8_0":
            reference = texts
        report[name] = {
            "decode_tok_s": round(statistics.median(rates[name]), 1),
            "vs_base": round(statistics.median(rates[name]) / base_rate, 3),
            "accuracy": round(right / args.problems, 4),
            "mean_tokens": round(tokens / args.problems, 1),
            "texts": texts,
            "bytes": paths[name].stat().st_size,
            "sha256": sha256_of(paths[name]),
        }
    for row in report.values():
        row["same_text_as_q8_0"] = round(sum(a == b for a, b in zip(row.pop("texts"), reference)) / args.problems, 4)
    report["base Q4_1"] = {"decode_tok_s": round(base_rate, 1), "vs_base": 1.0}
    report["settings"] = {
        "rounds": args.rounds,
        "tokens": args.tokens,
        "threads": args.threads,
        "problems": args.problems,
        "data": "/".join(args.data.parts[-2:]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
