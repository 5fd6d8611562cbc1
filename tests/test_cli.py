"""The lynx-edge command: real runs on the embedded model, and every bad-input path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ALWAYS, make_probe

from lynx_edge.cli import main

PROMPT = "A shirt costs 12 dollars. How much do 3 shirts cost?"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_run_json_on_embedded_default_model() -> None:
    """`run --json` prints one object with the documented keys."""
    code, out, _ = invoke("run", PROMPT, "--json", "--seed", "1", "--temperature", "0")
    assert code == 0
    data = json.loads(out)
    for key in ("answer", "thinking", "exited", "exit", "cues", "tokens", "model", "probe", "alpha", "seconds"):
        assert key in data
    assert set(data["tokens"]) >= {"prompt", "thinking", "answer", "total"}
    assert data["model"].lower().startswith("smollm2")
    assert data["thinking"]


def test_run_text_prints_answer_and_stats_line(smol_info, tmp_path: Path) -> None:
    """Text mode: answer on stdout; thinking, cue marks, exit and stats on stderr."""
    probe = make_probe(tmp_path / "p", smol_info, bias=ALWAYS, cues=["\n", "wait"], exit_text="\n</think>\nThe answer is \\boxed{")
    code, out, err = invoke("run", PROMPT, "--probe", str(probe), "--mode", "per-cue", "--temperature", "0", "--measure-savings")
    assert code == 0 and out.strip()
    assert "⟨exit: thinking cut at '\\n'⟩" in err
    assert "exited at '\\n'" in err and "probe calls 1" in err and "saved" in err


def test_probe_info_prints_the_card(smol_info, tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "p", smol_info, layers=[10, 20])
    code, out, _ = invoke("probe", "info", str(probe))
    assert code == 0
    assert "layers [10, 20] + final norm → 1728 dims" in out and "per-cue    δ=0.05" in out


def test_models_lists_presets_with_the_embedded_file() -> None:
    code, out, _ = invoke("models")
    assert code == 0
    assert "* smollm2-135m" in out and "SmolLM2-135M-Instruct.Q4_1.gguf" in out
    assert "deepseek-r1-distill-qwen-1.5b" in out and "qwq-32b" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nowhere/model.gguf"], "model file not found: /nowhere/model.gguf"),
        (["--model", "no-such-preset"], "unknown model 'no-such-preset'"),
        (["--alpha", "1.5"], "alpha must lie strictly between 0 and 1"),
        (["--alpha", "0"], "alpha must lie strictly between 0 and 1"),
        (["--model", "qwen3-0.6b"], "could not download Qwen3-0.6B-Q8_0.gguf"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: list[str], message: str) -> None:
    code, out, err = invoke("run", "hi", *args)
    assert code == 1 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    code, _, err = invoke("run", "hi", "--model", str(bad))
    assert code == 1 and "corrupt or unsupported GGUF" in err and len(err.strip().splitlines()) == 1


def test_probe_for_another_model(tiny_r1_info, tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "p", tiny_r1_info)
    code, _, err = invoke("run", "hi", "--probe", str(probe))
    assert code == 1 and "was made for tiny-scripted-qwen2" in err and "--probe" in err


def test_prompt_longer_than_context() -> None:
    code, _, err = invoke("run", "count " * 3000, "--n-ctx", "512")
    assert code == 1 and "context holds 512: shorten the prompt or raise --n-ctx" in err


def test_ctrl_c_prints_partial_output_and_exits_130(tmp_path: Path) -> None:
    """SIGINT mid-generation: what was generated stays on screen, exit code 130, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lynx_edge", "run", "Write a long story about a cat who learns to fly.", "--no-probe",
         "--max-tokens", "4000", "--n-ctx", "4096", "--temperature", "0"],  # greedy: writes past 256 tokens
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 60
    first = proc.stderr.read(1)  # the first streamed thinking character
    assert first and time.time() < deadline
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: partial output shown above" in err
    assert "Traceback" not in err and len(first + err) > 20
