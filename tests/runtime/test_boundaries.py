"""Soft cuts never split a number or a word, and prefer the end of a line or sentence."""

from __future__ import annotations

from lynx_edge.runtime.boundaries import boundary_at, soft_cut

PIECES = ["So", " the", " total", " is", " 1", "2", "3", ".", " Then", " we", " add", " 4", "5", "\n", "Wait"]


def kept(limit: int, **kw: int) -> str:
    return "".join(PIECES[: soft_cut(PIECES, limit, **kw)])


def test_a_cut_inside_a_number_moves_back_before_it() -> None:
    assert kept(6) == "So the total is"  # a raw cut at 6 keeps "So the total is 12"


def test_a_sentence_or_line_end_within_reach_wins_over_a_later_word_gap() -> None:
    assert kept(10) == "So the total is 123."
    assert kept(14) == "So the total is 123. Then we add 45\n"
    assert kept(11, reach=1) == "So the total is 123. Then we add"  # the sentence end is 3 tokens back


def test_decimals_and_words_are_not_boundaries() -> None:
    assert boundary_at("costs 3.", "5") is None
    assert boundary_at("the to", "tal") is None
    assert boundary_at("is 123.", " Then") == "sentence"
    assert boundary_at("add 45\n", "Wait") == "line"


def test_text_without_any_boundary_is_cut_where_asked() -> None:
    assert soft_cut(["1", "2", "3", "4"], 3) == 3
    assert soft_cut(PIECES, 100) == len(PIECES)
