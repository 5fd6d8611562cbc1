"""Split conformal calibration for exit probes (pure NumPy).

Class-conditional split conformal (per cue): positives (forced exit would be right) score
``1 - p``, negatives score ``p``; with n scores and risk δ the quantile is the k-th smallest
score, k = ⌈(n+1)(1−δ)⌉, and +∞ when k > n (too few events: the class is never excluded).
The prediction set holds 1 iff ``1 - p <= q_pos`` and 0 iff ``p <= q_neg``; LYNX exits only
when the set is exactly {1}. For a cue where exiting is wrong, P(exit) ≤ δ.
"""

from __future__ import annotations

import math

import numpy as np


def conformal_quantile(scores: np.ndarray, delta: float) -> float:
    """The split-conformal quantile of ``scores`` at risk ``delta`` (+inf when k > n)."""
    n = len(scores)
    k = math.ceil((n + 1) * (1.0 - delta) - 1e-9)
    if k > n:
        return math.inf
    return float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


def class_conditional_quantiles(
    probs: np.ndarray, labels: np.ndarray, delta: float
) -> tuple[float, float]:
    """(q_pos, q_neg) from calibration probabilities and 0/1 labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    return (
        conformal_quantile(1.0 - probs[labels], delta),
        conformal_quantile(probs[~labels], delta),
    )


def per_cue_exits(p: float | np.ndarray, q_pos: float, q_neg: float) -> bool | np.ndarray:
    """Exit iff the prediction set is {1}: p ≥ 1 − q_pos and p > q_neg."""
    return (1.0 - np.asarray(p) <= q_pos) & (np.asarray(p) > q_neg)


def per_cue_threshold(q_pos: float, q_neg: float) -> float:
    """The score a cue must clear to exit, for display (above 1 means never)."""
    return max(1.0 - q_pos, q_neg)
