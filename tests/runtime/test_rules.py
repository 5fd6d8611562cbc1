"""Which calibrated rule a risk level picks, and what it decides."""

from __future__ import annotations

import math

import pytest

from lynx_edge.errors import SettingError
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.rules import calibrated_levels, select_rule

CAL = {
    "per_cue": [
        {"delta": 0.05, "q_pos": 0.1, "q_neg": 0.9},
        {"delta": 0.1, "q_pos": 0.2, "q_neg": 0.7},
        {"delta": 0.2, "q_pos": 0.3, "q_neg": None},
    ],
    "per_answer": [{"alpha": 0.05, "threshold": 0.97}, {"alpha": 0.1, "threshold": 0.9}],
}


@pytest.mark.parametrize(
    ("alpha", "mode", "level", "threshold"),
    [
        (0.1, "per-cue", 0.1, 0.8),
        (0.15, "per-cue", 0.1, 0.8),  # nearest calibrated level not above alpha
        (0.05, "per-cue", 0.05, 0.9),
        (0.5, "per-cue", 0.2, math.inf),  # q_neg None = +inf: never exits
        (0.1, None, 0.1, 0.9),  # default mode prefers per-answer
        (0.07, "per-answer", 0.05, 0.97),
    ],
)
def test_alpha_picks_entry(alpha: float, mode: str | None, level: float, threshold: float) -> None:
    """alpha selects the largest calibrated level ≤ alpha, never a looser one."""
    rule = select_rule(CAL, alpha, mode)
    assert rule.level == level
    assert rule.threshold == pytest.approx(threshold)


@pytest.mark.parametrize(("score", "exits"), [(0.95, True), (0.81, True), (0.8, True), (0.79, False), (0.1, False)])
def test_per_cue_decisions(score: float, exits: bool) -> None:
    """δ=0.1: exit iff p ≥ 1 − 0.2 and p > 0.7."""
    assert select_rule(CAL, 0.1, "per-cue").exits(score) is exits


def test_per_answer_decision() -> None:
    rule = select_rule(CAL, 0.1, "per-answer")
    assert rule.exits(0.9) and not rule.exits(0.89)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, math.nan, True, "0.1"])
def test_alpha_outside_unit_interval_is_refused_where_options_are_made(alpha: object) -> None:
    with pytest.raises(SettingError, match=r"alpha must be a number in \(0, 1\), got .*: pass e.g. alpha=0.1"):
        GenerationOptions(alpha=alpha)


def test_alpha_below_every_entry_is_refused_with_the_fix() -> None:
    with pytest.raises(SettingError, match="pass --alpha 0.05 or higher"):
        select_rule(CAL, 0.01, "per-cue")


def test_missing_mode_is_refused() -> None:
    with pytest.raises(SettingError, match="no per-answer calibration"):
        select_rule({"per_cue": CAL["per_cue"]}, 0.1, "per-answer")


def test_levels_listed_in_order() -> None:
    assert calibrated_levels(CAL, "per-cue") == [0.05, 0.1, 0.2]
