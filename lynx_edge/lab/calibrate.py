"""Calibrate: per promise kind and per kind of problem, thresholds per δ (per cue) and per α
(per answer), measured on the test split.

Two promise kinds, each scored by its own probe and calibrated apart:

* ``agreement`` — the loss is an exit whose answer differs from the same trace's full-thinking
  answer (the ``changes`` label: no gold needed). Population: every answer;
* ``harm`` — the loss is an exit that spoils an answer full thinking gets right. Population:
  the answers full thinking gets right only (a trace full thinking gets wrong cannot be
  spoilt; counting it would dilute the level over answers that cannot be lost).

Within a kind, each group (the data file a problem came from: a kind of problem) is calibrated
apart, and the card binds the strictest threshold of the groups that certify a level (group-
conditional, "Mondrian" calibration); a group too small to certify a level is named on the
entry (``uncertified``), never merged into the others. Levels are made monotone afterwards (a
stricter level never exits more): raising a threshold only removes exits, so every statement
still holds.

* per cue — class-conditional split conformal on one event of each class per calibration
  trace (seeded), so the scores are independent even though the cues of a trace are not:
  PAC (confidence 0.9: the realised rate exceeds δ in at most 10 % of calibration draws) by
  default, or marginal (``--per-cue marginal``). The promise: at a cue where exiting would
  lose (change / spoil the answer), chosen at random in a random trace of the population,
  P(exit) ≤ δ;
* per answer — Learn-then-Test on the calibration split's traces, for each α at confidence
  0.9, each level a statement of its own (not jointly).

The score is each kind's probe output on the cue's features, or (``--score trial``) the
confidence of the exit answer at the cue — DEER's training-free score. Everything the card says
is derived from the held-out traces' scores, labels and token counts, written beside the card
(``events.json``), so ``calibrate -p DIR`` without a collection re-derives the card bit for bit.
``--draws N`` checks the promises: N calibration sets drawn from the pooled held-out traces,
each calibrated as the card is, each rule's realised rate measured on every group's whole pool.
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
    class_conditional_quantiles,
    loss_intervals,
    ltt_thresholds,
    one_per_trace,
    premature_counts,
    rate_with_interval,
    wilson_interval,
)
from lynx_edge.lab.train import PROBE_FILES, TRAINING, scores
from lynx_edge.runtime.conditions import conditions_words
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.options import PROMISES, Promise
from lynx_edge.runtime.probe_card import CARD_NAME, ProbeCard
from lynx_edge.runtime.rules import PROMISE_SENTENCES, ExitRule, card_rules, first_exit

DELTAS = (0.01, 0.02, 0.03, 0.05, 0.10, 0.20, 0.30)
ALPHAS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.10)
CONFIDENCE = 0.9
PER_CUE = ("pac", "marginal")
EVENTS_NAME = "events.json"
EVENTS_FORMAT = "lynx-edge-events/3"
POPULATION = {"agreement": "every answer", "harm": "answers full thinking gets right"}
_CARD_KEYS = ("model", "layers", "final_norm", "cues", "exit_text", "think_open", "think_close", "scaffold")


@dataclass
class Trace:
    """One held-out trace with its cue events' scores (per promise kind) and exit outcomes."""

    id: str
    split: str
    group: str  # the kind of problem: the data file it came from
    correct: bool | None  # the full answer against gold (None: no gold)
    natural_tokens: int  # thinking + answer of the full trace
    scores: dict[str, np.ndarray]  # per promise kind, per cue in order
    agrees: np.ndarray  # per cue: the exit's answer is the full-thinking answer
    forced_ok: np.ndarray  # per cue: the exit's answer is right (all False without gold)
    used_tokens: np.ndarray  # per cue: tokens kept before it + exit text + exit answer
    # what re-labelling needs: the gold, the full answer and the exit's answer at each cue (as read)
    gold: str | None = None
    answer: str | None = None
    answers: tuple[str | None, ...] = ()

    def view(self, promise: Promise) -> tuple[np.ndarray, np.ndarray] | None:
        """(scores, no loss at each cue) as ``promise`` counts this trace; None when the trace
        is outside its population (harm: a full answer that is not right cannot be spoilt)."""
        if promise == "agreement":
            return self.scores["agreement"], self.agrees
        if self.correct is not True:
            return None
        return self.scores["harm"], self.forced_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "split": self.split,
            "group": self.group,
            "correct": self.correct,
            "natural_tokens": self.natural_tokens,
            "gold": self.gold,
            "answer": self.answer,
            "answers": list(self.answers),
            "cues": [
                [*(_score(self.scores[p][i]) for p in PROMISES), bool(a), bool(ok), int(u)]
                for i, (a, ok, u) in enumerate(zip(self.agrees, self.forced_ok, self.used_tokens))
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trace:
        cues = data["cues"]
        k = len(PROMISES)
        return cls(
            id=data["id"],
            split=data["split"],
            group=data.get("group") or "all",
            correct=data["correct"],
            natural_tokens=int(data["natural_tokens"]),
            scores={
                p: np.array([math.nan if c[i] is None else c[i] for c in cues], dtype=np.float64)
                for i, p in enumerate(PROMISES)
            },
            agrees=np.array([c[k] for c in cues], dtype=bool),
            forced_ok=np.array([c[k + 1] for c in cues], dtype=bool),
            used_tokens=np.array([c[k + 2] for c in cues], dtype=np.int64),
            gold=data.get("gold"),
            answer=data.get("answer"),
            answers=tuple(data.get("answers", ())),
        )


def _score(value: float) -> float | None:
    """A score for events.json: null where the kind has no probe (questions without gold)."""
    return None if math.isnan(value) else float(value)


def held_out_traces(store: Collection, split: str, probes: dict[str, OnnxProbe] | None) -> list[Trace]:
    """The split's traces (cue-less ones included) with each promise kind's scores on their
    events: its probe's, or the exit answers' confidence when ``probes`` is None."""
    score: dict[str, dict[tuple[str, int], float]] = {}
    if probes is not None:
        events = store.load_split(split)
        for promise, probe in probes.items():
            probs = probe.score_batch(events.features) if len(events) else np.zeros(0)
            score[promise] = {(t, int(p)): float(s) for t, p, s in zip(events.trace_ids, events.positions, probs)}
    out = []
    for t in store.traces_by_split()[split]:
        cues = t["cues"]
        if probes is None and any("mean_prob" not in c for c in cues):
            raise ProbeError(
                f"{store.root} lacks trial confidences (collected before they were kept): collect it again"
            )
        if any("changes" not in c for c in cues):
            raise ProbeError(f"{store.root} lacks agreement labels (collected before they were kept): collect it again")
        out.append(
            Trace(
                id=t["id"],
                split=split,
                group=t.get("group") or t["source"],
                correct=t["correct"],
                natural_tokens=int(t["thinking_tokens"] + t["answer_tokens"]),
                scores={
                    p: np.array(
                        [c["mean_prob"] if probes is None else score[p][(t["id"], c["token_index"])] for c in cues]
                        if probes is None or p in score
                        else [math.nan] * len(cues),
                        dtype=np.float64,
                    )
                    for p in PROMISES
                },
                agrees=np.array([not c["changes"] for c in cues], dtype=bool),
                forced_ok=np.array([bool(c["correct"]) for c in cues], dtype=bool),
                used_tokens=np.array([c["cut"] + c["exit_tokens"] + c["answer_tokens"] for c in cues], dtype=np.int64),
                gold=t["gold"],
                answer=t["answer"],
                answers=tuple(c["answer"] for c in cues),
            )
        )
    return out


def promises_in(traces: Sequence[Trace]) -> list[Promise]:
    """The kinds these traces can calibrate: agreement always, harm where gold answers exist."""
    return [p for p in PROMISES if p == "agreement" or any(t.correct is not None for t in traces)]


def population(traces: Sequence[Trace], promise: Promise) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per group, the (scores, no-loss) cue views of the traces ``promise`` counts."""
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for t in traces:
        if (view := t.view(promise)) is not None:
            groups.setdefault(t.group, []).append(view)
    return dict(sorted(groups.items()))


def _finite(q: float) -> float | None:
    """A quantile for the card: null for +∞, else exact (rounding could loosen the rule)."""
    return None if not np.isfinite(q) else float(q)


def _group_section(
    views: list[tuple[np.ndarray, np.ndarray]],
    deltas: Sequence[float],
    alphas: Sequence[float],
    *,
    confidence: float,
    p_value: str,
    pac: bool,
    seed: int,
) -> tuple[dict[float, tuple[float, float, int, int]], dict[float, float | None]]:
    """One group's per-cue quantiles per δ and per-answer thresholds per α."""
    probs, labels = one_per_trace(views, seed)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    cue = {
        d: (*class_conditional_quantiles(probs, labels, d, confidence=confidence if pac else None), n_pos, n_neg)
        for d in deltas
    }
    ltt = [(p, ok, True) for p, ok in views]
    candidates = np.concatenate([p for p, _ in views] or [np.zeros(0)])
    lams = ltt_thresholds(loss_intervals(ltt), len(ltt), candidates, alphas, confidence=confidence, p_value=p_value)
    return cue, lams


def calibrate_promise(
    traces: Sequence[Trace],
    promise: Promise,
    *,
    deltas: Sequence[float] = DELTAS,
    alphas: Sequence[float] = ALPHAS,
    confidence: float = CONFIDENCE,
    p_value: str = "binomial",
    per_cue: str = "pac",
    seed: int = 0,
) -> dict[str, Any]:
    """One promise kind's section of the card: every group calibrated apart, the strictest
    certified threshold bound, uncertified groups named, levels made monotone."""
    pac = per_cue == "pac"
    groups = population(traces, promise)
    made = {
        g: _group_section(v, deltas, alphas, confidence=confidence, p_value=p_value, pac=pac, seed=seed)
        for g, v in groups.items()
    }
    per_cue_entries = []
    for delta in sorted(deltas):
        cells = {g: made[g][0][delta] for g in groups}
        certified = [g for g, c in cells.items() if math.isfinite(c[1])]
        entry = {
            "delta": delta,
            "q_pos": min([cells[g][0] for g in certified], default=math.inf),
            "q_neg": max([cells[g][1] for g in certified], default=math.inf),
            "n_pos": sum(c[2] for c in cells.values()),
            "n_neg": sum(c[3] for c in cells.values()),
            "promise": per_cue,
            "unit": "trace",
            **({"confidence": confidence} if pac else {}),
            "groups": {g: {"n_pos": c[2], "n_neg": c[3], "q_neg": _finite(c[1])} for g, c in cells.items()},
            "uncertified": [g for g in groups if g not in certified],
        }
        per_cue_entries.append(entry)
    per_answer = []
    for alpha in sorted(alphas):
        lams = {g: made[g][1][alpha] for g in groups}
        certified = [g for g, lam in lams.items() if lam is not None]
        per_answer.append(
            {
                "alpha": alpha,
                "threshold": max([lams[g] for g in certified], default=math.inf),
                "confidence": confidence,
                "n_traces": sum(len(v) for v in groups.values()),
                "promise": "ltt",
                "groups": {g: {"n": len(groups[g]), "threshold": lams[g]} for g in groups},
                "uncertified": [g for g in groups if g not in certified],
            }
        )
    _monotone(per_cue_entries, per_answer)
    return {
        "statement": PROMISE_SENTENCES[promise],
        "population": POPULATION[promise],
        "groups": {g: len(v) for g, v in groups.items()},
        "per_cue": per_cue_entries,
        "per_answer": per_answer,
    }


def _monotone(per_cue: list[dict[str, Any]], per_answer: list[dict[str, Any]]) -> None:
    """Make each level at least as strict as every looser one (entries ascending): a tighter
    q_neg, a lower q_pos, a higher λ only remove exits, so each statement still holds."""
    q_neg, q_pos, lam = -math.inf, math.inf, -math.inf
    for entry in reversed(per_cue):
        q_neg, q_pos = max(q_neg, entry["q_neg"]), min(q_pos, entry["q_pos"])
        entry["q_neg"], entry["q_pos"] = _finite(q_neg), _finite(q_pos)
    for entry in reversed(per_answer):
        lam = max(lam, entry["threshold"])
        entry["threshold"] = _finite(lam)


def calibrate(traces: Sequence[Trace], **how: Any) -> dict[str, dict[str, Any]]:
    """The card's ``calibration``: a section per promise kind the traces can calibrate
    (agreement first: the default)."""
    return {p: calibrate_promise(traces, p, **how) for p in promises_in(traces)}


def measure(rule: ExitRule, traces: Sequence[Trace]) -> dict[str, Any]:
    """What ``rule`` does on ``traces`` (first passing cue wins): the rates each promise bounds —
    answers changed, answers spoilt, spoilt among the answers full thinking gets right, the
    per-cue rate of its own kind — beside exit rate, tokens saved and accuracy."""
    exits = changed = spoilt = right = used = natural = 0
    graded = [t for t in traces if t.correct is not None]
    full_right = [t for t in graded if t.correct]
    for t in traces:
        natural += t.natural_tokens
        if (j := first_exit(rule, t.scores[rule.promise])) is not None:
            exits += 1
            changed += int(not t.agrees[j])
            spoilt += int(bool(t.correct) and not t.forced_ok[j])
            right += int(t.forced_ok[j])
            used += int(t.used_tokens[j])
        else:
            right += int(bool(t.correct))
            used += t.natural_tokens
    n = max(len(traces), 1)
    per_cue = PoolRates(traces, rule.promise).per_cue(rule)
    return {
        "promise": rule.promise,
        "mode": rule.mode,
        "level": rule.level,
        "per_cue_rate": None if per_cue is None else round(per_cue, 4),
        "changed": rate_with_interval(changed, len(traces)),
        "spoilt": rate_with_interval(spoilt, len(graded)),
        "spoilt_among_right": rate_with_interval(spoilt, len(full_right)),
        "exit_rate": round(exits / n, 4),
        "accuracy_with_exits": round(right / max(len(graded), 1), 4) if graded else None,
        "tokens_saved": round(1 - used / natural, 4) if natural else 0.0,
        "mean_tokens": round(used / n, 1),
    }


class PoolRates:
    """Exact promised rates of any rule of one promise kind on a fixed pool of traces (the
    population of a check, or a test split): per cue, the share of a trace's losing cues that
    pass, averaged over the traces that have one; per answer, the share of the kind's
    population whose first exit loses."""

    def __init__(self, pool: Sequence[Trace], promise: Promise) -> None:
        views = [v for g in population(pool, promise).values() for v in g]
        self.views = views
        self.n = len(views)
        with_wrong = [(p, ok) for p, ok in views if (~ok).any()]
        self.n_with_wrong = len(with_wrong)
        self.wrong_probs = np.concatenate([p[~ok] for p, ok in with_wrong] or [np.zeros(0)])
        self.wrong_weights = np.concatenate(
            [np.full(int((~ok).sum()), 1.0 / (~ok).sum()) for _, ok in with_wrong] or [np.zeros(0)]
        )

    @functools.cached_property
    def intervals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return loss_intervals([(p, ok, True) for p, ok in self.views])

    def rate(self, rule: ExitRule) -> float:
        """The rate ``rule``'s promise bounds (0 where nothing can go wrong)."""
        if rule.mode == "per-answer":
            if not math.isfinite(rule.lam) or not self.n:
                return 0.0
            return float(premature_counts(self.intervals, np.array([rule.lam]))[0] / self.n)
        return self.per_cue(rule) or 0.0

    def per_cue(self, rule: ExitRule) -> float | None:
        """The per-cue rate (None when no trace has a losing cue)."""
        if not self.n_with_wrong:
            return None
        passes = np.asarray(rule.exits_many(self.wrong_probs))
        return float((self.wrong_weights * passes).sum() / self.n_with_wrong)

    @functools.cached_property
    def highest_per_answer(self) -> float:
        """The largest per-answer rate any threshold reaches on this pool: a level at or above
        it cannot be exceeded here, so a check says nothing about it (not testable here)."""
        if not self.n or not len(self.intervals[0]):
            return 0.0
        candidates = np.unique(np.concatenate([self.intervals[2], [-math.inf]]))
        return float(premature_counts(self.intervals, candidates).max() / self.n)

    def testable(self, mode: str, level: float) -> bool:
        """Whether some threshold would break ``level`` on this pool."""
        if mode == "per-answer":
            return self.highest_per_answer > level + 1e-12
        return self.n_with_wrong > 0


def check_promises(
    pool: Sequence[Trace],
    *,
    draws: int,
    cal_size: int,
    seed: int = 0,
    p_value: str = "binomial",
    per_cue: str = "pac",
) -> dict[str, Any]:
    """How often each promise is broken, per kind and per group: ``draws`` calibration sets of
    ``cal_size`` traces drawn (with replacement, i.e. i.i.d.) from ``pool``, each calibrated as
    the card is, its rules' rates measured exactly on each group's whole pool (and on all of
    them). A kept promise at confidence c exceeds its level in at most 1 − c of the draws that
    certify that group; a level no threshold can exceed on a pool is "not testable here"."""
    rng = np.random.default_rng(seed)
    kinds = promises_in(pool)
    groups = sorted({t.group for t in pool})
    pools = {
        p: {g: PoolRates([t for t in pool if t.group == g], p) for g in groups} | {"all": PoolRates(pool, p)}
        for p in kinds
    }
    seen: dict[tuple[str, str, str], list[tuple[float, bool]]] = {}
    for draw in range(draws):
        sample = [pool[i] for i in rng.integers(0, len(pool), cal_size)]
        calibration = calibrate(sample, p_value=p_value, per_cue=per_cue, seed=draw)
        for promise, section in calibration.items():
            entries = {f"per-cue {e['delta']:g}": e for e in section["per_cue"]} | {
                f"per-answer {e['alpha']:g}": e for e in section["per_answer"]
            }
            for rule in card_rules({promise: section}):
                key = f"{rule.mode} {rule.level:g}"
                uncertified = set(entries[key]["uncertified"])
                for where, rates in pools[promise].items():
                    # "all" is certified when every group present in the draw is
                    certified = where not in uncertified if where != "all" else not uncertified
                    seen.setdefault((promise, where, key), []).append((rates.rate(rule), certified))
    report: dict[str, Any] = {}
    for (promise, where, key), values in seen.items():
        mode, level = key.split()[0], float(key.split()[1])
        rates = pools[promise][where]
        cell: dict[str, Any] = {"pool_traces": rates.n}
        held = [r for r, ok in values if ok]
        cell["certified_share"] = round(len(held) / len(values), 4)
        if not rates.testable(mode, level):
            cell["status"] = "not testable here"
        elif not held:
            cell["status"] = "not certified (too few traces of this group)"
        else:
            hits = int((np.array(held) > level + 1e-12).sum())
            low, high = wilson_interval(hits, len(held))
            cell.update(
                status="checked",
                violation_frequency=round(hits / len(held), 4),
                interval_95=[round(low, 4), round(high, 4)],
                mean_rate=round(float(np.mean(held)), 4),
            )
        report.setdefault(promise, {}).setdefault(where, {})[key] = cell
    return {"draws": draws, "pool_traces": len(pool), "cal_size": cal_size, "per_cue": per_cue, "promises": report}


def _check_probes(probe_dir: Path, manifest: dict[str, Any]) -> None:
    training = probe_dir / TRAINING
    if not (probe_dir / PROBE_FILES["agreement"]).is_file():
        raise ProbeError(
            f"no {PROBE_FILES['agreement']} in {probe_dir}: run `lynx-edge probe train` first "
            "(or calibrate --score trial)"
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
    events = {"format": EVENTS_FORMAT, "score": score, "promises": list(PROMISES), "sets": sets}
    path.write_text(json.dumps(events, separators=(",", ":")) + "\n")
    return path


def _event_set(store: Collection, probe_dir: Path, score: str) -> dict[str, Any]:
    """One collection's held-out traces with their scores, its manifest's card keys, and the
    protocol: how many problems were planned and collected, and the split."""
    manifest = store.manifest()
    probes = None
    if score == "probe":
        _check_probes(probe_dir, manifest)
        probes = {
            p: OnnxProbe(probe_dir / PROBE_FILES[p], store.feature_dim)
            for p in PROMISES
            if (probe_dir / PROBE_FILES[p]).is_file()  # harm's is missing for questions without gold
        }
    by_split = store.traces_by_split()
    planned = manifest["settings"].get("planned_problems")
    collected = sum(len(v) for v in by_split.values())
    if planned is not None and collected < planned:
        raise ProbeError(
            f"{store.root} holds {collected} of the {planned} problems planned: finish the collection "
            "(run the same collect command) before calibrating"
        )
    return {
        "manifest": {k: manifest.get(k) for k in (*_CARD_KEYS, "conditions", "settings", "data")},
        "protocol": {
            "planned_problems": planned,
            "collected_problems": collected,
            "split_fractions": manifest["settings"]["split_fractions"],
        },
        "traces": {s: len(v) for s, v in by_split.items()},
        "events": {s: sum(len(t["cues"]) for t in v) for s, v in by_split.items()},
        "traces_without_cues": sum(1 for v in by_split.values() for t in v if not t["cues"]),
        "held_out": [t.to_json() for split in ("cal", "test") for t in held_out_traces(store, split, probes)],
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
    promises = list(made[0]["calibration"])
    card = ProbeCard(
        model=manifest["model"],
        layers=list(manifest["layers"]) if probe else [],
        final_norm=bool(manifest["final_norm"]) if probe else False,
        cues=list(manifest["cues"]),
        exit_text=manifest["exit_text"],
        think_open=manifest["think_open"],
        think_close=manifest["think_close"],
        onnx=PROBE_FILES[promises[0]] if probe else None,
        probes={p: PROBE_FILES[p] for p in promises} if probe else {},
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
    graded = [t for t in test if t.correct is not None]
    metrics: dict[str, Any] = {
        "score": score,
        "protocol": data.get("protocol"),
        "traces": data["traces"],
        "events": data["events"],
        "traces_without_cues": data["traces_without_cues"],
        "test": {
            "accuracy_without_exits": round(float(np.mean([t.correct for t in graded])), 4) if graded else None,
            "auc": {p: scores(*_events(test, p))["auc"] for p in calibration},
            "groups": {g: sum(t.group == g for t in test) for g in sorted({t.group for t in test})},
            "rules": [measure(rule, test) for rule in card_rules(calibration)],
        },
        "settings": manifest["settings"],
        "data": list(manifest["data"]),
    }
    if training:
        metrics["training"] = training
    if draws:
        metrics["promise_check"] = check_promises(held_out, draws=draws, cal_size=len(cal), seed=seed, **how)
    return {"conditions": manifest.get("conditions"), "calibration": calibration, "metrics": metrics}


def _events(traces: Sequence[Trace], promise: Promise) -> tuple[np.ndarray, np.ndarray]:
    """Every cue event of ``promise``'s population in ``traces``: (scores, no-loss labels)."""
    views = [v for g in population(traces, promise).values() for v in g]
    if not views:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate([p for p, _ in views]), np.concatenate([ok for _, ok in views])


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
    return {k: data[k] for k in ("probes",) if k in data}


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
                why = "traces with a losing cue" if rule.mode == "per-cue" else "calibration traces to certify it"
                symbol = "δ" if rule.mode == "per-cue" else "α"
                lines.append(f"  {rule.promise} {symbol}={rule.level:g}: never exits (too few {why})")
    return "\n".join(lines)
