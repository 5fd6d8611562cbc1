"""The risk promises, checked as a user relies on them: over many simulated calibration draws,
the realised rate exceeds the promised level in at most 1 − confidence of the draws — and a
broken calibration (pooled cues of one trace, or no confidence margin) fails the same check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from lynx_edge.lab.risk import (
    loss_intervals,
    ltt_threshold,
    pac_quantile,
    premature_counts,
    trace_level_quantiles,
)

CONFIDENCE = 0.9
DRAWS = 1000
# the violation frequency over DRAWS draws has a Monte-Carlo sd of ~1 point at 10 %
ALLOWED = 1 - CONFIDENCE + 0.03


@pytest.mark.parametrize(("n", "delta"), [(10, 0.3), (50, 0.1), (200, 0.05), (1000, 0.02), (37, 0.2)])
def test_pac_quantile_is_the_smallest_order_statistic_whose_coverage_is_certain_enough(n: int, delta: float) -> None:
    """Independent computation: the k-th smallest of n i.i.d. scores covers a Beta(k, n−k+1)
    share of the distribution; PAC needs P(coverage < 1 − δ) ≤ 1 − confidence, smallest k."""
    scores = np.arange(1, n + 1, dtype=float)  # the k-th smallest is k
    ok = [k for k in range(1, n + 1) if beta_dist.cdf(1 - delta, k, n - k + 1) <= 1 - CONFIDENCE]
    expected = float(min(ok)) if ok else np.inf
    assert pac_quantile(scores, delta, CONFIDENCE) == expected


def test_pac_quantile_with_too_few_scores_never_excludes() -> None:
    # 5 scores cannot certify δ = 0.1 at 90 %: even the largest covers < 0.9 with P = 0.9^5 = 0.59
    assert pac_quantile(np.ones(5), 0.1, CONFIDENCE) == np.inf
    assert binom.sf(4, 5, 0.9) > 1 - CONFIDENCE


def clustered_traces(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Traces of 3 cues; a trace that slipped (30 %) has 3 wrong cues with one shared score
    (the correlation pooled calibration ignores), the others 3 right cues."""
    traces = []
    for _ in range(n):
        if rng.random() < 0.3:
            traces.append((np.full(3, rng.beta(2, 5)), np.zeros(3, bool)))
        else:
            traces.append((rng.beta(5, 2, 3), np.ones(3, bool)))
    return traces


def wrong_exit_rate(q_neg: float) -> float:
    """The true per-cue rate: a wrong cue's score exceeds q_neg (scores are Beta(2, 5))."""
    return float(beta_dist.sf(q_neg, 2, 5))


def pooled_q_neg(traces, delta: float) -> float:
    probs = np.concatenate([p for p, _ in traces])
    labels = np.concatenate([y for _, y in traces])
    return pac_quantile(probs[~labels], delta, CONFIDENCE)


@pytest.mark.parametrize("delta", [0.1, 0.2])
def test_per_cue_promise_holds_with_correlated_cues_where_pooling_fails(delta: float) -> None:
    rng = np.random.default_rng(11)
    trace_level, pooled = [], []
    for draw in range(DRAWS):
        traces = clustered_traces(rng, 150)
        q_neg = trace_level_quantiles(traces, delta, confidence=CONFIDENCE, seed=draw)[1]
        trace_level.append(wrong_exit_rate(q_neg) > delta)
        pooled.append(wrong_exit_rate(pooled_q_neg(traces, delta)) > delta)
    assert np.mean(trace_level) <= ALLOWED
    assert np.mean(pooled) > ALLOWED  # the check can fail: pooling the cues of a trace breaks the promise


def answer_traces(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Traces with 1–4 cues whose scores rise along the trace; a cue's forced answer is right
    with probability = its score; a trace that slipped early has correlated wrong cues."""
    traces = []
    for _ in range(n):
        m = int(rng.integers(1, 5))
        probs = np.sort(rng.beta(4, 2, m))
        slip = rng.random() < 0.2
        ok = (rng.random(m) < probs) & ~(slip & (np.arange(m) < m - 1))
        traces.append((probs, ok, bool(rng.random() < 0.95)))
    return traces


def per_answer_rate(population, intervals, lam: float | None) -> float:
    if lam is None:
        return 0.0
    return float(premature_counts(intervals, np.array([lam]))[0] / len(population))


def test_per_answer_promise_holds_over_calibration_draws_and_an_uncertified_threshold_fails() -> None:
    rng = np.random.default_rng(5)
    population = answer_traces(rng, 40_000)  # the truth the calibration draws come from
    intervals = loss_intervals(population)
    alpha, certified, naive = 0.05, [], []
    for _ in range(DRAWS // 2):
        draw = [population[i] for i in rng.integers(0, len(population), 300)]
        certified.append(per_answer_rate(population, intervals, ltt_threshold(draw, alpha)) > alpha)
        # no confidence margin: the smallest λ whose empirical risk is ≤ α (what LTT guards against)
        naive_lam = ltt_threshold(draw, alpha, confidence=0.5)
        naive.append(per_answer_rate(population, intervals, naive_lam) > alpha)
    assert np.mean(certified) <= ALLOWED
    assert np.mean(naive) > ALLOWED
