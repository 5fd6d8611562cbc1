"""Split conformal calibration for exit probes (pure NumPy).

Class-conditional split conformal (per cue): positives (forced exit would be right) score
``1 - p``, negatives score ``p``; with n scores and risk δ the quantile is the k-th smallest
score, and +∞ when k > n (too few events: the class is never excluded). The prediction set
holds 1 iff ``1 - p <= q_pos`` and 0 iff ``p <= q_neg``; LYNX exits only when the set is
exactly {1}. Two promises, by how k is chosen:

* marginal — k = ⌈(n+1)(1−δ)⌉: for a cue where exiting is wrong, P(exit) ≤ δ *on average
  over calibration draws*; a realised rate lands above δ about half the time;
* PAC (training-conditional) — the smallest k with P(Bin(n, 1−δ) ≥ k) ≤ 1 − confidence: the
  k-th order statistic's coverage is Beta(k, n−k+1), so the realised rate exceeds δ in at most
  a fraction 1 − confidence of calibration draws (Vovk 2012). It costs a slightly higher q.

Both need *independent* scores, and the cues of one trace are not: a trace with a slip has
several wrong cues with alike scores. ``trace_level_quantiles`` therefore draws one event of
each class per trace (seeded), so the scores are i.i.d. across traces, and the promise is
about a wrong cue chosen at random within a random trace.

The offline half of the method: the runtime reads the thresholds these write on the card
(``runtime.rules`` judges a score against them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def conformal_quantile(scores: np.ndarray, delta: float) -> float:
    """The split-conformal quantile of ``scores`` at risk ``delta`` (+inf when k > n)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1.0 - delta) - 1e-9)
    if k > n:
        return math.inf
    return float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


@functools.lru_cache(maxsize=4096)
def pac_rank(n: int, delta: float, confidence: float) -> int | None:
    """The smallest k with P(Bin(n, 1−δ) ≥ k) ≤ 1 − confidence (None when no k ≤ n does). It
    depends on n alone, not on the scores, so the thousands of draws of a promise check share it."""
    tail = 1.0 - confidence

    def ok(k: int) -> bool:  # P(Bin(n, 1−δ) ≥ k) ≤ tail; the left side falls as k grows
        return 1.0 - binomial_cdf(k - 1, n, 1.0 - delta) <= tail

    if n == 0 or not ok(n):
        return None
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def pac_quantile(scores: np.ndarray, delta: float, confidence: float) -> float:
    """The training-conditional quantile: the k-th smallest score for the smallest k with
    P(Bin(n, 1−δ) ≥ k) ≤ 1 − confidence (+inf when no k ≤ n qualifies)."""
    k = pac_rank(len(scores), float(delta), float(confidence))
    if k is None:
        return math.inf
    return float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


def class_conditional_quantiles(
    probs: np.ndarray, labels: np.ndarray, delta: float, *, confidence: float | None = None
) -> tuple[float, float]:
    """(q_pos, q_neg) from calibration probabilities and 0/1 labels: PAC quantiles at
    ``confidence`` when given, else the marginal ones."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if confidence is None:
        return conformal_quantile(1.0 - probs[labels], delta), conformal_quantile(probs[~labels], delta)
    return pac_quantile(1.0 - probs[labels], delta, confidence), pac_quantile(probs[~labels], delta, confidence)


def one_per_trace(traces: list[tuple[np.ndarray, np.ndarray]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One randomly chosen (seeded) event of each class from every trace that has one: the
    (probability, label) arrays of an i.i.d. sample. A trace is (probs, labels) of its cues."""
    rng = np.random.default_rng(seed)
    probs, labels = [], []
    for p, y in traces:
        p, y = np.asarray(p, np.float64), np.asarray(y).astype(bool)
        for cls in (True, False):
            idx = np.flatnonzero(y == cls)
            if len(idx):
                probs.append(p[idx[rng.integers(len(idx))]])
                labels.append(cls)
    return np.array(probs, np.float64), np.array(labels, bool)


def trace_level_quantiles(
    traces: list[tuple[np.ndarray, np.ndarray]], delta: float, *, confidence: float | None, seed: int = 0
) -> tuple[float, float, int, int]:
    """(q_pos, q_neg, n_pos, n_neg) from one event per class per trace: PAC quantiles at
    ``confidence``, marginal ones when it is None. Valid however the cues of a trace correlate."""
    probs, labels = one_per_trace(traces, seed)
    q_pos, q_neg = class_conditional_quantiles(probs, labels, delta, confidence=confidence)
    return q_pos, q_neg, int(labels.sum()), int((~labels).sum())


# ---- per-answer risk control: Learn-then-Test with fixed-sequence testing -------------------


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≤ k), summed in log space (exact enough for n in the tens of thousands)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    logs = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def binomial_p_value(losses: int, n: int, alpha: float) -> float:
    """p-value of H0 "risk > α" for ``losses`` 0/1 losses out of n: P(Bin(n, α) ≤ losses)."""
    return binomial_cdf(losses, n, alpha)


def hoeffding_bentkus_p_value(losses: int, n: int, alpha: float) -> float:
    """Hoeffding–Bentkus p-value of H0 "risk > α" (valid for any loss in [0, 1])."""
    risk = losses / n
    if risk >= alpha:
        hoeffding = 1.0
    else:
        kl = (risk * math.log(risk / alpha) if risk > 0 else 0.0) + (1 - risk) * math.log((1 - risk) / (1 - alpha))
        hoeffding = math.exp(-n * kl)
    return min(hoeffding, math.e * binomial_cdf(math.ceil(n * risk), n, alpha))


P_VALUES = {"binomial": binomial_p_value, "hb": hoeffding_bentkus_p_value}


def loss_intervals(traces: list[tuple[np.ndarray, np.ndarray, bool]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each trace's first-exit loss is 1, as half-open threshold intervals (lo, hi]:
    the first cue with p ≥ λ is the first whose running maximum reaches λ, so λ in
    (max of the earlier cues, this cue's p] exits at this cue. Returns (trace index, lo, hi)
    of every interval whose exit is premature: the number of traces whose first exit at λ is
    premature is the number of intervals holding λ."""
    rows, los, his = [], [], []
    for row, (probs, forced_ok, full_ok) in enumerate(traces):
        if not full_ok or len(probs) == 0:
            continue
        probs = np.asarray(probs, dtype=np.float64)
        before = np.concatenate([[-np.inf], np.maximum.accumulate(probs)[:-1]])
        wrong = (probs > before) & ~np.asarray(forced_ok, dtype=bool)
        rows.extend([row] * int(wrong.sum()))
        los.extend(before[wrong])
        his.extend(probs[wrong])
    return np.array(rows, np.int64), np.array(los, np.float64), np.array(his, np.float64)


def premature_counts(intervals: tuple[np.ndarray, np.ndarray, np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """Per threshold, the number of traces whose first exit is premature (the first cue with
    p ≥ λ gives a wrong answer while the full trace's answer is right), from
    ``loss_intervals`` in O((n + m) log m)."""
    _, lo, hi = intervals
    order = np.argsort(thresholds)
    sorted_t = np.asarray(thresholds, np.float64)[order]
    diff = np.zeros(len(sorted_t) + 1, np.int64)
    np.add.at(diff, np.searchsorted(sorted_t, lo, side="right"), 1)  # first λ > lo
    np.add.at(diff, np.searchsorted(sorted_t, hi, side="right"), -1)  # first λ > hi
    counts = np.empty(len(sorted_t), np.int64)
    counts[order] = np.cumsum(diff)[:-1]
    return counts


def ltt_threshold(
    traces: list[tuple[np.ndarray, np.ndarray, bool]],
    alpha: float,
    *,
    confidence: float = 0.9,
    p_value: str = "binomial",
) -> float | None:
    """The smallest threshold λ that fixed-sequence testing certifies: going from the most
    conservative λ down, every tested λ has p-value ≤ 1 − confidence for "per-answer risk > α".
    None when even the most conservative one is not certified (too few traces: never exit)."""
    all_probs = np.concatenate([np.asarray(t[0], np.float64) for t in traces] or [np.zeros(0)])
    return ltt_thresholds(
        loss_intervals(traces), len(traces), np.unique(all_probs), (alpha,), confidence=confidence, p_value=p_value
    )[alpha]


@functools.lru_cache(maxsize=4096)
def certified_losses(n: int, alpha: float, confidence: float, p_value: str = "binomial") -> int:
    """The largest number of losses among n traces that still certifies risk ≤ α at
    ``confidence`` (−1: not even none does — too few traces for α). Depends on n alone."""
    test = P_VALUES[p_value]
    most = -1  # p-values grow with the count
    while most < n and test(most + 1, n, alpha) <= 1.0 - confidence:
        most += 1
    return most


def min_traces(alpha: float, confidence: float) -> int:
    """The fewest traces that can certify α at all (with no loss among them): (1 − α)^n ≤ 1 − c."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-alpha))


def ltt_thresholds(
    intervals: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
    candidates: np.ndarray,
    alphas: Sequence[float],
    *,
    confidence: float = 0.9,
    p_value: str = "binomial",
) -> dict[float, float | None]:
    """``ltt_threshold`` for several α at once over ``candidates`` (the calibration scores),
    from the n calibration traces' ``loss_intervals``."""
    chosen: dict[float, float | None] = {alpha: None for alpha in alphas}
    if n == 0 or len(candidates) == 0:
        return chosen
    descending = np.unique(candidates)[::-1]  # most conservative first
    losses = premature_counts(intervals, descending)
    for alpha in alphas:
        most = certified_losses(n, float(alpha), float(confidence), p_value)
        fails = np.flatnonzero(losses > most)
        last = (fails[0] if len(fails) else len(descending)) - 1
        if last >= 0:
            chosen[alpha] = float(descending[last])
    return chosen


# ---- realised rates ------------------------------------------------------------------------


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a frequency hits / n."""
    if n == 0:
        return 0.0, 1.0
    f = hits / n
    centre = (f + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_interval(hits: int, n: int) -> dict[str, Any]:
    """A realised rate as the card and bench report it: hits, n, rate and its 95 % interval."""
    low, high = wilson_interval(hits, n)
    return {
        "hits": hits,
        "n": n,
        "rate": round(hits / n, 4) if n else None,
        "interval_95": [round(low, 4), round(high, 4)],
    }
