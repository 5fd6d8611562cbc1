"""End to end on the real embedded model, SmolLM2-135M-Instruct Q4_1, with its scaffold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ALWAYS, make_probe
from llama_cpp import Llama

from lynx_edge import Engine
from lynx_edge.events import Done, ThinkingDelta, result_of
from lynx_edge.llama_backend import LlamaBackend


def llama_text(path: Path, tokens: list[int]) -> str:
    return b"".join(LlamaBackend(path, n_ctx=64).piece(t) for t in tokens).decode()


PROMPT = "A shirt costs 12 dollars. How much do 3 shirts cost?"


@pytest.fixture(scope="module")
def always_probe(smol_info, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_probe(
        tmp_path_factory.mktemp("probe"), smol_info, bias=ALWAYS, layers=[10, 20],
        cues=["wait", "hmm", "alternatively", "\n"], exit_text="\n</think>\nThe answer is \\boxed{",
    )


@pytest.fixture
def always_engine(smol: Path, always_probe: Path) -> Engine:
    return Engine(smol, probe=always_probe, alpha=0.1, mode="per-cue", n_ctx=2048)


def test_always_pass_probe_exits_at_first_cue(always_engine: Engine) -> None:
    """The first cue exits; the cue text is absent and an answer follows the closed thinking."""
    events = list(always_engine.generate(PROMPT, temperature=0, seed=0))
    result = next(e for e in events if isinstance(e, Done)).result
    assert result.exited and result.exit["cue"] == "\\n"
    assert result.cues[0]["decision"] == "exit" and len(result.cues) == 1
    streamed = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "\n" not in streamed.strip()  # the line-break cue was rolled back, never streamed
    assert result.answer and result.tokens["answer"] > 0


def test_kv_after_exit_matches_a_fresh_context(always_engine: Engine, smol: Path) -> None:
    """After rollback + exit text, logits equal those of a fresh context fed the kept tokens
    in the same schedule (prompt and exit text as batches, the rest one by one)."""
    engine = always_engine
    result = list(engine.generate(PROMPT, temperature=0, seed=0, max_tokens=60))[-1].result
    n_prompt = result.tokens["prompt"]
    n_kept = result.tokens["thinking"]
    n_exit = len(engine.backend.tokenize(engine.conclude_text))
    tokens = list(engine.backend.tokens)
    after_exit = engine.backend.logits().copy()
    fresh = LlamaBackend(smol, n_ctx=2048)
    fresh.decode(tokens[:n_prompt])
    for token in tokens[n_prompt : n_prompt + n_kept]:
        fresh.decode([token])
    fresh.decode(tokens[n_prompt + n_kept : n_prompt + n_kept + n_exit])
    for token in tokens[n_prompt + n_kept + n_exit :]:
        fresh.decode([token])
    replay = fresh.logits()
    assert result.exited and len(tokens) > n_prompt + n_kept + n_exit
    assert int(np.argmax(replay)) == int(np.argmax(after_exit))
    assert np.max(np.abs(replay - after_exit)) < 1e-4


def test_no_exit_equals_llama_cpp_greedy_completion(smol: Path) -> None:
    """With --no-exit the generated tokens are llama-cpp-python's own greedy completion."""
    engine = Engine(smol, probe=None, n_ctx=2048)
    prompt = engine.backend.prompt_tokens(engine.render_prompt(PROMPT))
    done = list(engine.generate(PROMPT, temperature=0, seed=0, max_tokens=48, lynx=False))[-1]
    ours = llama_text(smol, engine.backend.tokens[len(prompt) :])
    llm = Llama(str(smol), n_ctx=2048, n_threads=engine.backend.n_threads, verbose=False)
    theirs = llm.create_completion(prompt, max_tokens=48, temperature=0.0, top_k=1, repeat_penalty=1.0)
    text = theirs["choices"][0]["text"]
    if done.result.extra["thinking_closed_by_runtime"]:
        # llama.cpp stopped at EOS inside the thinking; lynx-edge closed it and went on
        assert ours.startswith(text + engine.conclude_text)
    else:
        assert ours == text


def test_default_model_runs_with_its_shipped_probe() -> None:
    """`Engine()` picks probes/smollm2-135m, made for exactly this GGUF, and scores cues."""
    engine = Engine()
    assert engine.card is not None and engine.probe_name == "smollm2-135m"
    result = result_of(engine.generate("Tom has 5 apples. He buys 3 more. How many apples now?", max_tokens=200))
    engine.close()
    assert result.probe == "smollm2-135m" and result.probe_calls >= 1
