"""Calibrate: thresholds per δ (per cue) and per α (per answer), measured on the test split.

* per cue — class-conditional split conformal on one event of each class per calibration
  trace (seeded), so the scores are independent even though the cues of a trace are not:
  PAC (confidence 0.9: the realised rate exceeds δ in at most 10 % of calibration draws) by
  default, or marginal (``--per-cue marginal``: δ on average over draws). The promise: at a
  cue where exiting would be wrong, chosen at random in a random trace, P(exit) ≤ δ;
* per answer — Learn-then-Test on the calibration split's traces, for each α at confidence
  0.9 (loss: the first passing cue's exit answer is wrong while the full answer was right).

The score is the probe's output on each cue's features, or (``--score trial``) the confidence
of the exit answer at the cue — DEER's training-free score, which then carries a risk level
without any probe. Everything the card says is derived from the held-out traces' scores,
labels and token counts, which are written beside the card (``events.json``), so
``calibrate -p DIR`` without a collection re-derives the card bit for bit from the repository. ``--draws N``
checks the promises: N calibration sets drawn from the pooled held-out traces (the pool as
the population), each rule's realised rate measured on the whole pool, and the share of draws
where it exceeded its level reported with a 95 % interval.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.display import metrics_table
from lynx_edge.errors import ProbeError
from lynx_edge.lab.collection import Collection
from lynx_edge.lab.risk import (
    loss_intervals,
    ltt_thresholds,
    premature_counts,
    trace_level_quantiles,
)
from lynx_edge.lab.train import TRAINING, scores
from lynx_edge.runtime.conditions import conditions_words
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.probe_card import CARD_NAME, ProbeCard
from lynx_edge.runtime.rules import ExitRule, card_rules, first_exit

DELTAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20, 0.30)
ALPHAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20)
CONFIDENCE = 0.9
PER_CUE = ("pac", "marginal")
EVENTS_NAME = "events.json"
EVENTS_FORMAT = "lynx-edge-events/2"
_CARD_KEYS = ("model", "layers", "final_norm", "cues", "exit_text", "think_open", "think_close", "scaffold")


@dataclass
class Trace:
    """One held-out trace with its cue events' scores and exit outcomes."""

    id: str
    split: str
    correct: bool
    natural_tokens: int  # thinking + answer of the full trace
    probs: np.ndarray  # per cue, in order
    forced_ok: np.ndarray
    used_tokens: np.ndarray  # per cue: tokens kept before it + exit text + exit answer

    def as_ltt(self) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.probs, self.forced_ok, self.correct

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "split": self.split,
            "correct": self.correct,
            "natural_tokens": self.natural_tokens,
            "cues": [[float(p), bool(ok), int(u)] for p, ok, u in zip(self.probs, self.forced_ok, self.used_tokens)],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        cues = data["cues"]
        return cls(
            id=data["id"],
            split=data["split"],
            correct=bool(data["correct"]),
            natural_tokens=int(data["natural_tokens"]),
            probs=np.array([c[0] for c in cues], dtype=np.float64),
            forced_ok=np.array([c[1] for c in cues], dtype=bool),
            used_tokens=np.array([c[2] for c in cues], dtype=np.int64),
        )


def held_out_traces(store: Collection, split: str, probe: OnnxProbe | None) -> list[Trace]:
    """The split's traces (cue-less ones included) with scores on their events: the probe's,
    or the exit answers' confidence when ``probe`` is None."""
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
                split=split,
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
    deltas: Sequence[float] = DELTAS,
    alphas: Sequence[float] = ALPHAS,
    confidence: float = CONFIDENCE,
    p_value: str = "binomial",
    per_cue: str = "pac",
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The card's ``calibration`` section from calibration traces (``seed`` picks the one
    event per class and trace that the per-cue quantiles use)."""
    pac = per_cue == "pac"
    cue_traces = [(t.probs, t.forced_ok) for t in traces]
    per_cue_entries = []
    for delta in deltas:
        q_pos, q_neg, n_pos, n_neg = trace_level_quantiles(
            cue_traces, delta, confidence=confidence if pac else None, seed=seed
        )
        entry = {
            "delta": delta,
            "q_pos": _finite(q_pos),
            "q_neg": _finite(q_neg),
            "n_pos": n_pos,
            "n_neg": n_neg,
            "promise": per_cue,
            "unit": "trace",
        }
        if pac:
            entry["confidence"] = confidence
        per_cue_entries.append(entry)
    ltt = [t.as_ltt() for t in traces]
    candidates = _events(traces)[0]
    lams = ltt_thresholds(loss_intervals(ltt), len(ltt), candidates, alphas, confidence=confidence, p_value=p_value)
    per_answer = [
        {"alpha": a, "threshold": lams[a], "confidence": confidence, "n_traces": len(traces), "promise": "ltt"}
        for a in alphas
    ]
    return {"per_cue": per_cue_entries, "per_answer": per_answer}


def measure(rule: ExitRule, traces: Sequence[Trace], rates: PoolRates) -> dict[str, Any]:
    """What ``rule`` does on ``traces`` (whose rates ``rates`` holds): per-cue and per-answer
    premature-exit rates, exit rate, tokens saved, accuracy with exits (first passing cue wins)."""
    exits = premature = right = used = natural = 0
    for t in traces:
        natural += t.natural_tokens
        if (j := first_exit(rule, t.probs)) is not None:
            exits += 1
            premature += int(t.correct and not t.forced_ok[j])
            right += int(t.forced_ok[j])
            used += int(t.used_tokens[j])
        else:
            right += int(t.correct)
            used += t.natural_tokens
    n = max(len(traces), 1)
    per_cue = rates.per_cue(rule)
    return {
        "mode": rule.mode,
        "level": rule.level,
        "per_cue_premature_exit_rate": None if per_cue is None else round(per_cue, 4),
        "per_answer_premature_exit_rate": round(premature / n, 4),
        "exit_rate": round(exits / n, 4),
        "accuracy_with_exits": round(right / n, 4),
        "tokens_saved": round(1 - used / natural, 4) if natural else 0.0,
        "mean_tokens": round(used / n, 1),
    }


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a frequency hits / n."""
    if n == 0:
        return 0.0, 1.0
    f = hits / n
    centre = (f + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class PoolRates:
    """Exact promised rates of any rule on a fixed pool of traces (the population of a check,
    or a test split): per cue, the share of a trace's wrong-exit cues that pass, averaged over
    the traces that have one; per answer, the share of traces whose first exit is premature."""

    def __init__(self, pool: Sequence[Trace]) -> None:
        self.n = len(pool)
        self.pool = pool
        with_wrong = [t for t in pool if (~t.forced_ok).any()]
        self.n_with_wrong = len(with_wrong)
        self.wrong_probs = np.concatenate([t.probs[~t.forced_ok] for t in with_wrong] or [np.zeros(0)])
        self.wrong_weights = np.concatenate(
            [np.full(int((~t.forced_ok).sum()), 1.0 / (~t.forced_ok).sum()) for t in with_wrong] or [np.zeros(0)]
        )

    @functools.cached_property
    def intervals(self) -> np.ndarray:
        return loss_intervals([t.as_ltt() for t in self.pool])

    def rate(self, rule: ExitRule) -> float:
        """The rate ``rule``'s promise bounds (0 where nothing can go wrong)."""
        if rule.mode == "per-answer":
            if not math.isfinite(rule.lam):
                return 0.0
            return float(premature_counts(self.intervals, np.array([rule.lam]))[0] / self.n)
        return self.per_cue(rule) or 0.0

    def per_cue(self, rule: ExitRule) -> float | None:
        """The per-cue rate (None when no trace has a wrong-exit cue)."""
        if not self.n_with_wrong:
            return None
        passes = np.asarray(rule.exits_many(self.wrong_probs))
        return float((self.wrong_weights * passes).sum() / self.n_with_wrong)


def check_promises(
    pool: Sequence[Trace],
    *,
    draws: int,
    cal_size: int,
    seed: int = 0,
    p_value: str = "binomial",
    per_cue: str = "pac",
) -> dict[str, Any]:
    """How often each promise is broken: ``draws`` calibration sets of ``cal_size`` traces drawn
    (with replacement, i.e. i.i.d.) from ``pool``, each calibrated as the card was and its rules'
    rates measured exactly on the whole pool. A kept promise at confidence c exceeds its level
    in at most 1 − c of the draws; the 95 % interval says how sure the count is."""
    rng = np.random.default_rng(seed)
    rates = PoolRates(pool)
    exceeded: dict[str, list[float]] = {}
    for draw in range(draws):
        sample = [pool[i] for i in rng.integers(0, len(pool), cal_size)]
        for rule in card_rules(calibrate(sample, p_value=p_value, per_cue=per_cue, seed=draw)):
            exceeded.setdefault(f"{rule.mode} {rule.level:g}", []).append(rates.rate(rule))
    report = {}
    for key, values in exceeded.items():
        level = float(key.split()[1])
        arr = np.array(values)
        hits = int((arr > level + 1e-12).sum())
        low, high = wilson_interval(hits, len(arr))
        report[key] = {
            "violation_frequency": round(hits / len(arr), 4),
            "interval_95": [round(low, 4), round(high, 4)],
            "mean_rate": round(float(arr.mean()), 4),
        }
    return {"draws": draws, "pool_traces": len(pool), "cal_size": cal_size, "per_cue": per_cue, "levels": report}


def _check_probe(probe_dir: Path, manifest: dict[str, Any]) -> None:
    training = probe_dir / TRAINING
    if not (probe_dir / "probe.onnx").is_file():
        raise ProbeError(
            f"no probe.onnx in {probe_dir}: run `lynx-edge probe train` first (or calibrate --score trial)"
        )
    if training.is_file():
        made_for = json.loads(training.read_text()).get("fingerprint")
        if made_for and made_for != manifest["model"]:
            raise ProbeError(
                f"the probe in {probe_dir} was trained for {made_for.get('name')}, not for this collection's "
                f"{manifest['model']['name']}: train it on this collection first"
            )


def write_events(collections: Sequence[Path], probe_dir: Path, *, score: str = "probe") -> Path:
    """Score each collection's held-out traces and write them, with what the card needs of
    the collections' manifests, to ``probe_dir/events.json`` (a few MB: no features). Each
    collection is one condition set of the card; the first is the card's main one."""
    if not collections:
        raise ProbeError("name at least one collection to calibrate on")
    sets = [_event_set(Collection(c), probe_dir, score) for c in collections]
    first = sets[0]["manifest"]
    for path, other in zip(collections[1:], sets[1:]):
        differ = [k for k in _CARD_KEYS if k != "scaffold" and other["manifest"].get(k) != first.get(k)]
        if differ:
            raise ProbeError(
                f"{path} was collected with other {', '.join(differ)} than {collections[0]}: "
                "one card calibrates one probe on one model; collect both with the same model and cues"
            )
    seen = [json.dumps(s["manifest"].get("conditions"), sort_keys=True) for s in sets]
    if len(set(seen)) < len(seen):
        raise ProbeError("two collections were made in the same conditions: pass each condition set once")
    probe_dir.mkdir(parents=True, exist_ok=True)
    path = probe_dir / EVENTS_NAME
    events = {"format": EVENTS_FORMAT, "score": score, "sets": sets}
    path.write_text(json.dumps(events, separators=(",", ":")) + "\n")
    return path


def _event_set(store: Collection, probe_dir: Path, score: str) -> dict[str, Any]:
    """One collection's held-out traces with their scores, and its manifest's card keys."""
    manifest = store.manifest()
    probe = None
    if score == "probe":
        _check_probe(probe_dir, manifest)
        probe = OnnxProbe(probe_dir / "probe.onnx", store.feature_dim)
    by_split = store.traces_by_split()
    return {
        "manifest": {k: manifest.get(k) for k in (*_CARD_KEYS, "conditions", "settings", "data")},
        "traces": {s: len(v) for s, v in by_split.items()},
        "events": {s: sum(len(t["cues"]) for t in v) for s, v in by_split.items()},
        "traces_without_cues": sum(1 for v in by_split.values() for t in v if not t["cues"]),
        "held_out": [t.to_json() for split in ("cal", "test") for t in held_out_traces(store, split, probe)],
    }


def read_events(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProbeError(
            f"cannot read the calibration events {path} ({exc}): run calibrate on the collection"
        ) from None
    if data.get("format") != EVENTS_FORMAT:
        raise ProbeError(f"{path} is not a {EVENTS_FORMAT} file: run calibrate on the collection again")
    return data


def card_from_events(
    probe_dir: Path,
    *,
    draws: int = 0,
    seed: int = 0,
    p_value: str = "binomial",
    per_cue: str = "pac",
    default_alpha: float | None = None,
) -> ProbeCard:
    """Write ``probe_dir/card.json`` from ``probe_dir/events.json`` (and ``training.json``
    when there is one): the same events always give the same card."""
    data = read_events(probe_dir / EVENTS_NAME)
    probe = data["score"] == "probe"
    training = _read_training(probe_dir) if probe else None
    made = [
        _calibrated_set(s, data["score"], training, draws=draws, seed=seed, p_value=p_value, per_cue=per_cue)
        for s in data["sets"]
    ]
    manifest = data["sets"][0]["manifest"]
    card = ProbeCard(
        model=manifest["model"],
        layers=list(manifest["layers"]) if probe else [],
        final_norm=bool(manifest["final_norm"]) if probe else False,
        cues=list(manifest["cues"]),
        exit_text=manifest["exit_text"],
        think_open=manifest["think_open"],
        think_close=manifest["think_close"],
        onnx="probe.onnx" if probe else None,
        score=data["score"],
        default_alpha=default_alpha,
        calibration=made[0]["calibration"],
        scaffold=list(manifest["scaffold"]),
        conditions=made[0]["conditions"],
        metrics=made[0]["metrics"],
        condition_sets=made[1:],
    )
    card.save(probe_dir / CARD_NAME)
    return card


def _calibrated_set(
    data: dict[str, Any], score: str, training: dict[str, Any] | None, *, draws: int, seed: int, **how: str
) -> dict[str, Any]:
    """One condition set's calibration and test metrics (with the promise check over
    ``draws`` calibration draws when ``draws`` > 0)."""
    manifest = data["manifest"]
    held_out = [Trace.from_json(t) for t in data["held_out"]]
    cal = [t for t in held_out if t.split == "cal"]
    test = [t for t in held_out if t.split == "test"]
    calibration = calibrate(cal, seed=seed, **how)
    test_probs, test_labels = _events(test)
    rates = PoolRates(test)
    metrics: dict[str, Any] = {
        "score": score,
        "traces": data["traces"],
        "events": data["events"],
        "traces_without_cues": data["traces_without_cues"],
        "test": {
            "accuracy_without_exits": round(float(np.mean([t.correct for t in test])), 4) if test else None,
            **scores(test_probs, test_labels),
            "rules": [measure(rule, test, rates) for rule in card_rules(calibration)],
        },
        "settings": manifest["settings"],
        "data": list(manifest["data"]),
    }
    if training:
        metrics["training"] = training
    if draws:
        metrics["promise_check"] = check_promises(held_out, draws=draws, cal_size=len(cal), seed=seed, **how)
    return {"conditions": manifest.get("conditions"), "calibration": calibration, "metrics": metrics}


def run_calibrate(collections: Sequence[Path], probe_dir: Path, *, score: str = "probe", **kwargs: Any) -> ProbeCard:
    """Score the collections' held-out traces into ``events.json`` (skipped when none are
    named: the shipped events are used) and write the card from them."""
    if collections:
        write_events(collections, probe_dir, score=score)
    return card_from_events(probe_dir, **kwargs)


def _read_training(probe_dir: Path) -> dict[str, Any] | None:
    path = probe_dir / TRAINING
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("epochs", "onnx_max_abs_diff", "train", "cal", "test") if k in data}


def report_card(card: ProbeCard) -> str:
    """The card's calibration and test metrics as a few readable lines (what calibrate prints),
    one block per condition set, in the words ``probe info`` uses."""
    lines: list[str] = []
    for one in card.all_condition_sets:
        if card.condition_sets:
            lines.append(f"conditions: {conditions_words(one['conditions'])}")
        m = one["metrics"]
        lines.append(
            f"score {m['score']}: traces {m['traces']}, cue events {m['events']}, "
            f"traces without cues {m['traces_without_cues']}"
        )
        lines.extend(metrics_table(m))
        for rule in card_rules(one["calibration"]):
            if not math.isfinite(rule.threshold):
                why = "traces with a wrong-exit cue" if rule.mode == "per-cue" else "calibration traces to certify it"
                symbol = "δ" if rule.mode == "per-cue" else "α"
                lines.append(f"  {symbol}={rule.level:g}: never exits at this {symbol} (too few {why})")
    return "\n".join(lines)
