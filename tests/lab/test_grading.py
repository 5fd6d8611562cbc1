"""Grading: what counts as the same answer (shared by probe labels and benchmarks)."""

from __future__ import annotations

import pytest

from lynx_edge.lab.grading import extract_answer, grade, last_boxed


@pytest.mark.parametrize(
    ("response", "gold", "kind", "correct"),
    [
        ("so the total is \\boxed{6}.", "6", "number", True),
        ("\\boxed{\\frac{1}{2}}", "0.5", "number", True),
        ("\\boxed{0.5}", "\\frac{1}{2}", "math", True),
        ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", "math", True),
        ("\\boxed{(1, 2)}", "(1,2)", "math", True),
        ("\\boxed{(2, 1)}", "(1,2)", "math", False),
        ("\\boxed{5\\text{ cm}}", "5", "number", True),
        ("\\boxed{033}", "33", "integer", True),
        ("\\boxed{34}", "33", "integer", False),
        ("We get 1,234 apples", "1234", "number", True),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", "math", True),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
        ("\\boxed{2x+1}", "1+2x", "math", True),
        ("\\boxed{50\\%}", "50", "number", True),
        ("\\boxed{7}", "6", "number", False),
        ("The answer is \\boxed{12", "12", "number", True),  # cut at the token cap, still readable
        ("\\boxed{B}", "B", "choice", True),
        ("The answer is (C).", "C", "choice", True),
        ("\\boxed{A}", "C", "choice", False),
        ("\\boxed{Yes}", "yes", "text", True),
        ("no number at all", "3", "number", False),
        ("\\boxed{100001}", "100000", "number", False),  # integers compare exactly, at any size
        ("\\boxed{123456789}", "123456788", "number", False),
        ("\\boxed{0.33333}", "\\frac{1}{3}", "math", True),  # non-integers keep a relative tolerance
    ],
)
def test_grade(response: str, gold: str, kind: str, correct: bool) -> None:
    assert grade(response, gold, kind).correct is correct


def test_last_boxed_takes_the_last_balanced_box() -> None:
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("nothing boxed") is None


def test_fallbacks_read_the_answer_is_then_the_last_number() -> None:
    assert extract_answer("I think the answer is 42.") == "42"
    assert extract_answer("first 3 then 8") == "8"
    assert extract_answer("no digits") is None
