"""The loop guard: a cycle repeated back to back is a loop; a recheck that repeats a
calculation once, or a short run of digits, is not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lynx_edge.runtime.limits import LoopGuard, find_loop, max_copies

ROOT = Path(__file__).resolve().parents[2]
rng = np.random.default_rng(0)


def words(n: int) -> list[int]:
    return rng.integers(1000, 5000, n).tolist()


def test_a_cycle_repeated_back_to_back_is_a_loop_found_at_its_shortest_period() -> None:
    lead, cycle = words(30), words(20)
    loop = find_loop(lead + cycle * 10)
    assert loop is not None and loop.period == 20 and loop.start == 30
    assert loop.copies >= 2.5 and loop.end - loop.start >= 48  # seen as soon as both thresholds hold
    assert loop.end == 30 + 50  # 2.5 copies of 20 (48 tokens would be 2.4)


def test_a_recheck_that_repeats_a_calculation_once_is_not_a_loop() -> None:
    calc = words(40)
    assert find_loop(words(50) + calc + words(5) + calc + words(60)) is None
    assert find_loop(words(50) + calc + calc + words(60)) is None  # even back to back: 2 copies
    assert max_copies(calc + calc) == 2.0


def test_a_short_run_is_not_a_loop_however_many_copies() -> None:
    digit, space = 33, 216
    assert find_loop(words(10) + [digit, space] * 20 + words(10)) is None  # 40 tokens < the 48-token span
    assert find_loop(words(10) + [digit, space] * 30) is not None


def test_the_guard_keeps_watching_token_by_token() -> None:
    guard = LoopGuard()
    tokens = words(10) + [7, 8, 9] * 40
    hits = [i for i, t in enumerate(tokens) if guard.push(t) is not None]
    assert hits and hits[0] == 10 + 48 - 1  # the first token that makes a 48-token span


def test_no_false_alarm_on_the_benchs_full_greedy_traces() -> None:
    """The 500 full greedy traces of the reasoner on data/synthetic/test.jsonl (the bench's
    record, kept in the repository) hold rechecks but no loop."""
    path = ROOT / "studies/results/reasoner-synthetic500/traces.jsonl"
    traces = [json.loads(line) for line in path.open()]
    assert len(traces) == 500
    assert not [t["id"] for t in traces if find_loop(t["trace"]) is not None]


def test_an_answer_that_resumes_the_thinkings_loop_is_caught_at_a_copy_and_a_half() -> None:
    cycle = words(12)
    guard = LoopGuard(relapse=cycle)
    resumed = words(3) + cycle[5:] + cycle * 3  # any rotation, after a few tokens of its own
    hits = [i for i, t in enumerate(resumed) if guard.push(t) is not None]
    assert hits and hits[0] == 3 + 18 - 1  # 1.5 copies of 12, long before the 48-token span


def test_an_answer_that_echoes_part_of_the_loop_and_moves_on_is_not_a_relapse() -> None:
    cycle = words(12)
    echo = cycle[4:] + words(40)  # "35 marbles. The answer is 35" after "Each marble is 35 marbles."
    assert find_loop(echo, relapse=cycle) is None
    short = words(4)
    assert find_loop(words(3) + short * 3 + words(10), relapse=short) is None  # 12 tokens: under the 16-token floor
    assert find_loop(words(3) + short * 4, relapse=short) is not None
