"""End to end on the real embedded models: the reasoner (the default) and the SmolLM2 base
with its reasoning scaffold (kept as the `smollm2-135m` preset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ALWAYS, make_probe

from lynx_edge.events import Done, Reply, ThinkingDelta
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.llama_backend import LlamaBackend, plain_llama
from lynx_edge.runtime.presets import PRESETS

PROMPT = "A shirt costs 12 dollars. How much do 3 shirts cost?"
PROBLEM = "Elena buys 8 cards for 23 dollars each and pays with 200 dollars. How much change does Elena get?"


@pytest.fixture(scope="module")
def always_probe(smol_info, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_probe(
        tmp_path_factory.mktemp("probe"),
        smol_info,
        bias=ALWAYS,
        layers=[10, 20],
        cues=["wait", "hmm", "alternatively", "\n"],
        exit_text="\n</think>\nThe answer is \\boxed{",
    )


@pytest.fixture
def always_engine(smol: Path, always_probe: Path) -> Engine:
    return Engine(smol, probe=always_probe, n_ctx=2048)


def test_the_default_model_is_the_reasoner_and_its_probe_exits_early() -> None:
    """`Engine()` merges the shipped adapter into the packaged base, loads the shipped probe
    and thinks with cues. Its full thinking re-checks twice; the agreement probe exits at a cue
    once the answer has settled, and the reply's answer is the one full thinking gives, with
    less thinking."""
    engine = Engine()
    assert engine.preset.name == "smollm2-135m-reasoner" and engine.cues == ("wait", "hmm", "alternatively")
    assert engine.card is not None and engine.card.path.parent.name == "smollm2-135m-reasoner"
    full = Reply.of(engine.generate(PROBLEM, exit="none"))
    assert "\\boxed{16}" in full.answer and [c.cue for c in full.cues] == ["wait", "hmm"]
    early = Reply.of(engine.generate(PROBLEM))
    exit_cue = early.cues[-1]
    assert exit_cue.decision == "exit" and exit_cue.score >= exit_cue.threshold
    assert "\\boxed{16}" in early.answer and early.answer == full.answer
    assert early.result.exit is not None and early.result.tokens.thinking < full.result.tokens.thinking
    engine.close()


def test_scaffold_preset_exits_at_first_line_break(always_engine: Engine) -> None:
    """The base model's preset: the first cue (a line break) exits; the cue text is absent
    and an answer follows the closed thinking."""
    events = list(always_engine.generate(PROMPT, temperature=0, seed=0))
    result = next(e for e in events if isinstance(e, Done)).result
    assert result.exited and result.exit.cue == "\\n"
    assert result.cues[0].decision == "exit" and len(result.cues) == 1
    streamed = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    assert "\n" not in streamed.strip()  # the line-break cue was rolled back, never streamed
    assert result.answer and result.tokens.answer > 0


def test_kv_after_exit_matches_a_fresh_context(always_engine: Engine, smol: Path) -> None:
    """After rollback + exit text, logits equal those of a fresh context fed the kept tokens
    in the same schedule (prompt and exit text as batches, the rest one by one)."""
    engine = always_engine
    result = list(engine.generate(PROMPT, temperature=0, seed=0, max_tokens=60))[-1].result
    n_prompt, n_kept = result.tokens.prompt, result.tokens.thinking
    n_exit = len(engine.backend.tokenize(engine.conclude_text(result.thinking)))
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


def test_no_exit_equals_llama_cpp_greedy_completion(reasoner: Path) -> None:
    """With exits off, the reasoner's tokens are llama-cpp-python's own greedy completion of
    the same prompt on the same merged model, token for token."""
    engine = Engine(reasoner, probe=None)
    prompt = engine.backend.prompt_tokens(engine.render_prompt(PROBLEM))
    done = list(engine.generate(PROBLEM, temperature=0, seed=0, max_tokens=200, exit="none", answer_reserve=0))[-1]
    ours = engine.backend.tokens[len(prompt) :]
    llm = plain_llama(reasoner, n_ctx=2048, n_threads=engine.backend.n_threads)
    theirs = llm.create_completion(prompt, max_tokens=200, temperature=0.0, top_k=1, repeat_penalty=1.0)
    their_tokens = llm.tokenize(theirs["choices"][0]["text"].encode(), add_bos=False, special=True)
    assert not done.result.closed_by_runtime
    assert ours == their_tokens
    engine.close()


def test_presets_keep_the_scaffold_model_apart_from_the_reasoner() -> None:
    reasoner, base = PRESETS["smollm2-135m-reasoner"], PRESETS["smollm2-135m"]
    assert reasoner.adapter is not None and base.adapter is None
    assert "\n" not in reasoner.cues and "\n" in base.cues
    assert len(reasoner.scaffold) == 1 and len(base.scaffold) > 1  # a system prompt vs worked examples
