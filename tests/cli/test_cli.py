"""The lynx-edge command: real runs on the embedded models, and every bad-input path."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ALWAYS, make_probe

from lynx_edge.cli import main

PROMPT = "A shirt costs 12 dollars. How much do 3 shirts cost?"
PROBLEM = "Elena buys 8 cards for 23 dollars each and pays with 200 dollars. How much change does Elena get?"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_run_json_on_embedded_default_model() -> None:
    """`run --json` prints one object with the documented keys, on the default reasoner."""
    code, out, _ = invoke("run", PROBLEM, "--json", "--seed", "1")
    assert code == 0
    data = json.loads(out)
    for key in (
        "answer",
        "thinking",
        "exited",
        "exit",
        "cues",
        "tokens",
        "model",
        "probe",
        "policy",
        "guarantee",
        "alpha",
        "seconds",
        "notices",
    ):
        assert key in data
    assert set(data["tokens"]) >= {"prompt", "thinking", "answer", "trial", "completion", "total"}
    assert data["model"] == "SmolLM2-135M-Instruct reasoner" and "16" in data["answer"]
    assert data["thinking"]


def test_run_text_prints_answer_and_stats_line(smol_info, tmp_path: Path) -> None:
    """Text mode: answer on stdout; thinking, cue marks, exit and stats on stderr."""
    probe = make_probe(
        tmp_path / "p", smol_info, bias=ALWAYS, cues=["\n", "wait"], exit_text="\n</think>\nThe answer is \\boxed{"
    )
    code, out, err = invoke(
        "run",
        PROMPT,
        "--model",
        "smollm2-135m",
        "--probe",
        str(probe),
        "--mode",
        "per-cue",
        "--temperature",
        "0",
        "--measure-savings",
    )
    assert code == 0 and out.strip()
    assert "⟨exit: thinking cut at '\\n' (probe " in err
    assert "exited at '\\n'" in err and "probe calls 1" in err and "tok/s" in err
    assert "saved" in err or "the exit cost" in err


def test_a_model_without_a_probe_says_so_once(reasoner: Path) -> None:
    """Any model without a matching probe: one plain notice, and the training-free policy runs."""
    code, out, err = invoke("run", PROBLEM, "--model", str(reasoner), "--no-probe")
    assert code == 0
    assert err.count("no probe matches") == 1 and "lynx-edge probe make" in err
    assert "(consistency" in err  # the policy that exited is named


def test_no_exit_is_the_plain_loop() -> None:
    code, _, err = invoke("run", PROBLEM, "--no-exit", "--seed", "3")
    assert code == 0 and "no exit" in err and "⟨wait⟩" in err


def test_json_schema_answer_on_stdout(tmp_path: Path) -> None:
    """--json-schema: the answer printed on stdout is JSON valid against the schema."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    code, out, err = invoke("run", PROBLEM, "--json-schema", str(schema), "--seed", "0")
    assert code == 0
    assert json.loads(out) == {"answer": 16}


def test_prompt_from_stdin() -> None:
    """'-' (or a piped stdin and no prompt) reads the prompt from stdin."""
    code, out, _ = invoke("run", "-", "--json", "--max-tokens", "8", stdin=PROBLEM)
    assert code == 0 and json.loads(out)["tokens"]["prompt"] > 20
    code, out, _ = invoke("run", "--json", "--max-tokens", "8", stdin=PROBLEM)
    assert code == 0 and json.loads(out)["tokens"]["prompt"] > 20


def test_max_tokens_one_keeps_the_stats_on_their_own_line() -> None:
    code, _, err = invoke("run", PROBLEM, "--max-tokens", "1")
    assert code == 0
    assert err.splitlines()[-1].startswith("thinking 1 tok")


def test_probe_info_prints_the_card_and_its_promises(smol_info, tmp_path: Path) -> None:
    metrics = {
        "traces": {"test": 10},
        "test": {
            "auc": 0.5,
            "accuracy_without_exits": 0.9,
            "rules": [
                {
                    "promise": "harm",
                    "mode": "per-cue",
                    "level": 0.05,
                    "per_cue_rate": 0.01,
                    "changed": {"hits": 1, "n": 10, "rate": 0.1, "interval_95": [0.02, 0.4]},
                    "spoilt": {"hits": 0, "n": 10, "rate": 0.0, "interval_95": [0.0, 0.28]},
                    "spoilt_among_right": {"hits": 0, "n": 9, "rate": 0.0, "interval_95": [0.0, 0.3]},
                    "exit_rate": 0.4,
                    "tokens_saved": 0.3,
                    "accuracy_with_exits": 0.9,
                }
            ],
        },
    }
    probe = make_probe(tmp_path / "p", smol_info, layers=[10, 20], metrics=metrics)
    code, out, _ = invoke("probe", "info", str(probe))
    assert code == 0
    assert "layers [10, 20] + final norm → 1728 dims" in out and "per-cue    δ=0.05" in out
    assert "on average over calibration draws" in out and "Learn-then-Test" in out
    assert "promise    harm (default): per answer, among the answers full thinking gets right" in out
    assert "| harm per-cue δ=0.05 | 1.0% | 10.0% (1/10) | 0.0% (0/10) | 0.0% (0/9) | 40.0% | 30.0% | 90.0% |" in out
    assert "barely better than chance (test AUC 0.50)" in out
    assert "{" not in out.split("test split")[1]  # a table, not a JSON dump


def test_probe_info_on_a_missing_card_names_no_foreign_option(tmp_path: Path) -> None:
    code, _, err = invoke("probe", "info", str(tmp_path / "nowhere"))
    assert code == 1 and "no probe card" in err and "--probe" not in err


def test_models_lists_presets_and_their_probes() -> None:
    code, out, _ = invoke("models")
    assert code == 0
    status = {line[2:].split()[0]: line for line in out.splitlines() if line[:1] in "* " and line[2:3].strip()}
    assert out.startswith("* smollm2-135m-reasoner")
    assert "probe ✓" in status["smollm2-135m-reasoner"] and "probe ✓" in status["smollm2-135m"]
    assert "no probe" in status["deepseek-r1-distill-qwen-1.5b"] and "no probe" in status["qwq-32b"]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--model", "/nowhere/model.gguf"], "model file not found: /nowhere/model.gguf", 1),
        (["--model", "no-such-preset"], "unknown model 'no-such-preset'", 1),
        (["--alpha", "1.5"], "alpha must be a number in (0, 1), got 1.5: pass e.g. --alpha 0.1", 2),
        (["--alpha", "abc"], "'abc' is not a valid float", 2),
        (["--temperature", "-1"], "Invalid value for '--temperature': temperature must be a number in [0, 2]", 2),
        (
            ["--model", "qwen3-0.6b"],
            "could not download Qwen3-0.6B-Q8_0.gguf from Qwen/Qwen3-0.6B-GGUF (no network)",
            1,
        ),
        (["--exit", "probe", "--no-probe"], "has no probe, so --exit probe cannot run", 1),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, code: int) -> None:
    got, out, err = invoke("run", "hi", *args)
    assert got == code and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_empty_prompt_is_refused() -> None:
    code, _, err = invoke("run", "  ")
    assert code == 1 and "the prompt is empty" in err


def test_offline_hub_pull_fails_fast_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: one line at once, no retry noise (the hub check is one short attempt)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    start = time.monotonic()
    code, _, err = invoke("run", "hi", "--model", "deepseek-r1-distill-qwen-1.5b")
    assert code == 1 and time.monotonic() - start < 10
    assert len(err.strip().splitlines()) == 1 and "could not download" in err


def test_corrupt_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    code, _, err = invoke("run", "hi", "--model", str(bad))
    assert code == 1 and "corrupt or unsupported GGUF" in err and len(err.strip().splitlines()) == 1


def test_probe_for_another_model(tiny_r1_info, tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "p", tiny_r1_info)
    code, _, err = invoke("run", "hi", "--probe", str(probe))
    assert code == 1 and "was made for tiny-scripted-qwen2" in err and "--probe" in err


def test_the_base_models_probe_is_refused_for_the_reasoner(tmp_path: Path) -> None:
    """Same architecture and tokenizer, other weights: the scaffold model's probe does not fit."""
    code, _, err = invoke("run", "hi", "--probe", str(Path(__file__).resolve().parents[2] / "probes" / "smollm2-135m"))
    assert code == 1 and "weights_fingerprint" in err


def test_prompt_longer_than_context() -> None:
    code, _, err = invoke("run", "count " * 3000, "--n-ctx", "512")
    assert code == 1 and "context holds 512: shorten the prompt or raise --n-ctx" in err


def _default_sigint() -> None:
    """A shell runs background jobs with SIGINT ignored, and Python keeps it ignored; a user's
    terminal delivers it, so the child gets the default disposition back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lynx_edge", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads are started before the fork matters
    )


def wait_until_loading(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Return once the child has a GGUF file open (llama.cpp maps it while loading), so a
    signal lands inside the CLI's loading step, not in the interpreter's start-up."""
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.parent.exists():  # no /proc (macOS): loading starts within a moment
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    while ".gguf" not in maps.read_text(errors="replace"):
        assert time.monotonic() < deadline and proc.poll() is None, "the model never started loading"
        time.sleep(0.01)


def first_output(proc: subprocess.Popen, timeout: float = 60) -> bytes:
    """The first bytes the process writes on stderr, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "no output in time"
    return os.read(proc.stderr.fileno(), 64)


def test_ctrl_c_prints_partial_output_and_exits_130(reasoner: Path) -> None:
    """SIGINT mid-generation: what was generated stays on screen, exit code 130, no traceback.
    (``reasoner``: the default model is merged beforehand, so the first output is thinking.)"""
    proc = spawn(
        "run",
        "Write a long story about a cat who learns to fly.",
        "--no-exit",
        "--max-tokens",
        "2000",
        "--temperature",
        "0.9",
        "--seed",
        "1",
    )
    first = first_output(proc)  # the first streamed thinking
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130
    assert "interrupted: partial output shown above" in err
    assert "Traceback" not in err and len(first) + len(err) > 20


def test_ctrl_c_while_loading_says_nothing_was_shown(tmp_path: Path) -> None:
    """SIGINT before any token: the message says so (there is no partial output to point at)."""
    proc = spawn("run", "hi", "--n-ctx", "64")
    wait_until_loading(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130
    assert "partial output shown above" not in err
    assert "interrupted while loading the model" in err or "interrupted before any output" in err


def test_request_flags_come_from_the_options_schema() -> None:
    """Each flag shows its field's choices, default and help text (one definition, in
    GenerationOptions): a new user reads the same words the server's errors use."""
    code, out, _ = invoke("run", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "--exit [auto|none|probe|deer|consistency]" in flat
    assert "--exit-style [conclude|boxed]" in flat and "[default: conclude]" in flat
    assert "--mode [per-cue|per-answer]" in flat
    assert "Risk level in (0, 1): the calibrated entry at or below it is used" in flat


def test_thinking_budget_and_loop_guard_flags_reach_the_runtime() -> None:
    """--thinking-budget closes the thinking near the budget (a budget exit, named in the
    stats line and in --json); --loop-guard off is accepted, a bad value names the flag."""
    code, out, err = invoke("run", PROBLEM, "--no-exit", "--temperature", "0", "--thinking-budget", "24")
    assert code == 0 and out.strip() and "budget exit at token" in err
    code, out, _ = invoke("run", PROBLEM, "--no-exit", "--temperature", "0", "--thinking-budget", "24", "--json")
    data = json.loads(out)
    assert data["exit"]["policy"] == "budget" and data["tokens"]["thinking"] <= 27 and data["loops"] == []
    code, _, err = invoke("run", PROBLEM, "--loop-guard", "sometimes")
    assert code == 2 and "--loop-guard" in err
    code, _, err = invoke("run", PROBLEM, "--thinking-budget", "0")
    assert code == 2 and "--thinking-budget" in err and "≥ 1" in err


def test_run_with_tools_prints_each_call_as_json(tmp_path: Path) -> None:
    """`run --tools FILE --tool-choice NAME`: the call comes out on stdout as JSON that
    validates against the tool's schema; a tool choice that names no tool is a usage error."""
    parameters = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "calculator", "parameters": parameters}}]))
    code, out, _ = invoke("run", PROMPT, "--tools", str(tools), "--tool-choice", "calculator", "-t", "0")
    calls = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code == 0 and calls and {c["name"] for c in calls} == {"calculator"}
    assert all(isinstance(c["arguments"]["expression"], str) and c["id"].startswith("call_") for c in calls)
    code, _, err = invoke("run", PROMPT, "--tools", str(tools), "--tool-choice", "weather")
    assert code == 2 and "calculator" in err and "--tool-choice" in err


def test_a_request_outside_the_calibration_says_the_level_is_not_guaranteed(tmp_path: Path) -> None:
    """The promise holds for single questions answered freely to their own end, as the card was
    calibrated: a thinking budget that cuts, tools or a JSON schema make it an estimate, and
    --json says which; inside those conditions the level is stated with its confidence."""
    code, out, _ = invoke("run", PROBLEM, "--json", "-t", "0")
    inside = json.loads(out)
    assert code == 0 and inside["guarantee"] and inside["estimate_because"] == []
    assert inside["risk"].endswith("at 90 % confidence (" + inside["promise"] + ")")
    code, out, _ = invoke("run", PROBLEM, "--thinking-budget", "30", "--json", "-t", "0")
    cut = json.loads(out)
    assert code == 0 and not cut["guarantee"] and cut["exit"]["policy"] == "budget"
    assert any("thinking budget (30 tokens) cut the thinking" in why for why in cut["estimate_because"])
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "calculator", "parameters": {"type": "object", "properties": {}}}]))
    code, out, _ = invoke("run", PROMPT, "--tools", str(tools), "--json", "-t", "0")
    called = json.loads(out)
    assert code == 0 and not called["guarantee"]
    assert any("tool(s) the model may call" in why for why in called["estimate_because"])
    code, _, err = invoke("run", PROBLEM, "--promise", "sometimes")
    assert code == 2 and "--promise" in err and "agreement" in err
