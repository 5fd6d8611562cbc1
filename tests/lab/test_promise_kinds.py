"""The promise kinds as a user relies on them, over many simulated calibration draws: per kind of
problem, the harm among the answers full thinking gets right and the answers changed stay at or
under the level in at least 90 % of the draws — where the old promise, an average over a mix in
which half the problems cannot be spoilt, fails the same check on the problems that can."""

from __future__ import annotations

import numpy as np
import pytest

from lynx_edge.lab.calibrate import PoolRates, Trace, calibrate, calibrate_promise, check_promises
from lynx_edge.lab.risk import ltt_threshold
from lynx_edge.runtime.rules import ExitRule, card_rules

CONFIDENCE = 0.9
DRAWS = 400
ALLOWED = 1 - CONFIDENCE + 0.04  # Monte-Carlo sd of a 10 % frequency over 400 draws: 1.5 points


def simulated(rng: np.random.Generator, n: int, group: str, full_right: float, *, gold: bool = True) -> list[Trace]:
    """Traces of 1–4 cues whose scores rise along the trace; a cue's forced answer is right
    (and the same as the full one) with probability = its score; ``full_right`` of the full
    answers are right (a problem full thinking gets wrong cannot be spoilt)."""
    out = []
    for i in range(n):
        m = int(rng.integers(1, 5))
        probs = np.sort(rng.beta(4, 2, m))
        settled = rng.random(m) < probs
        correct = bool(rng.random() < full_right)
        out.append(
            Trace(
                id=f"{group}-{i}",
                split="cal",
                group=group,
                correct=correct if gold else None,
                natural_tokens=200,
                scores={"agreement": probs, "harm": probs},
                agrees=settled,
                forced_ok=settled & correct if gold else np.zeros(m, bool),
                used_tokens=np.full(m, 60),
            )
        )
    return out


def per_answer(section: dict, alpha: float) -> ExitRule:
    return next(r for r in card_rules({"harm": section}) if r.mode == "per-answer" and r.level == alpha)


def test_harm_per_kind_holds_where_the_old_pooled_average_fails() -> None:
    """A mix of problems the model gets right (95 %) and problems it mostly gets wrong (18 %):
    the harm promise, calibrated per kind on the answers that can be lost, holds on the kind
    that can be spoilt; the old per-answer promise over the whole mix does not."""
    rng = np.random.default_rng(3)
    alpha = 0.05
    spoilable = simulated(rng, 30_000, "synthetic", 0.95)
    hopeless = simulated(rng, 30_000, "asdiv", 0.18)
    truth = PoolRates(spoilable, "harm")
    mix = spoilable + hopeless
    kinds, pooled = [], []
    for _ in range(DRAWS):
        draw = [mix[i] for i in rng.integers(0, len(mix), 800)]
        section = calibrate_promise(draw, "harm", deltas=(), alphas=(alpha,))
        kinds.append(truth.rate(per_answer(section, alpha)) > alpha)
        old = ltt_threshold([(t.scores["harm"], t.forced_ok, bool(t.correct)) for t in draw], alpha)
        rule = ExitRule("per-answer", alpha, lam=np.inf if old is None else old, promise="harm")
        pooled.append(truth.rate(rule) > alpha)
    assert np.mean(kinds) <= ALLOWED
    assert np.mean(pooled) > ALLOWED  # the check can fail: an average over a diluted mix


def test_agreement_needs_no_gold_and_holds_over_draws() -> None:
    """Questions without answers: the agreement promise (answers changed ≤ α) holds over
    draws; without a confidence margin it does not."""
    rng = np.random.default_rng(8)
    alpha = 0.05
    population = simulated(rng, 40_000, "asked", 0.5, gold=False)
    truth = PoolRates(population, "agreement")
    certified, naive = [], []
    for _ in range(DRAWS):
        draw = [population[i] for i in rng.integers(0, len(population), 400)]
        assert list(calibrate(draw)) == ["agreement"]  # no gold: no harm section
        section = calibrate_promise(draw, "agreement", deltas=(), alphas=(alpha,))
        certified.append(truth.rate(per_answer(section, alpha)) > alpha)
        lam = ltt_threshold([(t.scores["agreement"], t.agrees, True) for t in draw], alpha, confidence=0.5)
        naive.append(truth.rate(ExitRule("per-answer", alpha, lam=np.inf if lam is None else lam)) > alpha)
    assert np.mean(certified) <= ALLOWED
    assert np.mean(naive) > ALLOWED


def test_a_kind_too_small_to_certify_a_level_is_named_and_the_others_bind() -> None:
    rng = np.random.default_rng(1)
    traces = simulated(rng, 600, "synthetic", 0.95) + simulated(rng, 30, "rare", 0.95)
    section = calibrate_promise(traces, "harm")
    strict = next(e for e in section["per_answer"] if e["alpha"] == 0.02)
    assert strict["uncertified"] == ["rare"]  # 30 traces cannot certify 0.02 (it takes 114)
    assert strict["groups"]["rare"]["threshold"] is None
    assert strict["threshold"] == strict["groups"]["synthetic"]["threshold"]
    assert section["groups"]["rare"] < 30  # only the answers full thinking gets right count for harm


def test_each_level_is_the_strictest_certified_threshold_of_the_kinds() -> None:
    rng = np.random.default_rng(2)
    traces = simulated(rng, 1500, "a", 0.9) + simulated(rng, 1500, "b", 0.6)
    for entry in calibrate_promise(traces, "agreement")["per_answer"]:
        certified = [g["threshold"] for g in entry["groups"].values() if g["threshold"] is not None]
        if certified:
            assert entry["threshold"] >= max(certified)


@pytest.mark.parametrize("seed", range(5))
def test_a_stricter_level_never_exits_more(seed: int) -> None:
    """Per cue and per answer, in both kinds: the exits of a level are a subset of the exits of
    every looser one (before, a stricter δ could exit more: δ 0.3 exited less than δ 0.2)."""
    rng = np.random.default_rng(seed)
    traces = simulated(rng, 700, "a", 0.9) + simulated(rng, 300, "b", 0.3)
    grid = np.linspace(0, 1, 2001)
    for rules in _by_mode(card_rules(calibrate(traces))).values():
        exits = [np.asarray(r.exits_many(grid)) for r in sorted(rules, key=lambda r: r.level)]
        for stricter, looser in zip(exits, exits[1:]):
            assert not (stricter & ~looser).any()


def _by_mode(rules: list[ExitRule]) -> dict[tuple[str, str], list[ExitRule]]:
    out: dict[tuple[str, str], list[ExitRule]] = {}
    for r in rules:
        out.setdefault((r.promise, r.mode), []).append(r)
    return out


def test_a_level_no_threshold_can_break_is_not_testable_here() -> None:
    """Where every exit keeps the answer, no level can be exceeded: the check says so instead
    of reporting it as kept."""
    rng = np.random.default_rng(4)
    traces = simulated(rng, 300, "calm", 0.9)
    for t in traces:
        t.agrees[:] = True
    report = check_promises(traces, draws=20, cal_size=150)
    cells = report["promises"]["agreement"]["calm"]
    assert {c["status"] for c in cells.values()} == {"not testable here"}
    harm = report["promises"]["harm"]["calm"]["per-answer 0.005"]
    assert harm["status"] in ("checked", "not certified (too few traces of this group)")
