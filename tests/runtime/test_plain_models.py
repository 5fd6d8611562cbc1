"""Models that do not think (Llama-3.x, Qwen2.5, Gemma, Mistral instruct) are served as they are.

A tiny random-weight qwen2 on the Qwen2.5-Coder tokenizer and template (no think tags, no
``<think>`` token) whose greedy reply is scripted: the whole reply must reach the user as the
answer — no forced ``<think>``, no exit, no reserve cut, budgets ignored — through the engine,
``run`` and the server's doors.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import PLAIN_ANSWER as ANSWER
from helpers import PLAIN_QUESTION as QUESTION

from lynx_edge import Engine
from lynx_edge.cli.main import main
from lynx_edge.events import AnswerDelta, Done, ThinkingDelta


@pytest.fixture(scope="module")
def plain_engine(plain_model: Path) -> Iterator[Engine]:
    engine = Engine(plain_model, n_ctx=512)
    yield engine
    engine.close()


def test_a_model_without_think_tags_is_judged_not_to_think_and_says_so(plain_engine: Engine) -> None:
    assert not plain_engine.thinks and plain_engine.card is None
    assert plain_engine.render_prompt(QUESTION).endswith("<|im_start|>assistant\n")  # no <think> forced
    assert any("does not think" in line for line in plain_engine.notices)
    assert not plain_engine.describe().thinks


@pytest.mark.parametrize("asked", [{}, {"thinking_budget": 2}, {"max_tokens": 9}, {"alpha": 0.5, "exit": "auto"}])
def test_its_whole_reply_is_the_answer_whatever_the_request_asks(plain_engine: Engine, asked: dict) -> None:
    events = list(plain_engine.generate(QUESTION, temperature=0, seed=0, **asked))
    done = next(e for e in events if isinstance(e, Done)).result
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == ANSWER == done.answer
    assert not any(isinstance(e, ThinkingDelta) for e in events) and done.thinking == ""
    assert done.tokens.thinking == 0 and done.exit is None and done.finish_reason == "stop"
    assert done.policy == "none (this model does not think: no early exit)" and not done.guarantee


def test_thinks_yes_overrides_the_judgement(plain_model: Path) -> None:
    engine = Engine(plain_model, n_ctx=512, thinks=True)
    try:
        assert engine.thinks and engine.render_prompt(QUESTION).endswith("<think>\n")
    finally:
        engine.close()


def test_run_prints_the_plain_answer(plain_model: Path) -> None:
    result = CliRunner().invoke(main, ["run", QUESTION, "--model", str(plain_model), "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert reply["answer"] == ANSWER and reply["thinking"] == "" and reply["exit"] is None
    forced = CliRunner().invoke(main, ["run", QUESTION, "--model", str(plain_model), "--thinks", "yes", "--json"])
    assert forced.exit_code == 0, forced.output


def test_models_lists_it_as_one_that_does_not_think(plain_model: Path, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cache" / "models").mkdir(parents=True)
    shutil.copy(plain_model, tmp_path / "cache" / "models" / plain_model.name)
    monkeypatch.setenv("LYNX_EDGE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    listed = next(line for line in result.stdout.splitlines() if plain_model.name in line)
    assert "this model does not think: no early exit" in listed
    reasoner = next(line for line in result.stdout.splitlines() if "smollm2-135m-reasoner" in line)
    assert "does not think" not in reasoner
