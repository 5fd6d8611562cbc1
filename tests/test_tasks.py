"""Corpus and benchmark loaders on the shared data files, and their bad-input paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from lynx_edge.errors import DataError
from lynx_edge.tasks import load_many, load_problems

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("name", "source", "kind", "gold"),
    [
        ("samples/gsm8k-test.first20.jsonl", "gsm8k", "number", "18"),
        ("samples/math500.first20.jsonl", "math", "math", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("samples/aime24.first3.jsonl", "aime", "integer", "204"),
        ("samples/commonsenseqa.first20.jsonl", "csqa", "choice", "A"),
        ("svamp/test.jsonl", "svamp", "number", "145"),
        ("asdiv/test.jsonl", "asdiv", "number", "9"),
        ("mawps/test.jsonl", "mawps", "number", "43"),
    ],
)
def test_shared_files_load(name: str, source: str, kind: str, gold: str) -> None:
    loaded = load_problems(DATA / name)
    first = loaded.problems[0]
    assert (first.source, first.kind, first.gold) == (source, kind, gold)
    assert not [s for s in loaded.skipped if source != "asdiv"]


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
    path.write_text('{"input": "1 + 1?", "target": 2}\n{"foo": 1}\nnot json\n{"question": "q", "answer": "no marker"}\n')
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
    problems, notes = load_many([DATA / "svamp/test.jsonl", DATA / "mawps/test.jsonl"])
    assert len(problems) == 3065 and len({p.id for p in problems}) == 3065
