"""Train: a scaler + classifier on the train split, class-balanced; ONNX out.

Two kinds of probe, both a scaler and Gemm layers in ONNX:

* ``mlp`` — the method's probe (spec §4): StandardScaler → ReLU MLP D→256→64→1, Adam lr 1e-3,
  L2 1e-4, batch 200, early stopping on a 20 % split, sample weights n / (2·n_c);
* ``linear`` — L2-regularised logistic regression on the same features and weights. A small
  model with a few thousand cue events and a rare negative class (its wrong exits) can fit
  the MLP's 600k weights to noise; a linear probe is what holds there.

One probe per promise kind, each trained on its own label: ``harm`` on whether the exit's
answer is right (events of problems with a gold answer), ``agreement`` on whether it is the
answer full thinking gives (every event: a probe trained on correctness scores the traces
full thinking gets wrong low although exiting there changes nothing; the agreement label
teaches where the answer has settled). ``PROBE_FILES`` names their ONNX files.

``auto`` (the default) picks between them — and the regularisation of the linear one — by
AUC in 5-fold cross-validation on the train split, folds grouped by trace so the cues of one
trace never sit on both sides; the calibration and test splits are never looked at. The ONNX
file (scaler folded in) is checked against the in-memory model before it is written.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.errors import LynxError
from lynx_edge.lab.collection import UNKNOWN, Collection, SplitEvents
from lynx_edge.lab.export import write_mlp_onnx
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.options import PROMISES, Promise

ONNX_TOLERANCE = 1e-5
TRAINING = "training.json"
MIN_CLASS_FOR_EARLY_STOP = 10
KINDS = ("auto", "mlp", "linear")
LINEAR_C = (0.003, 0.01, 0.03)  # inverse L2 strengths tried for the linear probe
FOLDS = 5
PROBE_FILES: dict[str, str] = {"agreement": "agreement.onnx", "harm": "probe.onnx"}


def for_promise(events: SplitEvents, promise: Promise) -> SplitEvents:
    """The events labelled for ``promise``: agreement's label on every event; harm's
    (the exit's answer is right) on the events of problems with a gold answer."""
    if promise == "agreement":
        return SplitEvents(
            events.features, events.agrees, events.agrees, events.trace_ids, events.positions, events.cuts
        )
    keep = events.labels != UNKNOWN
    return SplitEvents(
        events.features[keep],
        events.labels[keep],
        events.agrees[keep],
        events.trace_ids[keep],
        events.positions[keep],
        events.cuts[keep],
    )


class TrainingError(LynxError):
    """The collected events cannot train a probe."""


@dataclass
class TrainedProbe:
    """A fitted scaler and classifier (sklearn), and what they are."""

    scaler: Any
    model: Any
    kind: str  # "mlp" or "linear"
    c: float | None = None  # the linear probe's inverse L2 strength

    def predict(self, features: np.ndarray) -> np.ndarray:
        if not len(features):
            return np.zeros(0)
        return self.model.predict_proba(self.scaler.transform(features.astype(np.float64)))[:, 1]

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W [in, out], b [out]) per layer, as the ONNX writer takes them."""
        if self.kind in ("linear", "constant"):
            return [(self.model.coef_.T, self.model.intercept_)]
        return list(zip(self.model.coefs_, self.model.intercepts_))

    @property
    def epochs(self) -> int | None:
        return int(self.model.n_iter_) if self.kind == "mlp" else None

    @property
    def label(self) -> str:
        return probe_label(self.kind, self.c)


def probe_label(kind: str, c: float | None) -> str:
    """How a probe setting is named in reports: "mlp 256/64", "linear C=0.01" or "constant"."""
    if kind == "constant":
        return "constant (the train split holds one label)"
    return f"linear C={c:g}" if kind == "linear" else "mlp 256/64"


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """w_c = n / (2·n_c): both classes weigh the same in the loss."""
    n = len(labels)
    pos = int(labels.sum())
    if pos == 0 or pos == n:
        raise TrainingError(
            f"the train split holds one label only ({pos} of {n} events are positive): "
            "collect more problems or use a corpus the model solves sometimes"
        )
    return np.where(labels == 1, n / (2 * pos), n / (2 * (n - pos)))


def fit(
    features: np.ndarray, labels: np.ndarray, kind: str, *, c: float | None = None, seed: int = 0, max_iter: int = 200
) -> TrainedProbe:
    """Fit one probe of ``kind`` ("mlp" or "linear" with inverse L2 strength ``c``)."""
    from sklearn.preprocessing import StandardScaler

    x = features.astype(np.float64)
    y = labels.astype(int)
    weights = balanced_weights(y)
    scaler = StandardScaler().fit(x)
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=5000)
        model.fit(scaler.transform(x), y, sample_weight=weights)
        return TrainedProbe(scaler, model, "linear", c)
    from sklearn.neural_network import MLPClassifier

    # a stratified 20 % validation split needs a few events of each class
    early = min(int(y.sum()), int(len(y) - y.sum())) >= MIN_CLASS_FOR_EARLY_STOP
    fitted = int(len(y) * 0.8) if early else len(y)
    mlp = MLPClassifier(
        hidden_layer_sizes=(256, 64),
        activation="relu",
        solver="adam",
        alpha=1e-4,
        batch_size=max(1, min(200, fitted)),
        learning_rate_init=1e-3,
        max_iter=max_iter,
        early_stopping=early,
        validation_fraction=0.2,
        n_iter_no_change=10,
        random_state=seed,
    )
    mlp.fit(scaler.transform(x), y, sample_weight=weights)
    return TrainedProbe(scaler, mlp, "mlp")


def candidates(kind: str) -> list[tuple[str, float | None]]:
    """The (kind, c) settings ``kind`` stands for."""
    linear = [("linear", c) for c in LINEAR_C]
    return {"mlp": [("mlp", None)], "linear": linear, "auto": [("mlp", None), *linear]}[kind]


def cross_validate(events: SplitEvents, kind: str, *, seed: int = 0, max_iter: int = 200) -> dict[str, float | None]:
    """Mean AUC over trace-grouped folds of the train split, per candidate label."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(FOLDS).split(events.features, events.labels, events.trace_ids))
    results: dict[str, float | None] = {}
    for name, c in candidates(kind):
        aucs = []
        for fit_rows, held_rows in folds:
            held = events.labels[held_rows]
            if not 0 < held.sum() < len(held) or not 0 < events.labels[fit_rows].sum() < len(fit_rows):
                continue
            probe = fit(events.features[fit_rows], events.labels[fit_rows], name, c=c, seed=seed, max_iter=max_iter)
            aucs.append(roc_auc_score(held, probe.predict(events.features[held_rows])))
        results[probe_label(name, c)] = round(float(np.mean(aucs)), 4) if aucs else None
    return results


class ConstantModel:
    """A score that says the same for every cue: the probe of a label the train split holds
    one value of (every exit agreed, say). Its threshold is still calibrated on held-out
    traces, so the promise holds; it just cannot tell cues apart."""

    def __init__(self, dim: int, positive_rate: float) -> None:
        self.coef_ = np.zeros((1, dim))
        self.intercept_ = np.array([math.log(positive_rate / (1 - positive_rate))])
        self.rate = positive_rate

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([1 - self.rate, self.rate], (len(x), 1))


def constant_probe(events: SplitEvents) -> TrainedProbe:
    """The constant probe of a one-label train split (Laplace-smoothed positive rate)."""
    from sklearn.preprocessing import StandardScaler

    n, pos = len(events.labels), int(events.labels.sum())
    scaler = StandardScaler().fit(events.features.astype(np.float64))
    return TrainedProbe(scaler, ConstantModel(events.features.shape[1], (pos + 1) / (n + 2)), "constant")


def train_probe(
    events: SplitEvents, kind: str = "auto", *, seed: int = 0, max_iter: int = 200
) -> tuple[TrainedProbe, dict[str, float | None]]:
    """The probe of ``kind`` (for ``auto`` or ``linear``: the best setting in cross-validation),
    refitted on the whole train split, and the cross-validated AUC of every candidate; a
    constant one when the split holds one label."""
    if 0 < len(events) and int(events.labels.sum()) in (0, len(events)):
        return constant_probe(events), {}
    options = candidates(kind)
    cv: dict[str, float | None] = {}
    if len(options) > 1 and len(set(events.trace_ids)) >= FOLDS:
        cv = cross_validate(events, kind, seed=seed, max_iter=max_iter)
        ranked = [o for o in options if cv[probe_label(*o)] is not None]
        if ranked:
            options = [max(ranked, key=lambda o: cv[probe_label(*o)])]
    name, c = options[0]
    return fit(events.features, events.labels, name, c=c, seed=seed, max_iter=max_iter), cv


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | int | None]:
    """AUC (None when one class is absent) and accuracy at 0.5."""
    from sklearn.metrics import roc_auc_score

    both = 0 < labels.sum() < len(labels)
    return {
        "n": int(len(labels)),
        "positives": int(labels.sum()),
        "auc": round(float(roc_auc_score(labels, probs)), 4) if both else None,
        "accuracy": round(float(((probs >= 0.5) == (labels == 1)).mean()), 4) if len(labels) else None,
    }


def export(probe: TrainedProbe, path: Path, check: np.ndarray) -> float:
    """Write the ONNX file after checking it against the in-memory model on ``check``;
    returns the largest |Δp|."""
    layers = probe.layers
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_mlp_onnx(tmp, layers, mean=probe.scaler.mean_, scale=probe.scaler.scale_)
        onnx_p = OnnxProbe(tmp, check.shape[1]).score_batch(check)
        gap = float(np.max(np.abs(onnx_p - probe.predict(check)))) if len(check) else 0.0
        if gap >= ONNX_TOLERANCE:
            raise TrainingError(f"the ONNX export differs from the trained model by {gap:.2e} (limit {ONNX_TOLERANCE})")
        os.replace(tmp, path)
        path.chmod(0o644)  # mkstemp makes it private; a shipped probe must be readable by all
        return gap
    finally:
        tmp.unlink(missing_ok=True)


def run_train(collection: Path, out: Path, *, kind: str = "auto", seed: int = 0, max_iter: int = 200) -> dict[str, Any]:
    """Train one probe per promise kind on ``collection``'s train split; write each ONNX file
    (``PROBE_FILES``) and ``out/training.json``. Harm is left out for a corpus without gold."""
    store = Collection(collection)
    manifest = store.manifest()
    train = store.load_split("train")
    if len(train) == 0:
        raise TrainingError(f"{collection} has no train events: collect more problems")
    held = {s: store.load_split(s) for s in ("cal", "test")}
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "collection": collection.name,
        "model": manifest["model"]["name"],
        "fingerprint": manifest["model"],
        "feature_dim": int(train.features.shape[1]),
        "probes": {},
    }
    for promise in PROMISES:
        mine = for_promise(train, promise)
        if promise == "harm" and len(mine) == 0:
            continue  # questions without gold answers: agreement only
        probe, cv = train_probe(mine, kind, seed=seed, max_iter=max_iter)
        theirs = {s: for_promise(e, promise) for s, e in held.items()}
        check = np.concatenate([theirs["test"].features, theirs["cal"].features, mine.features[:500]])
        gap = export(probe, out / PROBE_FILES[promise], check.astype(np.float32))
        report["probes"][promise] = {
            "file": PROBE_FILES[promise],
            "label": "the exit's answer is the full-thinking answer"
            if promise == "agreement"
            else "the exit's answer is right",
            "probe": probe.label,
            "cross_validation_auc": cv,
            "epochs": probe.epochs,
            "onnx_max_abs_diff": gap,
            "train": scores(probe.predict(mine.features), mine.labels),
            **{s: scores(probe.predict(e.features), e.labels) for s, e in theirs.items()},
        }
    (out / TRAINING).write_text(json.dumps(report, indent=2) + "\n")
    return report
