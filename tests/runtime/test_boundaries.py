"""Budget cuts never split a number or a word, and prefer the end of a line or sentence."""

from __future__ import annotations

from lynx_edge.runtime.limits import CutWindow, boundary_at

PIECES = ["So", " the", " total", " is", " 1", "2", "3", ".", " Then", " we", " add", " 4", "5", "\n", "Wait"]


def kept(target: int, hard: int, start: int) -> str:
    return "".join(PIECES[: CutWindow(target, hard, start).cut(PIECES)])


def test_a_cut_inside_a_number_moves_to_a_sentence_end() -> None:
    assert kept(6, 6, 2) == "So the total is"  # a raw cut at 6 keeps "So the total is 12"; no sentence end near
    assert kept(6, 8, 2) == "So the total is 123."  # the grace reaches the sentence end after the number


def test_with_no_sentence_end_ahead_the_cut_stays_at_the_open_step_not_the_finished_one() -> None:
    # moving back to "…123." would make the answer repeat 123; "Then we" leaves the step open
    assert kept(10, 10, 5) == "So the total is 123. Then we"
    assert kept(11, 11, 10) == "So the total is 123. Then we add"


def test_with_no_gap_ahead_the_cut_moves_back_to_the_last_sentence_end() -> None:
    assert kept(12, 12, 6) == "So the total is 123."  # "add 4|5": no room ahead, never inside a number


def test_the_first_natural_boundary_after_the_target_wins() -> None:
    assert kept(9, 14, 5) == "So the total is 123. Then we add 45\n"


def test_decimals_and_words_are_not_boundaries() -> None:
    assert boundary_at("costs 3.", "5") is None
    assert boundary_at("the to", "tal") is None
    assert boundary_at("is 123.", " Then") == "sentence"
    assert boundary_at("add 45\n", "Wait") == "line"


def test_text_without_any_boundary_is_cut_at_the_hard_end() -> None:
    assert CutWindow(2, 3, 1).cut(["1", "2", "3", "4", "5"]) == 3


def test_thinking_that_ends_inside_the_window_is_not_cut() -> None:
    assert CutWindow.budget(100).cut(PIECES) == len(PIECES)
    assert CutWindow(12, 20, 8).cut(PIECES[:13]) == 13  # "…add 45" ends inside the window
    assert CutWindow(12, 20, 8).cut(PIECES) == 14  # the line end before "Wait" is the first after the target


def test_a_budget_window_never_passes_the_answer_reserve() -> None:
    window = CutWindow.budget(200, ceiling=180)
    assert window.hard == 180 and window.target == 180 and window.start == 180 - 45
    assert CutWindow.budget(200) == CutWindow(200, 225, 150)
    assert CutWindow.budget(3, ceiling=-2) == CutWindow(0, 0, 0)  # no room to think: close at once
