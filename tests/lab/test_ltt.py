"""Per-answer Learn-then-Test maths against brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from lynx_edge.lab.risk import (
    binomial_cdf,
    hoeffding_bentkus_p_value,
    loss_intervals,
    ltt_threshold,
    premature_counts,
)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.1), (3, 20, 0.1), (7, 200, 0.05), (50, 400, 0.2), (5, 5, 0.3)])
def test_binomial_cdf_matches_scipy(k: int, n: int, p: float) -> None:
    assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-12)


def test_hoeffding_bentkus_is_never_below_the_binomial_bound() -> None:
    for k, n in [(0, 50), (2, 100), (10, 100), (30, 100)]:
        hb = hoeffding_bentkus_p_value(k, n, 0.1)
        assert hb >= binom.cdf(k, n, 0.1) - 1e-12 and hb <= 1.0


def random_traces(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    traces = []
    for _ in range(n):
        m = int(rng.integers(0, 6))
        probs = np.round(rng.random(m), 2)
        ok = rng.random(m) < probs  # higher scores are right more often
        traces.append((probs, ok, bool(rng.random() < 0.7)))
    return traces


def brute_loss(trace: tuple[np.ndarray, np.ndarray, bool], lam: float) -> int:
    probs, ok, full_ok = trace
    for p, right in zip(probs, ok):
        if p >= lam:
            return int(full_ok and not right)
    return 0


def brute_ltt(traces, alpha: float, confidence: float) -> float | None:
    candidates = sorted({float(p) for t in traces for p in t[0]}, reverse=True)
    chosen = None
    for lam in candidates:
        k = sum(brute_loss(t, lam) for t in traces)
        if binom.cdf(k, len(traces), alpha) > 1 - confidence:
            break
        chosen = lam
    return chosen


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_ltt_matches_brute_force(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    traces = random_traces(rng, 300)
    assert ltt_threshold(traces, alpha, confidence=0.9) == brute_ltt(traces, alpha, 0.9)


@pytest.mark.parametrize("seed", range(4))
def test_premature_counts_match_brute_force(seed: int) -> None:
    traces = random_traces(np.random.default_rng(seed), 80)
    grid = np.array([1.0, 0.8, 0.5, 0.37, 0.2, 0.0, *np.unique(np.concatenate([t[0] for t in traces]))])
    expected = [sum(brute_loss(t, lam) for t in traces) for lam in grid]
    assert premature_counts(loss_intervals(traces), grid).tolist() == expected


def test_too_few_traces_never_exit() -> None:
    # with n traces and no loss the p-value is (1-α)^n: 20 traces cannot certify α = 0.05 at 0.9
    traces = [(np.array([0.9]), np.array([True]), True)] * 20
    assert (1 - 0.05) ** 20 > 0.1
    assert ltt_threshold(traces, 0.05) is None
    n_enough = math.ceil(math.log(0.1) / math.log(0.95))
    assert ltt_threshold([traces[0]] * n_enough, 0.05) == pytest.approx(0.9)


def test_threshold_stops_at_the_first_uncertified_level() -> None:
    # 100 right traces: exits at 0.95 are right, 20 traces would exit wrongly at 0.9, and
    # below that nothing changes: fixed-sequence testing stops at the first failure
    traces = [(np.array([0.9, 0.4]), np.array([False, True]), True)] * 20
    traces += [(np.array([0.95]), np.array([True]), True)] * 80
    assert ltt_threshold(traces, 0.1) == pytest.approx(0.95)
    assert ltt_threshold(traces, 0.3) == pytest.approx(0.4)
