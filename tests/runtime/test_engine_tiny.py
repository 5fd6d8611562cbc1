"""The LYNX loop on a tiny random-weight qwen2 with the real DeepSeek-R1 tokenizer/template.

The model's greedy thinking is scripted (see conftest.R1_SCRIPT): two word cues, " Wait" and
" Hmm", then the real ``</think>`` special token and an answer, so every decision is known.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import ALWAYS, HMM_INDEX, NEVER, R1_THINKING, WAIT_INDEX, hmm_not_wait_weights, make_probe

from lynx_edge import ContextOverflowError, Engine, ProbeError
from lynx_edge.events import AnswerDelta, CueScored, Done, ExitTaken, Savings, ThinkingDelta

QUESTION = "What is 2+2?"


def run(engine: Engine, **kwargs) -> tuple[list, Done]:
    """All events of a greedy run on QUESTION, and its Done event."""
    events = list(engine.generate(QUESTION, temperature=0, seed=0, **kwargs))
    return events, next(e for e in events if isinstance(e, Done))


def text_of(events: list, kind: type) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


@pytest.fixture
def engine_with(tiny_r1: Path, tiny_r1_info, tmp_path: Path):
    made = []

    def build(bias: float = ALWAYS, **probe_kwargs) -> Engine:
        probe = make_probe(tmp_path / f"probe{len(made)}", tiny_r1_info, bias=bias, **probe_kwargs)
        engine = Engine(tiny_r1, probe=probe, n_ctx=512)
        made.append(engine)
        return engine

    yield build
    for e in made:
        e.close()


def test_prompt_opens_thinking_once(tiny_r1: Path) -> None:
    """R1's GGUF template lacks '<think>\\n'; the runtime adds it, with exactly one BOS."""
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    prompt = engine.render_prompt(QUESTION)
    assert prompt.endswith("<｜Assistant｜><think>\n")
    tokens = engine.backend.prompt_tokens(prompt)
    assert tokens[0] == 151646 and tokens.count(151646) == 1
    assert 151648 in tokens  # <think> parsed as the special token


def test_no_exit_streams_thinking_and_answer_separately(tiny_r1: Path) -> None:
    """With exits off the trace runs to the end; cues are reported but not scored."""
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    events, done = run(engine, exit="none")
    assert text_of(events, ThinkingDelta) == R1_THINKING
    assert text_of(events, AnswerDelta) == "The answer equals \\boxed{4} done"
    cues = [e for e in events if isinstance(e, CueScored)]
    assert [(c.cue, c.token_index, c.decision) for c in cues] == [
        ("wait", WAIT_INDEX, "off"),
        ("hmm", HMM_INDEX, "off"),
    ]
    r = done.result
    assert not r.exited and r.probe_calls == 0
    assert r.tokens.thinking == 22 and r.tokens.answer == 10
    assert r.tokens.total == r.tokens.prompt + 32


def test_always_pass_probe_exits_at_first_cue_in_conclude_style(engine_with) -> None:
    """The first cue exits: its text is gone, the thinking closes, the model answers."""
    events, done = run(engine_with(ALWAYS))
    r = done.result
    assert r.exited and r.exit.cue == "wait" and r.exit.token_index == WAIT_INDEX
    assert r.thinking == "Okay, so I need the sum."
    assert "Wait" not in text_of(events, ThinkingDelta)
    assert r.answer == "The answer equals \\boxed{4} done"
    assert r.tokens.thinking == WAIT_INDEX  # tokens before the cue
    assert r.probe_calls == 1
    kinds = [type(e) for e in events]
    assert kinds.index(ExitTaken) == kinds.index(CueScored) + 1


def test_boxed_exit_answers_greedily_and_stops_at_brace(engine_with) -> None:
    """Boxed style decodes the method's exit text and stops at the closing brace."""
    _, done = run(engine_with(ALWAYS), exit_style="boxed")
    assert done.result.answer == "Final Answer: \\boxed{4}"
    assert done.result.finish_reason == "stop"


def test_never_pass_probe_scores_every_cue_and_runs_to_the_end(engine_with) -> None:
    events, done = run(engine_with(NEVER))
    cues = [e for e in events if isinstance(e, CueScored)]
    assert [c.decision for c in cues] == ["continue", "continue"]
    assert all(c.score < 1e-6 and c.threshold == pytest.approx(0.5) for c in cues)
    assert not done.result.exited and done.result.thinking == R1_THINKING.strip()


def test_probe_reading_features_exits_at_the_cue_it_likes(engine_with, tiny_r1: Path) -> None:
    """A probe that separates the two cues' hidden states exits at 'Hmm', not 'Wait'."""
    weight, bias = hmm_not_wait_weights(tiny_r1)
    chooser = engine_with(bias=bias, weight=weight, layers=[1])
    events, done = run(chooser)
    decisions = [(e.cue, e.decision) for e in events if isinstance(e, CueScored)]
    assert decisions == [("wait", "continue"), ("hmm", "exit")]
    assert done.result.thinking == "Okay, so I need the sum. Wait let me check again: it is four"


def test_measured_saving_equals_no_exit_length(engine_with) -> None:
    """The measured saving is the un-exited run's length minus the exited one's."""
    engine = engine_with(ALWAYS)
    events = list(engine.generate(QUESTION, temperature=0, seed=0, measure_savings=True))
    done = next(e for e in events if isinstance(e, Done))
    savings = events[-1]
    assert isinstance(savings, Savings) and not savings.capped
    _, baseline = run(engine, exit="none")
    full = baseline.result.tokens.completion
    used = done.result.tokens.completion
    assert savings.natural_tokens == full
    assert savings.tokens_saved == full - used > 0


def test_no_exit_flag_is_the_same_loop_without_exits(engine_with) -> None:
    """exit="none" never scores or exits, even with an always-pass probe loaded."""
    events, done = run(engine_with(ALWAYS), exit="none")
    assert not done.result.exited and done.result.thinking == R1_THINKING.strip()
    assert {e.decision for e in events if isinstance(e, CueScored)} == {"off"}


def test_sampling_at_temperature_follows_strong_script(engine_with) -> None:
    """top_k → temp → top_p → dist still exits the same way when the model is confident."""
    events = list(engine_with(ALWAYS).generate(QUESTION, temperature=0.6, top_p=0.95, seed=7))
    assert events[-1].result.exit.cue == "wait"


def test_second_turn_reuses_the_cached_prefix(tiny_r1: Path) -> None:
    """A follow-up turn decodes only what changed since the cached tokens."""
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    _, first = run(engine, exit="none")
    history = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.result.answer},
        {"role": "user", "content": "And 3+3?"},
    ]
    done = list(engine.generate(history, temperature=0, seed=0, max_tokens=5, exit="none"))[-1]
    old = engine.backend.prompt_tokens(engine.render_prompt(QUESTION))
    new = engine.backend.prompt_tokens(engine.render_prompt(history))
    shared = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    assert shared > 5 and done.result.tokens.cached == shared


def test_cancel_stops_within_a_token_and_engine_stays_usable(tiny_r1: Path) -> None:
    """cancel() ends the run with finish_reason 'cancelled'; closing the iterator works too."""
    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    seen = 0
    events = engine.generate(QUESTION, temperature=0, seed=0, exit="none")
    for event in events:
        if isinstance(event, ThinkingDelta):
            seen += 1
            if seen == 3:
                canceller = threading.Thread(target=engine.cancel)
                canceller.start()
                canceller.join()  # the flag is set before the next token is taken
        if isinstance(event, Done):
            assert event.result.finish_reason == "cancelled"
            assert len(event.result.thinking) < len(R1_THINKING)
    closing = engine.generate(QUESTION, temperature=0, seed=0)
    next(closing)
    closing.close()
    _, done = run(engine, exit="none")
    assert done.result.thinking == R1_THINKING.strip() and done.result.tokens.cached > 0


def test_prompt_longer_than_context_is_refused(tiny_r1: Path) -> None:
    engine = Engine(tiny_r1, probe=None, n_ctx=64)
    with pytest.raises(ContextOverflowError, match="context holds 64: shorten the prompt or raise --n-ctx"):
        engine.generate("word " * 200)


def test_generation_stops_cleanly_at_a_full_context(tiny_r1: Path) -> None:
    """Running out of context mid-thinking ends the answer with finish_reason 'length'."""
    engine = Engine(tiny_r1, probe=None, n_ctx=32)
    done = list(engine.generate(QUESTION, temperature=0, seed=0, exit="none"))[-1]
    assert done.result.finish_reason == "length" and done.result.tokens.total == 32


def test_probe_for_another_model_is_refused(tiny_r1: Path, smol_info, tmp_path: Path) -> None:
    probe = make_probe(tmp_path / "smol-probe", smol_info)
    with pytest.raises(ProbeError, match="made for .*not tiny-scripted-qwen2"):
        Engine(tiny_r1, probe=probe, n_ctx=512)
