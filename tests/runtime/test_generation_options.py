"""Training-free exits, branches, batching, budgets, grammars, log-probabilities and sampler
fields, on the tiny scripted model (deterministic) and the real reasoner."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import HMM_INDEX, R1_THINKING, WAIT_INDEX

from lynx_edge.errors import SettingError
from lynx_edge.events import CueScored, Reply
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.llama_backend import plain_llama
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.replay import AnswerAt, Replay

QUESTION = "What is 2+2?"
PROBLEM = "Elena buys 8 cards for 23 dollars each and pays with 200 dollars. How much change does Elena get?"


def reply(engine: Engine, question: str = QUESTION, **options) -> Reply:
    return Reply.of(engine.generate(question, temperature=0, seed=0, **options))


@pytest.fixture(scope="module")
def tiny(tiny_r1: Path) -> Engine:
    return Engine(tiny_r1, probe=None, n_ctx=512, parallel=3)


def test_without_a_probe_the_training_free_policy_exits_and_says_so(tiny: Engine) -> None:
    """Consistency (the default): trial answers at 'Wait' and 'Hmm' agree, so it exits at
    'Hmm'; the notice and the result name the policy and that it carries no guarantee."""
    assert any("no probe matches" in line for line in tiny.notices)
    r = reply(tiny)
    result = r.result
    assert result.exit.cue == "hmm" and result.exit.policy == "consistency"
    assert [c.trial for c in r.cues] == [" Final Answer: \\boxed{4}"] * 2
    assert result.tokens.trial > 0 and result.trial_seconds > 0
    assert "no risk guarantee" in result.policy and not result.guarantee and result.alpha is None
    assert result.thinking == "Okay, so I need the sum. Wait let me check again: it is four"


def test_deer_exits_at_the_first_confident_trial(tiny: Engine) -> None:
    r = reply(tiny, exit="deer")
    assert r.result.exit.cue == "wait" and r.result.exit.policy == "deer"
    assert r.cues[0].score > 0.95 and r.cues[0].threshold == 0.95


def test_trials_leave_the_main_sequence_untouched(tiny: Engine) -> None:
    """A policy that tries at every cue but never exits writes exactly the plain tokens."""
    plain = reply(tiny, exit="none")
    plain_tokens = list(tiny.backend.tokens)
    tried = reply(tiny, exit="consistency", trial_level=5)
    assert not tried.result.exited and tried.result.tokens.trial > 0
    assert tiny.backend.tokens == plain_tokens and tried.thinking == plain.thinking == R1_THINKING


def test_a_branch_shares_the_prefix_and_never_moves_the_main_sequence(tiny: Engine) -> None:
    """A forced answer through the replay door (on the branch) leaves the trace's cache as
    it was: the same cells, the same logits for its last token."""
    b = tiny.backend
    result = reply(tiny, exit="none").result
    held, positions = list(b.tokens), b.positions(0)
    assert held == [*result.prompt_ids, *result.token_ids]
    logits = b.logits().copy()

    def job(lane):  # noqa: ANN001, ANN202
        yield from lane.hold(held)
        return (yield from lane.answers(len(result.prompt_ids), [AnswerAt(len(result.token_ids) - 5, tiny.exit_text)]))

    (timed,) = Replay(tiny).one(job)
    assert timed.answer.answer_tokens > 0 and b.positions(0) == positions and b.tokens == held
    b.truncate(len(held) - 1)
    b.decode(held[-1:])
    np.testing.assert_allclose(b.logits(), logits, atol=1e-5)


def run_batched(engine: Engine, questions: list[str], options: GenerationOptions) -> list[Reply]:
    """Every question through the scheduler, as many at once as there are slots (the rest
    join as slots free up), each with its own seed."""
    scheduler = engine.scheduler()
    replies = defaultdict(Reply)
    queue = list(enumerate(questions))
    while queue or scheduler.busy:
        while queue and scheduler.free_slot() is not None:
            i, question = queue.pop(0)
            plan = engine.plan(question, options.but(seed=i))
            scheduler.add(
                lambda slot, plan=plan: engine.generation(plan, slot, cancelled=threading.Event()).steps(),
                scheduler.free_slot(plan.prompt),
                replies[i].fold,
            )
        scheduler.step()
    return [replies[i] for i in range(len(questions))]


def test_a_request_answers_alike_alone_or_batched(tiny: Engine, reasoner: Path) -> None:
    """Same seed, same tokens, whether a request runs alone or with others in the batch: five
    requests through three slots on the tiny model (trials and exits included), and three
    sampled reasoner traces decoded together."""
    questions = [f"What is {i}+{i}?" for i in range(5)]
    options = GenerationOptions(exit="consistency", temperature=0.6)
    alone = [Reply.of(tiny.generate(q, options.but(seed=i))) for i, q in enumerate(questions)]
    batched = run_batched(tiny, questions, options)
    assert [(r.thinking, r.answer, r.result.exit) for r in batched] == [
        (r.thinking, r.answer, r.result.exit) for r in alone
    ]
    engine = Engine(reasoner, probe=None, parallel=3)
    questions = [
        PROBLEM,
        "Tom has 5 apples and buys 3 more. How many apples does he have?",
        "A box holds 12 pens. How many pens are in 4 boxes?",
    ]
    options = GenerationOptions(exit="none", temperature=0.6, max_tokens=120)
    alone = [Reply.of(engine.generate(q, options.but(seed=i))) for i, q in enumerate(questions)]
    for slot in engine.scheduler().slots:
        engine.backend.clear(slot.main)  # start from an empty cache, as the single runs did
    batched = run_batched(engine, questions, options)
    assert [(r.thinking, r.answer) for r in batched] == [(r.thinking, r.answer) for r in alone]
    engine.close()


def test_a_budget_exit_keeps_room_for_the_answer(tiny: Engine) -> None:
    """max_tokens 16 with 8 kept for the answer: the runtime closes the thinking itself."""
    r = reply(tiny, exit="none", max_tokens=16, answer_reserve=8)
    assert r.result.exit.policy == "budget" and r.result.answer
    assert r.result.tokens.completion <= 16 and r.result.finish_reason in ("stop", "length")


def test_an_answer_reserve_that_leaves_no_room_is_refused(tiny: Engine) -> None:
    with pytest.raises(SettingError, match="leaves no room to think"):
        tiny.generate(QUESTION, max_tokens=8, answer_reserve=8)


def test_a_grammar_holds_the_answer_and_leaves_the_thinking_free(tiny: Engine) -> None:
    """Thinking as without a grammar; the answer is JSON that fits the schema."""
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    r = reply(tiny, exit="none", json_schema=schema)
    assert r.thinking == R1_THINKING
    assert isinstance(json.loads(r.answer)["answer"], int)


def test_a_schema_that_cannot_become_a_grammar_is_refused_before_generating(tiny: Engine) -> None:
    with pytest.raises(SettingError, match="cannot become a grammar"):
        tiny.generate(QUESTION, json_schema={"type": "strange"})


def test_logit_bias_bans_a_token(tiny: Engine) -> None:
    """A -100 bias on " Wait" removes the first cue from the thinking."""
    wait = tiny.backend.tokenize(" Wait")[0]
    r = reply(tiny, exit="none", logit_bias={wait: -100})
    assert "Wait" not in r.thinking
    with pytest.raises(SettingError, match="outside this model's vocabulary"):
        tiny.generate(QUESTION, logit_bias={10**9: 1.0})


def test_no_think_closes_the_thinking_at_once(tiny: Engine) -> None:
    r = reply(tiny, exit="none", think=False)
    assert r.thinking == "" and r.result.tokens.thinking <= 4 and not r.cues


def test_logprobs_equal_llama_cpp_pythons_own(reasoner: Path) -> None:
    """The log-probabilities reported for each token are llama.cpp's log-softmax of the same
    logits, as llama-cpp-python reports them for the same prompt and greedy decoding."""
    engine = Engine(reasoner, probe=None)
    r = Reply.of(
        engine.generate(
            PROBLEM, exit="none", answer_reserve=0, temperature=0, max_tokens=24, logprobs=True, top_logprobs=3
        )
    )
    prompt = engine.backend.prompt_tokens(engine.render_prompt(PROBLEM))
    llm = plain_llama(reasoner, n_ctx=1024, n_threads=engine.backend.n_threads, logits_all=True)
    theirs = llm.create_completion(prompt, max_tokens=24, temperature=0.0, logprobs=3, repeat_penalty=1.0)
    want = theirs["choices"][0]["logprobs"]
    ours = r.thinking_logprobs
    assert [lp.text for lp in ours] == want["tokens"][: len(ours)]
    np.testing.assert_allclose([lp.logprob for lp in ours], want["token_logprobs"][: len(ours)], atol=1e-3)
    top = want["top_logprobs"][0]
    assert {t for t, _ in ours[0].top} == set(top)
    engine.close()


def test_penalties_follow_llama_cpp_python(reasoner: Path) -> None:
    """frequency and presence penalties act through llama.cpp's sampler as llama-cpp-python
    applies them: the same greedy tokens for the same settings, in this process. Their effect
    is asserted as what they are for (strong penalties make the text repeat itself less), not
    as where one CPU's kernels happen to make the penalised text diverge."""
    engine = Engine(reasoner, probe=None)
    prompt = engine.backend.prompt_tokens(engine.render_prompt(PROBLEM))
    penalties = {"frequency_penalty": 2.0, "presence_penalty": 2.0}
    penalised = Reply.of(
        engine.generate(PROBLEM, exit="none", answer_reserve=0, temperature=0, max_tokens=48, **penalties)
    )
    plain = Reply.of(engine.generate(PROBLEM, exit="none", answer_reserve=0, temperature=0, max_tokens=48))
    llm = plain_llama(reasoner, n_ctx=1024, n_threads=engine.backend.n_threads)
    theirs = llm.create_completion(prompt, max_tokens=48, temperature=0.0, repeat_penalty=1.0, **penalties)
    engine.close()
    assert penalised.thinking.strip() == theirs["choices"][0]["text"].strip().split("</think>")[0].strip()

    def repeats(text: str) -> int:
        tokens = llm.tokenize(text.encode(), add_bos=False)
        return len(tokens) - len(set(tokens))

    assert repeats(penalised.thinking) < repeats(plain.thinking)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 1.5}, r"alpha must be a number in \(0, 1\), got 1.5"),
        ({"temperature": -1}, r"temperature must be a number in \[0, 2\], got -1: pass e.g. temperature=0.6"),
        ({"top_p": 0}, r"top_p must be a number in \(0, 1\]"),
        ({"top_logprobs": 30}, r"top_logprobs must be an integer in \[0, 20\]"),
        ({"frequency_penalty": 3}, r"frequency_penalty must be a number in \[-2, 2\]"),
        ({"exit": "sometimes"}, "exit must be one of auto, none, probe, deer, consistency, got 'sometimes'"),
        ({"logit_bias": {5: 200}}, r"logit_bias must be TOKEN=BIAS pairs with a bias in \[-100, 100\], got 200"),
        ({"max_tokens": True}, "max_tokens must be an integer ≥ 1, got True"),
        ({"json_schema": "object"}, "json_schema must be a JSON schema object"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_options_are_checked_once_where_they_are_made(options: dict, message: str) -> None:
    """One schema, one check: each bad value is one line naming the field, what it takes,
    what it got (and an example where one helps)."""
    with pytest.raises(SettingError, match=message) as caught:
        GenerationOptions(**options)
    assert caught.value.field == next(iter(options))


def test_empty_prompt_is_refused(tiny: Engine) -> None:
    with pytest.raises(SettingError, match="the prompt is empty"):
        tiny.generate("   ")


def test_probe_exit_on_a_model_without_one_is_refused(tiny: Engine) -> None:
    with pytest.raises(SettingError, match="has no probe"):
        tiny.generate(QUESTION, exit="probe")


def test_cue_events_index_the_cue_token(tiny: Engine) -> None:
    cues = [c for c in reply(tiny, exit="none").cues if isinstance(c, CueScored)]
    assert [c.token_index for c in cues] == [WAIT_INDEX, HMM_INDEX]
