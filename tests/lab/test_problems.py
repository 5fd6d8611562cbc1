"""Corpus and benchmark loaders on the data files shipped in data/, and their bad-input paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from lynx_edge.errors import DataError
from lynx_edge.lab.problems import load_many, load_problems

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize(
    ("name", "source", "kind", "gold", "count"),
    [
        ("samples/gsm8k-test.first20.jsonl", "gsm8k", "number", "18", 20),
        ("samples/gsm8k-train.first20.jsonl", "gsm8k", "number", "72", 20),
        ("samples/math500.first20.jsonl", "math", "math", "\\left( 3, \\frac{\\pi}{2} \\right)", 20),
        ("samples/aime24.first3.jsonl", "aime", "integer", "204", 3),
        ("samples/commonsenseqa.first20.jsonl", "csqa", "choice", "A", 20),
        ("svamp/test.jsonl", "svamp", "number", "145", 1000),
        ("samples/asdiv.first20.jsonl", "asdiv", "number", "9", 20),
        ("samples/mawps.first20.jsonl", "mawps", "number", "43", 20),
        ("synthetic/train.jsonl", "gsm8k", "number", "150", 4000),
        ("synthetic/test.jsonl", "gsm8k", "number", "16", 1000),
    ],
)
def test_shipped_files_load(name: str, source: str, kind: str, gold: str, count: int) -> None:
    """Every shipped file reads whole, in the format its fields tell."""
    loaded = load_problems(DATA / name)
    first = loaded.problems[0]
    assert (first.source, first.kind, first.gold) == (source, kind, gold)
    assert len(loaded.problems) == count and loaded.skipped == []


def test_prompts_follow_the_method() -> None:
    csqa = load_problems(DATA / "samples/commonsenseqa.first20.jsonl").problems[0]
    assert "(A) bank" in csqa.prompt and "letter" in csqa.prompt
    math = load_problems(DATA / "samples/math500.first20.jsonl").problems[0]
    assert math.prompt.endswith("put your final answer within \\boxed{}.")


def test_split_is_a_stable_seeded_hash() -> None:
    problems = load_problems(DATA / "svamp/test.jsonl").problems
    splits = [p.split(seed=0) for p in problems]
    assert splits == [p.split(seed=0) for p in problems]
    assert {s: splits.count(s) for s in set(splits)}.keys() == {"train", "cal", "test"}
    assert 0.5 < splits.count("train") / len(splits) < 0.7
    assert splits != [p.split(seed=1) for p in problems]


def test_bad_lines_are_skipped_and_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"input": "1 + 1?", "target": 2}\n{"foo": 1}\nnot json\n{"question": "q", "answer": "no marker"}\n'
    )
    loaded = load_problems(path)
    assert len(loaded.problems) == 1
    assert [s.split(":")[0] for s in loaded.skipped] == ["line 2", "line 3", "line 4"]
    assert "skipped 3 line(s)" in loaded.summary(path)


def test_unusable_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="no usable problems .*line 1"):
        load_problems(path)
    with pytest.raises(DataError, match="no data file"):
        load_problems(tmp_path / "missing.jsonl")


def test_many_files_keep_ids_unique() -> None:
    problems, notes = load_many([DATA / "svamp/test.jsonl", DATA / "samples/mawps.first20.jsonl"])
    assert len(problems) == 1020 and len({p.id for p in problems}) == 1020 and notes == []


def test_colliding_ids_across_files_are_namespaced_not_dropped() -> None:
    """synthetic train and test both number their records from 0: every problem is kept."""
    problems, notes = load_many([DATA / "synthetic/train.jsonl", DATA / "synthetic/test.jsonl"])
    assert len(problems) == 5000 and len({p.id for p in problems}) == 5000
    assert len(notes) == 1 and "1000 problem id(s) also used in synthetic/train.jsonl" in notes[0]
    assert notes[0].endswith("kept as synthetic/test.jsonl#ID")
    assert any(p.id == "synthetic/test.jsonl#gsm8k-0" for p in problems)


def test_duplicate_ids_within_a_file_and_a_file_named_twice_are_errors(tmp_path: Path) -> None:
    twice = tmp_path / "twice.jsonl"
    record = '{"input": "1 + 1?", "target": 2, "id": 7}\n'
    twice.write_text(record * 2)
    with pytest.raises(DataError, match="holds problem id mawps-7 twice"):
        load_many([twice])
    once = tmp_path / "once.jsonl"
    once.write_text(record)
    with pytest.raises(DataError, match="named twice"):
        load_many([once, once])
