"""Calibrate: thresholds per δ (per cue) and per α (per answer), measured on the test split.

* per cue — class-conditional split conformal on the calibration split's events, for each δ;
  too few events of a class → q = +∞, and the card says the probe never exits at that δ;
* per answer — Learn-then-Test on the calibration split's traces, for each α at confidence
  0.9 (loss: the first passing cue's forced answer is wrong while the full answer was right).

The card's metrics are measured on the test split by walking each test trace's cues in order
(decoding is causal: the first passing cue is where the runtime would have exited). With
``--resplits N`` the calibration is repeated over N random calibration/test re-splits of the
pooled held-out traces, and the card reports how often the promised rate was exceeded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.conformal import class_conditional_quantiles, ltt_threshold
from lynx_edge.errors import ProbeError
from lynx_edge.onnx_probe import OnnxProbe
from lynx_edge.policy import ExitRule, card_rules
from lynx_edge.probe_card import CARD_NAME, ProbeCard
from tools.collection import Collection
from tools.train import TRAINING, scores

DELTAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20, 0.30)
ALPHAS = (0.05, 0.10, 0.20)
CONFIDENCE = 0.9


@dataclass
class Trace:
    """One held-out trace with its cue events' probe scores and forced-exit outcomes."""

    id: str
    correct: bool
    natural_tokens: int  # thinking + answer of the full trace
    probs: np.ndarray  # per cue, in order
    forced_ok: np.ndarray
    used_tokens: np.ndarray  # per cue: tokens kept before it + exit text + forced answer

    def as_ltt(self) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.probs, self.forced_ok, self.correct


def held_out_traces(store: Collection, split: str, probe: OnnxProbe) -> list[Trace]:
    """The split's traces (cue-less ones included) with probe scores on their events."""
    events = store.load_split(split)
    probs = probe.score_batch(events.features) if len(events) else np.zeros(0)
    score = {(t, int(p)): float(s) for t, p, s in zip(events.trace_ids, events.positions, probs)}
    out = []
    for t in store.traces_by_split()[split]:
        cues = t["cues"]
        out.append(
            Trace(
                id=t["id"],
                correct=bool(t["correct"]),
                natural_tokens=int(t["thinking_tokens"] + t["answer_tokens"]),
                probs=np.array([score[(t["id"], c["token_index"])] for c in cues], dtype=np.float64),
                forced_ok=np.array([bool(c["correct"]) for c in cues], dtype=bool),
                used_tokens=np.array([c["cut"] + c["exit_tokens"] + c["answer_tokens"] for c in cues], dtype=np.int64),
            )
        )
    return out


def _events(traces: Sequence[Trace]) -> tuple[np.ndarray, np.ndarray]:
    if not traces:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate([t.probs for t in traces]), np.concatenate([t.forced_ok for t in traces])


def _finite(q: float) -> float | None:
    """A quantile for the card: null for +∞, else exact (rounding could loosen the rule)."""
    return None if not np.isfinite(q) else float(q)


def calibrate(traces: Sequence[Trace], *, deltas=DELTAS, alphas=ALPHAS, confidence=CONFIDENCE, p_value="binomial"):
    """The card's ``calibration`` section from calibration traces."""
    probs, labels = _events(traces)
    per_cue = []
    for delta in deltas:
        q_pos, q_neg = class_conditional_quantiles(probs, labels, delta)
        per_cue.append(
            {"delta": delta, "q_pos": _finite(q_pos), "q_neg": _finite(q_neg),
             "n_pos": int(labels.sum()), "n_neg": int((~labels).sum())}
        )
    per_answer = []
    ltt = [t.as_ltt() for t in traces]
    for alpha in alphas:
        lam = ltt_threshold(ltt, alpha, confidence=confidence, p_value=p_value)
        per_answer.append(
            {"alpha": alpha, "threshold": lam,
             "confidence": confidence, "n_traces": len(traces)}
        )
    return {"per_cue": per_cue, "per_answer": per_answer}


def _passes(rule: ExitRule, probs: np.ndarray) -> np.ndarray:
    return np.array([rule.exits(float(p)) for p in probs], dtype=bool)


def measure(rule: ExitRule, traces: Sequence[Trace]) -> dict[str, Any]:
    """What ``rule`` does on ``traces``: per-cue and per-answer premature-exit rates, exit
    rate, tokens saved, accuracy with exits (first passing cue wins)."""
    passing = [_passes(rule, t.probs) for t in traces]
    negatives = ~_events(traces)[1]
    all_passing = np.concatenate(passing) if passing else np.zeros(0, dtype=bool)
    exits = premature = right = used = natural = 0
    for t, passes in zip(traces, passing):
        hit = np.flatnonzero(passes)
        natural += t.natural_tokens
        if len(hit):
            j = int(hit[0])
            exits += 1
            premature += int(t.correct and not t.forced_ok[j])
            right += int(t.forced_ok[j])
            used += int(t.used_tokens[j])
        else:
            right += int(t.correct)
            used += t.natural_tokens
    n = max(len(traces), 1)
    return {
        "mode": rule.mode,
        "level": rule.level,
        "per_cue_premature_exit_rate": round(float(all_passing[negatives].mean()), 4) if negatives.any() else None,
        "per_answer_premature_exit_rate": round(premature / n, 4),
        "exit_rate": round(exits / n, 4),
        "accuracy_with_exits": round(right / n, 4),
        "tokens_saved": round(1 - used / natural, 4) if natural else 0.0,
        "mean_tokens": round(used / n, 1),
    }


def resplit_violations(
    traces: Sequence[Trace], *, n_resplits: int, seed: int = 0, p_value: str = "binomial"
) -> dict[str, Any]:
    """How often the promised rate is exceeded over random calibration/test re-splits."""
    rng = np.random.default_rng(seed)
    traces = list(traces)
    over: dict[str, list[float]] = {}
    for _ in range(n_resplits):
        order = rng.permutation(len(traces))
        half = len(traces) // 2
        cal = [traces[i] for i in order[:half]]
        test = [traces[i] for i in order[half:]]
        for rule in card_rules(calibrate(cal, p_value=p_value)):
            m = measure(rule, test)
            rate = m["per_cue_premature_exit_rate"] if rule.mode == "per-cue" else m["per_answer_premature_exit_rate"]
            over.setdefault(f"{rule.mode} {rule.level}", []).append(rate if rate is not None else 0.0)
    report = {}
    for key, rates in over.items():
        level = float(key.split()[1])
        arr = np.array(rates)
        report[key] = {"violation_frequency": round(float((arr > level).mean()), 4), "mean_rate": round(float(arr.mean()), 4)}
    return {"resplits": n_resplits, "traces": len(traces), "rates": report}


def _check_probe(probe_dir: Path, manifest: dict[str, Any]) -> None:
    training = probe_dir / TRAINING
    if not (probe_dir / "probe.onnx").is_file():
        raise ProbeError(f"no probe.onnx in {probe_dir}: run `python -m tools train` first")
    if training.is_file():
        made_for = json.loads(training.read_text()).get("fingerprint")
        if made_for and made_for != manifest["model"]:
            raise ProbeError(
                f"the probe in {probe_dir} was trained for {made_for.get('name')}, not for this collection's "
                f"{manifest['model']['name']}: train it on this collection first"
            )


def run_calibrate(
    collection: Path, probe_dir: Path, *, resplits: int = 0, seed: int = 0, p_value: str = "binomial"
) -> ProbeCard:
    """Write ``probe_dir/card.json`` from the collection's calibration and test splits."""
    store = Collection(collection)
    manifest = store.manifest()
    _check_probe(probe_dir, manifest)
    probe = OnnxProbe(probe_dir / "probe.onnx", store.feature_dim)
    cal = held_out_traces(store, "cal", probe)
    test = held_out_traces(store, "test", probe)
    calibration = calibrate(cal, p_value=p_value)
    test_probs, test_labels = _events(test)
    by_split = store.traces_by_split()
    metrics: dict[str, Any] = {
        "traces": {s: len(v) for s, v in by_split.items()},
        "events": {s: len(store.load_split(s)) for s in by_split},
        "traces_without_cues": sum(1 for v in by_split.values() for t in v if not t["cues"]),
        "test": {
            "accuracy_without_exits": round(float(np.mean([t.correct for t in test])), 4) if test else None,
            **scores(test_probs, test_labels),
            "rules": [measure(rule, test) for rule in card_rules(calibration)],
        },
        "settings": manifest["settings"],
        "data": manifest["data"],
    }
    if training := _read_training(probe_dir):
        metrics["training"] = training
    if resplits:
        metrics["resplit_evaluation"] = resplit_violations(cal + test, n_resplits=resplits, seed=seed, p_value=p_value)
    card = ProbeCard(
        model=manifest["model"],
        layers=list(manifest["layers"]),
        final_norm=bool(manifest["final_norm"]),
        cues=list(manifest["cues"]),
        exit_text=manifest["exit_text"],
        think_open=manifest["think_open"],
        think_close=manifest["think_close"],
        calibration=calibration,
        scaffold=list(manifest["scaffold"]),
        metrics=metrics,
    )
    card.save(probe_dir / CARD_NAME)
    return card


def _read_training(probe_dir: Path) -> dict[str, Any] | None:
    path = probe_dir / TRAINING
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("epochs", "onnx_max_abs_diff", "train", "cal", "test") if k in data}

