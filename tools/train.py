"""Train: scaler + MLP (256, 64) on the train split, class-balanced, early stopping; ONNX out.

The method's probe (spec §4): StandardScaler → ReLU MLP D→256→64→1, Adam lr 1e-3, L2 1e-4,
batch 200, early stopping on a 20 % split, sample weights n / (2·n_c). The ONNX file (scaler
folded in) is checked against the in-memory model before it is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.errors import LynxError
from lynx_edge.onnx_probe import OnnxProbe
from lynx_edge.probe_export import write_mlp_onnx
from tools.collection import Collection, SplitEvents

ONNX_TOLERANCE = 1e-5
TRAINING = "training.json"
MIN_CLASS_FOR_EARLY_STOP = 10


class TrainingError(LynxError):
    """The collected events cannot train a probe."""


@dataclass
class TrainedProbe:
    scaler: Any
    mlp: Any

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.mlp.predict_proba(self.scaler.transform(features.astype(np.float64)))[:, 1]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """w_c = n / (2·n_c): both classes weigh the same in the loss."""
    n = len(labels)
    pos = int(labels.sum())
    if pos == 0 or pos == n:
        raise TrainingError(
            f"the train split has {'no' if pos == 0 else 'only'} right forced exits ({pos} of {n} events): "
            "collect more problems or use a corpus the model solves sometimes"
        )
    return np.where(labels == 1, n / (2 * pos), n / (2 * (n - pos)))


def fit(events: SplitEvents, *, seed: int = 0, max_iter: int = 200) -> TrainedProbe:
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x = events.features.astype(np.float64)
    y = events.labels.astype(int)
    weights = balanced_weights(y)
    # a stratified 20 % validation split needs a few events of each class
    early = min(int(y.sum()), int(len(y) - y.sum())) >= MIN_CLASS_FOR_EARLY_STOP
    fitted = int(len(y) * 0.8) if early else len(y)
    scaler = StandardScaler().fit(x)
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
    return TrainedProbe(scaler, mlp)


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
    layers = list(zip(probe.mlp.coefs_, probe.mlp.intercepts_))
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


def run_train(collection: Path, out: Path, *, seed: int = 0, max_iter: int = 200) -> dict[str, Any]:
    """Train on ``collection``'s train split and write ``out/probe.onnx`` + ``out/training.json``."""
    store = Collection(collection)
    manifest = store.manifest()
    train = store.load_split("train")
    if len(train) == 0:
        raise TrainingError(f"{collection} has no train events: collect more problems")
    probe = fit(train, seed=seed, max_iter=max_iter)
    out.mkdir(parents=True, exist_ok=True)
    held = {s: store.load_split(s) for s in ("cal", "test")}
    check = np.concatenate([held["test"].features, held["cal"].features, train.features[:500]])
    gap = export(probe, out / "probe.onnx", check.astype(np.float32))
    report = {
        "collection": str(collection),
        "model": manifest["model"]["name"],
        "fingerprint": manifest["model"],
        "feature_dim": int(train.features.shape[1]),
        "epochs": int(probe.mlp.n_iter_),
        "onnx_max_abs_diff": gap,
        "train": scores(probe.predict(train.features), train.labels),
        **{s: scores(probe.predict(e.features), e.labels) for s, e in held.items()},
    }
    (out / TRAINING).write_text(json.dumps(report, indent=2) + "\n")
    return report
