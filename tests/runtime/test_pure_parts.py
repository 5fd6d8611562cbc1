"""Pure parts with no model: training-free decisions, the thread count rule, how savings and
session totals read, the reply fold."""

from __future__ import annotations

import pytest

from lynx_edge.display import SessionTotals, savings_text
from lynx_edge.events import AnswerDelta, CueScored, Reply, Savings, ThinkingDelta
from lynx_edge.runtime.policies import TrialExit, normalize_answer
from lynx_edge.runtime.rules import ExitRule
from lynx_edge.runtime.threads import ThreadGovernor, threads_for


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("\nThe answer is \\boxed{1,200}.", "1200"),
        ("\\boxed{ 16 }", "16"),
        ("\\boxed{$5.}", "5"),
        ("no box 7", "nobox7"),
    ],
)
def test_trial_answers_normalise(text: str, key: str) -> None:
    assert normalize_answer(text) == key


def test_consistency_needs_k_equal_answers_in_a_row() -> None:
    policy = TrialExit("consistency", 2)
    assert not policy.judge("\\boxed{7}", 0.9, []).exits
    assert policy.judge("\\boxed{7}", 0.9, ["\\boxed{7}"]).exits
    assert not policy.judge("\\boxed{8}", 0.9, ["\\boxed{7}"]).exits
    assert TrialExit("consistency", 3).judge("\\boxed{7}", 0.9, ["\\boxed{7}", "\\boxed{7}"]).exits


def test_deer_needs_confidence_above_lambda_and_a_calibrated_card_overrides() -> None:
    assert TrialExit("deer", 0.95).judge("x", 0.96, []).exits
    assert not TrialExit("deer", 0.95).judge("x", 0.95, []).exits
    calibrated = TrialExit("deer", 0.95, rule=ExitRule("per-answer", 0.05, lam=0.99))
    assert not calibrated.judge("x", 0.96, []).exits and calibrated.guarantee
    assert "no risk guarantee" in TrialExit("deer", 0.95).describe()


def test_trials_skip_where_they_cannot_pay_off() -> None:
    policy = TrialExit("deer", 0.95, min_thinking=10, min_gap=20)
    assert not policy.wants_trial(5, None)
    assert policy.wants_trial(12, None)
    assert not policy.wants_trial(25, 12) and policy.wants_trial(32, 12)


@pytest.mark.parametrize(
    ("physical", "others", "threads"),
    [(2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 3.0, 1), (8, 0.0, 8), (8, 1.0, 7), (8, 2.4, 5)],
)
def test_threads_leave_the_cores_others_want(physical: int, others: float, threads: int) -> None:
    assert threads_for(physical, others) == threads


def test_a_fixed_thread_count_is_kept() -> None:
    assert ThreadGovernor(fixed=3).advise() == 3


def test_savings_read_as_what_they_are() -> None:
    assert savings_text(Savings(176, 61, False)) == "saved 61 tok of 176"
    assert savings_text(Savings(17, -6, False)) == "the exit cost 6 extra tok"
    assert "saved ≥453 tok (full run stopped at the 512-token limit)" == savings_text(Savings(512, 453, True))


def test_session_totals_keep_costs_and_lower_bounds_visible() -> None:
    totals = SessionTotals(answers=3, exits=2, spent=100)
    totals.measured(Savings(80, 20, False))
    totals.measured(Savings(40, -5, False))
    line = totals.line()
    assert "saved 20 tok" in line and "exits cost 5 tok" in line and "net 15 tok" in line
    totals.measured(Savings(512, 100, True))
    assert "saved ≥120 tok" in totals.line()


def test_a_reply_folds_any_stream_of_events() -> None:
    reply = Reply.of(
        [ThinkingDelta("a "), CueScored("wait", 1, 0.2, 0.5, "continue"), ThinkingDelta("b"), AnswerDelta("4")]
    )
    assert (reply.thinking, reply.answer, len(reply.cues), reply.done) == ("a b", "4", 1, False)
