"""`lynx-edge bench`: methods decided on recorded traces, checked against real runs.

The tiny scripted model always thinks the same two cues (" Wait", " Hmm") and answers 4, so
every method's cut is known; a probe that reads features exits at "Hmm" only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import CONSTANT_CALIBRATION, HMM_INDEX, R1_SCRIPT, hmm_not_wait_weights, make_probe

from lynx_edge.cli import main
from lynx_edge.events import result_of
from lynx_edge.lab.grading import grade
from lynx_edge.lab.methods import (
    CueRecord,
    budget_cut,
    oracle_exit,
    pareto_front,
    summarize,
)
from lynx_edge.lab.problems import load_problems, trace_seed
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.limits import CutWindow
from lynx_edge.runtime.policies import TrialExit, first_trial_exit
from lynx_edge.runtime.rules import ExitRule, first_exit

THINKING_TOKENS = R1_SCRIPT.index("</think>")  # generated tokens up to and including </think>


# ---- pure decisions ------------------------------------------------------------------
def test_lynx_exits_at_the_first_cue_the_rule_passes() -> None:
    cues = [CueRecord("wait", 5, 0.3), CueRecord("\\n", 9, None), CueRecord("hmm", 12, 0.8), CueRecord("wait", 20, 0.9)]
    scores = [c.score for c in cues]
    assert first_exit(ExitRule("per-answer", 0.1, lam=0.7), scores) == 2
    assert first_exit(ExitRule("per-answer", 0.1, lam=0.95), scores) is None
    assert first_exit(ExitRule("per-cue", 0.1, q_pos=0.8, q_neg=0.25), scores) == 0


def test_trial_budget_and_oracle_cuts() -> None:
    def deer_exit(confidences: list[float], lam: float) -> int | None:
        return first_trial_exit(TrialExit("deer", lam), [("", c) for c in confidences])

    def consistency_exit(answers: list[str], k: int) -> int | None:
        return first_trial_exit(TrialExit("consistency", k), [(a, 0.0) for a in answers])

    assert deer_exit([0.5, 0.96, 0.99], 0.95) == 1
    assert deer_exit([0.5, 0.95], 0.95) is None  # must exceed λ
    assert consistency_exit(["\\boxed{7}", "\\boxed{8}", "\\boxed{8 }", "\\boxed{8}"], 2) == 2
    assert consistency_exit(["\\boxed{1,200}", "\\boxed{1200}"], 2) == 1  # normalised alike
    assert consistency_exit(["\\boxed{}", "\\boxed{}"], 2) is None  # empty answers never agree
    assert consistency_exit(["a", "b", "a"], 2) is None
    assert oracle_exit([False, True, True]) == 1 and oracle_exit([False]) is None
    assert budget_cut(100, 40) == 40
    assert budget_cut(40, 40) is None  # thinking that fits is left alone


def outcome(correct: bool, tokens: int, exited: bool = True) -> dict:
    return {"exited": exited, "correct": correct, "tokens": tokens, "thinking": tokens - 5, "seconds": tokens / 10}


def test_summary_counts_help_harm_and_saving() -> None:
    records = [
        {"methods": {"full": outcome(True, 100, False), "m": outcome(False, 20)}},
        {"methods": {"full": outcome(False, 100, False), "m": outcome(True, 30)}},
        {"methods": {"full": outcome(True, 100, False), "m": outcome(True, 50)}},
        {"methods": {"full": outcome(False, 100, False), "m": outcome(False, 100, False)}},
    ]
    full, m = summarize(records, ["full", "m"])
    assert full["accuracy"] == 0.5 and full["saved"] == 0.0 and full["exit_rate"] == 0.0
    assert m["help"] == 1 and m["harm"] == 1 and m["premature_rate"] == 0.25
    assert m["saved"] == pytest.approx(1 - 200 / 400) and m["exit_rate"] == 0.75
    assert m["thinking_saved"] == round(1 - 180 / 380, 4) and m["time_saved"] == 0.5
    assert m["mean_tokens"] == 50.0 and m["median_tokens"] == 40.0


def test_pareto_front_keeps_only_undominated_settings() -> None:
    rows = [
        {"method": "full", "accuracy": 0.5, "mean_tokens": 100},
        {"method": "a", "accuracy": 0.5, "mean_tokens": 60},
        {"method": "b", "accuracy": 0.4, "mean_tokens": 70},
        {"method": "c", "accuracy": 0.3, "mean_tokens": 20},
        {"method": "oracle", "accuracy": 0.9, "mean_tokens": 10},
    ]
    assert pareto_front(rows) == ["a", "c"]  # the oracle is a bound, not a contender


# ---- the harness on the tiny model ---------------------------------------------------
def corpus(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"input": f"Tom has {i} apples and finds {i % 3} more. How many?", "target": 4 + i % 2}) + "\n"
            for i in range(n)
        )
    )
    return path


def bench(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["bench", *[str(a) for a in args]], catch_exceptions=False)
    return result.exit_code, result.output


CALIBRATION = {**CONSTANT_CALIBRATION, "per_cue": CONSTANT_CALIBRATION["per_cue"][:1]}  # exit iff p > 0.5


@pytest.fixture(scope="module")
def benched(tiny_r1: Path, tiny_r1_info, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    weight, bias = hmm_not_wait_weights(tiny_r1)
    probe = make_probe(
        root / "probe",
        tiny_r1_info,
        weight=weight,
        bias=bias,
        layers=[1],
        exit_text="\n</think>\n\nThe answer is \\boxed{",
        calibration=CALIBRATION,
    )
    data = corpus(root / "data.jsonl", 6)
    out = root / "out"
    common = (
        "--model",
        tiny_r1,
        "--probe",
        probe,
        "-d",
        data,
        "--out",
        out,
        "--max-tokens",
        64,
        "--n-ctx",
        512,
        "--temperature",
        0,
        "--deer-lambda",
        1e-6,
        "--deer-cues",
        "hmm",
        "--budget",
        0.5,
    )
    code, output = bench(*common, "--limit", 4)
    assert code == 0, output
    first = (out / "traces.jsonl").read_text()
    code, output = bench(*common)  # resumes: two more problems
    assert code == 0, output
    return {"out": out, "probe": probe, "data": data, "common": common, "first_traces": first, "output": output}


def records(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "problems.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("exit_style", ["conclude", "boxed"])
def test_lynx_row_is_what_the_runtime_does(benched: dict, tiny_r1: Path, tmp_path: Path, exit_style: str) -> None:
    """The simulated exit (at "Hmm") equals a real run with the same probe, in either exit
    style (conclude is the bench's default, as the runtime's)."""
    out = benched["out"]
    if exit_style == "boxed":  # the same traces, the methods simulated again with boxed exits
        out = tmp_path / "boxed"
        shutil.copytree(benched["out"], out)
        args = list(benched["common"])
        args[args.index("--out") + 1] = out
        code, output = bench(*args, "--exit-style", "boxed")
        assert code == 0, output
    problem = load_problems(benched["data"]).problems[0]
    engine = Engine(tiny_r1, probe=benched["probe"], n_ctx=512)
    real = result_of(
        engine.generate(
            problem.prompt,
            temperature=0,
            max_tokens=64,
            exit_style=exit_style,
            seed=trace_seed(0, problem.id),
            alpha=0.05,
            mode="per-cue",
        )
    )
    engine.close()
    lynx = records(out)[problem.id]["methods"]["lynx harm δ=0.05"]
    assert real.exited and real.exit.cue == "hmm"
    assert lynx["exited"] and lynx["cut"] == HMM_INDEX == real.tokens.thinking == lynx["thinking"]
    assert lynx["tokens"] == real.tokens.completion
    assert lynx["answer"] == grade(real.answer, problem.gold, problem.kind).extracted == "4"


def test_full_row_equals_an_unexited_run(benched: dict, tiny_r1: Path) -> None:
    problem = load_problems(benched["data"]).problems[1]
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    real = result_of(
        engine.generate(problem.prompt, temperature=0, max_tokens=64, exit="none", seed=trace_seed(0, problem.id))
    )
    engine.close()
    full = records(benched["out"])[problem.id]["methods"]["full"]
    assert not full["exited"]
    assert full["tokens"] == real.tokens.completion
    assert full["correct"] == grade(real.answer, problem.gold, problem.kind).correct == (problem.gold == "4")


def test_budget_trial_and_oracle_rows_cut_where_they_should(benched: dict) -> None:
    for r in records(benched["out"]).values():
        m = r["methods"]
        assert r["budget_base"] == THINKING_TOKENS
        raw, soft = m["budget 50% raw"], m["budget 50%"]
        assert raw["exited"] and raw["cut"] == round(THINKING_TOKENS * 0.5)
        window = CutWindow.budget(raw["cut"])  # the runtime's soft budget: within its window
        assert soft["exited"] and window.start <= soft["cut"] <= window.hard
        deer = m["deer λ=1e-06"]  # tries only at "hmm" (--deer-cues), and any confidence passes
        assert deer["exited"] and deer["cut"] == HMM_INDEX
        assert deer["extra_tokens"] > 0 and deer["correct"] == m["full"]["correct"]  # it answers 4 there too
        consistency = m["consistency k=2"]  # one trial (at "hmm") never makes two in a row
        assert not consistency["exited"] and consistency["extra_tokens"] == deer["extra_tokens"]
        oracle = m["oracle"]  # right at the first cue when the gold is 4, never otherwise
        assert oracle["exited"] == (r["gold"] == "4") and oracle["correct"] == m["full"]["correct"]


def test_outputs_are_written_and_resume_adds_only_new_problems(benched: dict) -> None:
    out = benched["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 6
    methods = [r["method"] for r in summary["rows"]]
    assert methods == [
        "full",
        "lynx harm δ=0.05",
        "lynx harm α=0.1",
        "deer λ=1e-06",
        "consistency k=2",
        "budget 50%",
        "budget 50% raw",
        "lynx harm α=0.1 ≤ budget 50%",
        "loop guard",
        "oracle",
    ]
    deer = next(r for r in summary["rows"] if r["method"] == "deer λ=1e-06")
    assert deer["decoded_tokens"] == deer["mean_tokens"] + deer["extra_tokens"]  # trials counted in decoded
    assert summary["rows"][0]["seconds_measured"] and not deer["seconds_measured"]
    full = summary["rows"][0]
    assert full["accuracy"] == 0.5  # gold alternates 4, 5; the model answers 4
    # the rates each promise bounds, with their intervals: every exit here answers 4, as full thinking does
    assert full["changed"] == {"hits": 0, "n": 6, "rate": 0.0, "interval_95": full["changed"]["interval_95"]}
    lynx = next(r for r in summary["rows"] if r["method"] == "lynx harm δ=0.05")
    assert lynx["changed"]["rate"] == 0.0 and lynx["spoilt_among_right"]["n"] == 3
    assert lynx["spoilt_among_right"]["interval_95"][0] == 0.0 < lynx["spoilt_among_right"]["interval_95"][1]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    assert "| lynx harm δ=0.05 |" in table and table in benched["output"]
    traces = (out / "traces.jsonl").read_text()
    assert traces.startswith(benched["first_traces"]) and len(traces.splitlines()) == 6


def test_resume_with_other_settings_is_refused(benched: dict) -> None:
    args = list(benched["common"])
    args[args.index("--max-tokens") + 1] = 32
    code, output = bench(*args)
    assert code == 1 and "benchmarked with other settings" in output and "another --out" in output


def test_other_method_settings_reuse_the_traces(benched: dict, tmp_path: Path) -> None:
    """A trial knob changed on a finished run: no trace is generated again, every method row
    is simulated again with the new setting."""
    out = tmp_path / "knobs"
    shutil.copytree(benched["out"], out)
    args = list(benched["common"])
    args[args.index("--out") + 1] = out
    code, output = bench(*args, "--trial-min-tokens", 10**6)
    assert code == 0, output
    assert (out / "traces.jsonl").read_text() == (benched["out"] / "traces.jsonl").read_text()
    for r in records(out).values():
        assert r["stamp"]["trial_min_tokens"] == 10**6
        assert not r["methods"]["deer λ=1e-06"]["exited"]  # no trial is written before 10**6 tokens


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass --data FILE"),
        (("-d", "missing.jsonl"), "no data file at missing.jsonl"),
        (("-d", "DATA", "--budget", 1.5), "budgets are fractions in (0, 1)"),
    ],
)
def test_bad_bench_input_gets_one_line(benched: dict, tiny_r1: Path, tmp_path: Path, args, message) -> None:
    args = [benched["data"] if a == "DATA" else a for a in args]
    code, output = bench("--model", tiny_r1, "--out", tmp_path / "o", *args)
    assert code != 0 and message in output
    assert "Traceback" not in output
