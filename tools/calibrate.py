"""Calibrate: thresholds per δ (per cue) and per α (per answer), measured on the test split.

* per cue — class-conditional split conformal on the calibration split's events, for each δ:
  PAC (training-conditional, confidence 0.9: the realised rate exceeds δ in at most 10 % of
  calibration draws) by default, or marginal (``--per-cue marginal``: δ on average over
  draws); too few events of a class → q = +∞, and the card says the probe never exits there;
* per answer — Learn-then-Test on the calibration split's traces, for each α at confidence
  0.9 (loss: the first passing cue's forced answer is wrong while the full answer was right).

The score is the probe's output on each cue's features, or (``--score trial``) the confidence
of the forced answer at the cue — DEER's training-free score, which then carries a risk level
without any probe. The card's metrics are measured on the test split by walking each test
trace's cues in order (decoding is causal: the first passing cue is where the runtime would
have exited). With ``--resplits N`` the calibration is repeated over N random
calibration draws from the pooled held-out traces, and the card reports how often the
promised rate was exceeded: on the other half of each split, and on the whole pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.errors import ProbeError
from lynx_edge.runtime.conformal import class_conditional_quantiles, ltt_threshold
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.policy import ExitRule, card_rules
from lynx_edge.runtime.probe_card import CARD_NAME, ProbeCard
from tools.collection import Collection
from tools.train import TRAINING, scores

DELTAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20, 0.30)
ALPHAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20)
CONFIDENCE = 0.9
PER_CUE = ("pac", "marginal")


@dataclass
class Trace:
    """One held-out trace with its cue events' scores and forced-exit outcomes."""

    id: str
    correct: bool
    natural_tokens: int  # thinking + answer of the full trace
    probs: np.ndarray  # per cue, in order
    forced_ok: np.ndarray
    used_tokens: np.ndarray  # per cue: tokens kept before it + exit text + forced answer

    def as_ltt(self) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.probs, self.forced_ok, self.correct


def held_out_traces(store: Collection, split: str, probe: OnnxProbe | None) -> list[Trace]:
    """The split's traces (cue-less ones included) with scores on their events: the probe's,
    or the forced answers' confidence when ``probe`` is None."""
    score: dict[tuple[str, int], float] = {}
    if probe is not None:
        events = store.load_split(split)
        probs = probe.score_batch(events.features) if len(events) else np.zeros(0)
        score = {(t, int(p)): float(s) for t, p, s in zip(events.trace_ids, events.positions, probs)}
    out = []
    for t in store.traces_by_split()[split]:
        cues = t["cues"]
        if probe is None and any("mean_prob" not in c for c in cues):
            raise ProbeError(
                f"{store.root} lacks trial confidences (collected before they were kept): collect it again"
            )
        out.append(
            Trace(
                id=t["id"],
                correct=bool(t["correct"]),
                natural_tokens=int(t["thinking_tokens"] + t["answer_tokens"]),
                probs=np.array(
                    [score[(t["id"], c["token_index"])] if probe else c["mean_prob"] for c in cues], dtype=np.float64
                ),
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


def calibrate(
    traces: Sequence[Trace],
    *,
    deltas=DELTAS,
    alphas=ALPHAS,
    confidence=CONFIDENCE,  # noqa: ANN001
    p_value="binomial",
    per_cue="pac",
) -> dict[str, list[dict[str, Any]]]:
    """The card's ``calibration`` section from calibration traces."""
    probs, labels = _events(traces)
    pac = per_cue == "pac"
    per_cue_entries = []
    for delta in deltas:
        q_pos, q_neg = class_conditional_quantiles(probs, labels, delta, confidence=confidence if pac else None)
        entry = {
            "delta": delta,
            "q_pos": _finite(q_pos),
            "q_neg": _finite(q_neg),
            "n_pos": int(labels.sum()),
            "n_neg": int((~labels).sum()),
            "promise": per_cue,
        }
        if pac:
            entry["confidence"] = confidence
        per_cue_entries.append(entry)
    per_answer = []
    ltt = [t.as_ltt() for t in traces]
    for alpha in alphas:
        lam = ltt_threshold(ltt, alpha, confidence=confidence, p_value=p_value)
        per_answer.append(
            {"alpha": alpha, "threshold": lam, "confidence": confidence, "n_traces": len(traces), "promise": "ltt"}
        )
    return {"per_cue": per_cue_entries, "per_answer": per_answer}


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
    traces: Sequence[Trace], *, n_resplits: int, seed: int = 0, p_value: str = "binomial", per_cue: str = "pac"
) -> dict[str, Any]:
    """How often the promised rate is exceeded, two ways, over ``n_resplits`` calibration draws.

    * ``rates`` — random halves of the pooled held-out traces: calibrate on one, measure the
      realised rate on the other. The test half's own sampling noise counts as a violation
      too, so a tight calibration at confidence c exceeds its level more often than 1 − c.
    * ``population_rates`` — the pool as the population: calibration sets of the same size
      drawn from it with replacement (i.i.d. draws), each rule's rate measured on the whole
      pool, i.e. exactly. This is the promise itself: P(rate > level) ≤ 1 − confidence over
      calibration draws.
    """
    rng = np.random.default_rng(seed)
    traces = list(traces)
    half = len(traces) // 2
    split: dict[str, list[float]] = {}
    population: dict[str, list[float]] = {}
    for _ in range(n_resplits):
        order = rng.permutation(len(traces))
        _record(split, [traces[i] for i in order[half:]], [traces[i] for i in order[:half]], p_value, per_cue)
        draw = [traces[i] for i in rng.integers(0, len(traces), half)]
        _record(population, traces, draw, p_value, per_cue)
    return {
        "resplits": n_resplits,
        "traces": len(traces),
        "per_cue": per_cue,
        "rates": _violations(split),
        "population_rates": _violations(population),
    }


def _record(
    rates: dict[str, list[float]], test: Sequence[Trace], cal: Sequence[Trace], p_value: str, per_cue: str
) -> None:
    """Calibrate on ``cal`` and append each rule's promised rate as measured on ``test``."""
    for rule in card_rules(calibrate(cal, p_value=p_value, per_cue=per_cue)):
        m = measure(rule, test)
        rate = m["per_cue_premature_exit_rate"] if rule.mode == "per-cue" else m["per_answer_premature_exit_rate"]
        rates.setdefault(f"{rule.mode} {rule.level}", []).append(rate if rate is not None else 0.0)


def _violations(rates: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    report = {}
    for key, values in rates.items():
        level = float(key.split()[1])
        arr = np.array(values)
        report[key] = {
            "violation_frequency": round(float((arr > level).mean()), 4),
            "mean_rate": round(float(arr.mean()), 4),
        }
    return report


def _check_probe(probe_dir: Path, manifest: dict[str, Any]) -> None:
    training = probe_dir / TRAINING
    if not (probe_dir / "probe.onnx").is_file():
        raise ProbeError(
            f"no probe.onnx in {probe_dir}: run `python -m tools train` first (or calibrate --score trial)"
        )
    if training.is_file():
        made_for = json.loads(training.read_text()).get("fingerprint")
        if made_for and made_for != manifest["model"]:
            raise ProbeError(
                f"the probe in {probe_dir} was trained for {made_for.get('name')}, not for this collection's "
                f"{manifest['model']['name']}: train it on this collection first"
            )


def run_calibrate(
    collection: Path,
    probe_dir: Path,
    *,
    score: str = "probe",
    resplits: int = 0,
    seed: int = 0,
    p_value: str = "binomial",
    per_cue: str = "pac",
    default_alpha: float | None = None,
) -> ProbeCard:
    """Write ``probe_dir/card.json`` from the collection's calibration and test splits."""
    store = Collection(collection)
    manifest = store.manifest()
    probe = None
    if score == "probe":
        _check_probe(probe_dir, manifest)
        probe = OnnxProbe(probe_dir / "probe.onnx", store.feature_dim)
    cal = held_out_traces(store, "cal", probe)
    test = held_out_traces(store, "test", probe)
    calibration = calibrate(cal, p_value=p_value, per_cue=per_cue)
    test_probs, test_labels = _events(test)
    by_split = store.traces_by_split()
    metrics: dict[str, Any] = {
        "score": score,
        "traces": {s: len(v) for s, v in by_split.items()},
        "events": {s: sum(len(t["cues"]) for t in v) for s, v in by_split.items()},
        "traces_without_cues": sum(1 for v in by_split.values() for t in v if not t["cues"]),
        "test": {
            "accuracy_without_exits": round(float(np.mean([t.correct for t in test])), 4) if test else None,
            **scores(test_probs, test_labels),
            "rules": [measure(rule, test) for rule in card_rules(calibration)],
        },
        "settings": manifest["settings"],
        "data": list(manifest["data"]),
    }
    if probe is not None and (training := _read_training(probe_dir)):
        metrics["training"] = training
    if resplits:
        metrics["resplit_evaluation"] = resplit_violations(
            cal + test, n_resplits=resplits, seed=seed, p_value=p_value, per_cue=per_cue
        )
    card = ProbeCard(
        model=manifest["model"],
        layers=list(manifest["layers"]) if probe else [],
        final_norm=bool(manifest["final_norm"]) if probe else False,
        cues=list(manifest["cues"]),
        exit_text=manifest["exit_text"],
        think_open=manifest["think_open"],
        think_close=manifest["think_close"],
        onnx="probe.onnx" if probe else None,
        score=score,
        default_alpha=default_alpha,
        calibration=calibration,
        scaffold=list(manifest["scaffold"]),
        metrics=metrics,
    )
    probe_dir.mkdir(parents=True, exist_ok=True)
    card.save(probe_dir / CARD_NAME)
    return card


def _read_training(probe_dir: Path) -> dict[str, Any] | None:
    path = probe_dir / TRAINING
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("epochs", "onnx_max_abs_diff", "train", "cal", "test") if k in data}


def report_card(card: ProbeCard) -> str:
    """The card's calibration and test metrics as a few readable lines (what calibrate prints)."""
    m = card.metrics
    lines = [
        f"score {m['score']}: traces {m['traces']}, cue events {m['events']}, "
        f"traces without cues {m['traces_without_cues']}"
    ]
    t = m["test"]
    lines.append(f"test: AUC {t['auc']}, accuracy without exits {t['accuracy_without_exits']}")
    for r in t["rules"]:
        lines.append(
            f"  {r['mode']:10s} {r['level']:<5} premature/cue {r['per_cue_premature_exit_rate']}  "
            f"premature/answer {r['per_answer_premature_exit_rate']}  exits {r['exit_rate']}  "
            f"saved {r['tokens_saved']:.1%}  accuracy {r['accuracy_with_exits']}"
        )
    for e in card.calibration["per_cue"]:
        if e["q_neg"] is None:
            lines.append(f"  δ={e['delta']}: never exits at this δ (too few wrong-exit calibration events)")
    for e in card.calibration["per_answer"]:
        if e["threshold"] is None:
            lines.append(f"  α={e['alpha']}: never exits at this α (too few calibration traces to certify it)")
    if ev := m.get("resplit_evaluation"):
        lines.append(
            f"{ev['resplits']} calibration draws (per cue {ev['per_cue']}): how often the promised rate was exceeded, "
            "on the other half of a random split | on the whole pool (calibration drawn from it)"
        )
        for key, r in ev["rates"].items():
            whole = ev.get("population_rates", {}).get(key)
            exact = f"{whole['violation_frequency']:.1%} (rate {whole['mean_rate']})" if whole else "—"
            lines.append(f"  {key:18s} {r['violation_frequency']:.1%} (mean rate {r['mean_rate']}) | {exact}")
    return "\n".join(lines)
