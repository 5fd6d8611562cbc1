"""The structure holds: one direction of dependencies (import-linter contracts in
pyproject.toml), light modules stay light, and the code is lint-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    """Front ends above the runtime, events and errors at the bottom; the lab and benches
    drive the model through the replay door; the watchers never import the generation; no door imports another; only
    llama_backend talks to llama-cpp-python and only onnx_probe to onnxruntime."""
    result = run(
        "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def test_events_and_probe_cards_load_without_llama_cpp() -> None:
    """Reading events or a probe card does not load libllama (it takes a second or more)."""
    code = (
        "import sys, lynx_edge, lynx_edge.events, lynx_edge.runtime.probe_card, lynx_edge.runtime.options; "
        "print('llama_cpp' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    result = run("-c", code)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_ruff_finds_nothing() -> None:
    check = run("-m", "ruff", "check", ".")
    assert check.returncode == 0, check.stdout
    formatted = run("-m", "ruff", "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout


def test_star_import_gives_every_public_name() -> None:
    """`from lynx_edge import *` works and binds every name the package exports."""
    space: dict[str, object] = {}
    exec("from lynx_edge import *", space)  # noqa: S102 - the statement a user types
    import lynx_edge

    assert set(lynx_edge.__all__) <= set(space)
