"""Thinking that always ends in an answer: the answer reserve under every token limit, the
thinking budget's soft cut, and the loop guard — on the embedded reasoner, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from lynx_edge.events import Reply
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.limits import CutWindow, boundary_at
from lynx_edge.runtime.options import GenerationOptions

PROBLEM = "Tom has 12 apples and buys 30 more. How many apples does he have now?"


@pytest.fixture(scope="module")
def engine(reasoner: Path) -> Engine:
    e = Engine(reasoner, probe=None, n_ctx=1024)
    yield e
    e.close()


def ask(engine: Engine, **options: object) -> Reply:
    return Reply.of(engine.generate(PROBLEM, temperature=0, seed=0, exit="none", **options))


def streamed_thinking(r: Reply) -> str:
    return r.thinking.strip()


@pytest.mark.parametrize("limit", [40, 60, 80])
def test_a_tight_token_limit_still_gets_an_answer(engine: Engine, limit: int) -> None:
    """max_tokens alone (what apps send): the thinking is closed in time by a budget exit at a
    boundary, the answer is not empty, and nothing streamed was taken back."""
    r = ask(engine, max_tokens=limit)
    result = r.result
    assert result.answer and result.exit is not None and result.exit.policy == "budget"
    assert result.tokens.completion <= limit
    assert streamed_thinking(r) == result.thinking  # the stream showed exactly the kept thinking
    without = ask(engine, max_tokens=limit, answer_reserve=0).result
    assert without.answer == "" and without.finish_reason == "length"  # what the reserve prevents


def test_the_budget_cut_falls_at_a_line_sentence_or_word_boundary(engine: Engine) -> None:
    full = ask(engine, answer_reserve=0, max_tokens=400).result
    pieces = engine.token_texts(full.token_ids[: full.tokens.thinking])
    for budget in (20, 33, 47):
        r = ask(engine, thinking_budget=budget, max_tokens=400)
        cut = r.result.exit.token_index
        window = CutWindow.budget(budget)
        assert r.result.exit.policy == "budget" and cut == window.cut(pieces)  # the bench's rule, token by token
        assert window.start <= cut <= window.hard
        assert boundary_at("".join(pieces[:cut]), pieces[cut]) is not None  # never inside a word or number
        assert r.result.answer and streamed_thinking(r) == r.result.thinking


def test_an_explicit_reserve_that_leaves_no_room_is_refused(engine: Engine) -> None:
    with pytest.raises(Exception, match="leaves no room to think"):
        ask(engine, max_tokens=30, answer_reserve=30)


def test_the_loop_guard_closes_a_looping_thinking_and_stops_a_looping_answer(engine: Engine) -> None:
    """A logit bias makes the model repeat one word forever (on any CPU): with the guard the
    thinking closes as a loop exit and the looping answer stops with finish 'stop'; without
    it both run to the token limit."""
    word = engine.backend.tokenize(" and")[0]
    guarded = ask(engine, max_tokens=400, logit_bias=((word, 100.0),)).result
    assert guarded.exit is not None and guarded.exit.policy == "loop"
    assert guarded.loops == ("thinking", "answer") and guarded.finish_reason == "stop"
    assert guarded.tokens.completion < 200
    unguarded = ask(engine, max_tokens=400, logit_bias=((word, 100.0),), loop_guard=False).result
    assert unguarded.loops == () and unguarded.finish_reason == "length"


def test_no_loop_on_a_normal_answer(engine: Engine) -> None:
    r = ask(engine, max_tokens=400).result
    assert r.loops == () and (r.exit is None or r.exit.policy != "loop")


def test_a_loop_caught_at_the_context_end_ends_the_reply_instead_of_failing(engine: Engine, reasoner: Path) -> None:
    """The context holds the prompt and 50 tokens, the reserve is off: the loop exit's close
    would not fit, so the reply ends with finish 'length' (no error, nothing past the context)."""
    word = engine.backend.tokenize(" and")[0]
    prompt = engine.plan(PROBLEM, GenerationOptions(temperature=0)).prompt
    small = Engine(reasoner, probe=None, n_ctx=len(prompt) + 50)
    try:
        r = ask(small, answer_reserve=0, logit_bias=((word, 100.0),)).result
    finally:
        small.close()
    assert r.finish_reason == "length" and r.loops == ("thinking",) and r.tokens.completion <= 50
