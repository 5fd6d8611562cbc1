"""Split-conformal maths against brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lynx_edge.lab.risk import class_conditional_quantiles, conformal_quantile
from lynx_edge.runtime.rules import per_cue_exits, per_cue_threshold


def brute_quantile(scores: list[float], delta: float) -> float:
    """Smallest q such that at least ⌈(n+1)(1−δ)⌉ scores are ≤ q (inf if impossible)."""
    n = len(scores)
    need = (n + 1) * (1 - delta)
    for q in sorted(scores):
        if sum(s <= q for s in scores) >= need - 1e-9:
            return q
    return math.inf


@pytest.mark.parametrize("n", [1, 5, 19, 20, 99, 100])
@pytest.mark.parametrize("delta", [0.01, 0.05, 0.1, 0.2, 0.3])
def test_quantile_matches_brute_force(n: int, delta: float) -> None:
    """k = ⌈(n+1)(1−δ)⌉-th smallest score, +inf when k > n."""
    scores = list(np.random.default_rng(n).random(n))
    assert conformal_quantile(np.array(scores), delta) == brute_quantile(scores, delta)


def test_too_few_scores_means_never_exclude() -> None:
    """k > n: with 10 scores no 5 % quantile exists, so q = +inf."""
    assert conformal_quantile(np.linspace(0, 1, 10), 0.05) == math.inf
    assert conformal_quantile(np.linspace(0, 1, 19), 0.05) == 1.0  # k = 19 = n


def test_float_rounding_does_not_bump_k() -> None:
    """(n+1)(1−δ) = 9 exactly must give k = 9, not 10."""
    assert conformal_quantile(np.arange(1, 10) / 10, 0.1) == pytest.approx(0.9)


def test_class_conditional_and_exit_rule() -> None:
    """Positives score 1−p, negatives p; exit iff p ≥ 1−q_pos and p > q_neg."""
    probs = np.array([0.9, 0.8, 0.95, 0.2, 0.1, 0.3])
    labels = np.array([1, 1, 1, 0, 0, 0])
    q_pos, q_neg = class_conditional_quantiles(probs, labels, 0.3)
    assert q_pos == pytest.approx(0.2)  # k = ⌈4·0.7⌉ = 3 → third of {0.05, 0.1, 0.2}
    assert q_neg == pytest.approx(0.3)
    assert per_cue_threshold(q_pos, q_neg) == pytest.approx(0.8)
    assert bool(per_cue_exits(0.85, q_pos, q_neg))
    assert not bool(per_cue_exits(0.75, q_pos, q_neg))
    assert not bool(per_cue_exits(0.99, q_pos, math.inf))


def test_guarantee_holds_empirically() -> None:
    """On exchangeable negatives, the exit rate stays at or below δ (up to sampling noise)."""
    rng = np.random.default_rng(0)
    delta, violations = 0.1, []
    for _ in range(200):
        neg_cal, neg_test = rng.beta(2, 5, 300), rng.beta(2, 5, 2000)
        q_neg = conformal_quantile(neg_cal, delta)
        violations.append(np.mean(neg_test > q_neg))
    assert np.mean(violations) <= delta + 0.01
