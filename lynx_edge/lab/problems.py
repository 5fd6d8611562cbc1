"""Benchmark and corpus files: read a JSONL of problems into one ``Problem`` shape.

The probe toolkit (traces on a math corpus) and ``lynx-edge bench`` read the same files through
this module, so a problem is prompted and graded the same way in both. The format is told by
the fields of each record (GSM8K, MATH-500, AIME, CommonsenseQA, SVAMP, ASDiv, MAWPS); a
line that fits none is skipped and reported with its line number, never guessed.

A corpus of questions without answers is read too — JSONL records with only ``question`` or
``prompt``, or a plain-text file with one question per line — as problems with no gold: a
collection labels them with ``changes`` only (does exiting change the answer?), which needs
none, so a probe can be made for any model from any prompts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lynx_edge.errors import DataError
from lynx_edge.runtime.presets import MATH_INSTRUCTION

Kind = Literal["number", "integer", "math", "choice", "text"]
Split = Literal["train", "cal", "test"]

CHOICE_INSTRUCTION = "Answer with the letter of the correct choice, and put it within \\boxed{}."


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer (None: a question alone) and how answers compare."""

    id: str
    question: str  # the problem text as the user would type it (choices included)
    gold: str | None
    kind: Kind
    source: str  # the format it was read as: gsm8k, math, aime, csqa, svamp, asdiv, mawps, question
    group: str = ""  # the kind of problem it is calibrated with: its data file ("asdiv/test.jsonl")

    @property
    def prompt(self) -> str:
        """The user message the method's evaluation sends for this problem."""
        instruction = CHOICE_INSTRUCTION if self.kind == "choice" else MATH_INSTRUCTION
        return f"{self.question}\n{instruction}"

    def split(self, seed: int = 0, fractions: tuple[float, float] = (0.6, 0.2)) -> Split:
        """train / cal / test by a seeded hash of the question, so a problem never moves."""
        digest = hashlib.sha256(f"{seed}\x00{self.question.strip()}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < fractions[0]:
            return "train"
        return "cal" if u < fractions[0] + fractions[1] else "test"


@dataclass
class LoadedProblems:
    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)  # "line N: reason"

    def summary(self, path: Path) -> str | None:
        """One line about skipped records (None when every line was read)."""
        if not self.skipped:
            return None
        return (
            f"{path}: skipped {len(self.skipped)} line(s) ({self.skipped[0]}{', …' if len(self.skipped) > 1 else ''})"
        )


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _number_text(value: Any) -> str | None:
    """A gold number as canonical text: 43.0 → "43", "1,234" → "1234"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return f"{value:g}" if float(value) != int(value) else str(int(value))
    text = str(value).strip()
    match = _NUMBER.fullmatch(text.replace(" ", ""))
    if not match:
        return None
    return _number_text(float(text.replace(",", "").replace(" ", "")))


def _read(record: dict[str, Any], line: int, name: str) -> Problem:
    """One record as a Problem; raises ValueError naming what is missing."""
    rid = str(record.get("id", record.get("ID", record.get("unique_id", record.get("idx", line)))))
    if "input" in record and "target" in record:
        gold = _number_text(record["target"])
        if gold is None:
            raise ValueError(f"target {record['target']!r} is not a number")
        return Problem(f"mawps-{rid}", str(record["input"]).strip(), gold, "number", "mawps")
    if {"Body", "Question", "Answer"} <= record.keys():
        gold = _number_text(record["Answer"])
        if gold is None:
            raise ValueError(f"Answer {record['Answer']!r} is not a number")
        question = f"{str(record['Body']).strip()} {str(record['Question']).strip()}"
        return Problem(f"svamp-{rid}", question, gold, "number", "svamp")
    if {"body", "question", "answer"} <= record.keys():
        answer = str(record["answer"]).strip()
        head = re.sub(r"\s*\(.*\)\s*$", "", answer)
        gold = _number_text(head)
        question = f"{str(record['body']).strip()} {str(record['question']).strip()}"
        if gold is not None:
            return Problem(f"asdiv-{rid}", question, gold, "number", "asdiv")
        if not head:
            raise ValueError("empty answer")
        return Problem(f"asdiv-{rid}", question, head, "text", "asdiv")
    question = record.get("question")
    if isinstance(question, dict) and "answerKey" in record:
        stem, choices = question.get("stem"), question.get("choices")
        if not stem or not isinstance(choices, list) or not choices:
            raise ValueError("question needs a stem and choices")
        lines = [f"({c['label']}) {c['text']}" for c in choices]
        text = f"{stem.strip()}\n" + "\n".join(lines)
        return Problem(f"csqa-{rid}", text, str(record["answerKey"]).strip().upper(), "choice", "csqa")
    if isinstance(question, str) and "answer" in record and "problem" not in record:
        if "####" not in str(record["answer"]):
            raise ValueError("answer has no '#### n' line (GSM8K format)")
        gold = _number_text(str(record["answer"]).rsplit("####", 1)[1])
        if gold is None:
            raise ValueError("the number after #### cannot be read")
        return Problem(f"gsm8k-{rid}", question.strip(), gold, "number", "gsm8k")
    if "problem" in record and "answer" in record:
        answer = str(record["answer"]).strip()
        if not answer:
            raise ValueError("empty answer")
        if re.fullmatch(r"\d+", answer) and "unique_id" not in record:
            return Problem(f"aime-{rid}", str(record["problem"]).strip(), str(int(answer)), "integer", "aime")
        return Problem(f"math-{rid}", str(record["problem"]).strip(), answer, "math", "math")
    alone = record.get("question", record.get("prompt"))
    if isinstance(alone, str) and alone.strip() and not {"answer", "target", "Answer", "answerKey"} & record.keys():
        return Problem(f"question-{rid}", alone.strip(), None, "text", "question")
    raise ValueError(
        "fields fit no known format (GSM8K question/answer, MATH problem/answer, "
        "CommonsenseQA question.stem/answerKey, SVAMP Body/Question/Answer, "
        "ASDiv body/question/answer, MAWPS input/target, or a question/prompt alone)"
    )


PLAIN_TEXT = (".txt", ".text")  # files read as one question per line


def load_problems(path: str | Path) -> LoadedProblems:
    """All problems of a JSONL file (or a .txt of questions, one per line); bad lines are
    skipped and listed, an unreadable or empty file is an error that names the file. Each
    problem's group is the file it came from."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}: pass --data PATH to a JSONL file")
    loaded = LoadedProblems([])
    plain = path.suffix.lower() in PLAIN_TEXT
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if plain:  # one question per line
                loaded.problems.append(Problem(f"question-{number}", line.strip(), None, "text", "question"))
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                loaded.problems.append(_read(record, number, path.stem))
            except (ValueError, KeyError, TypeError) as exc:
                loaded.skipped.append(f"line {number}: {exc}")
    if not loaded.problems:
        first = loaded.skipped[0] if loaded.skipped else "the file is empty"
        raise DataError(f"{path} holds no usable problems ({first}): pass a JSONL in a supported format")
    label = data_label(path)
    loaded.problems = [replace(p, group=label) for p in loaded.problems]
    return loaded


def data_label(path: str | Path) -> str:
    """A data file as runs record it: its folder and name ("svamp/test.jsonl"), never a path of
    this machine."""
    return "/".join(Path(path).parts[-2:])


def trace_seed(seed: int, problem_id: str) -> int:
    """The sampling seed of one problem's trace: the same problem gets the same trace in the
    probe toolkit and in ``lynx-edge bench``, whatever else is in the run."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def order(problems: Sequence[Problem], seed: int) -> list[Problem]:
    """A seeded shuffle, so ``--limit`` takes a mix of every file passed."""
    return sorted(problems, key=lambda p: hashlib.sha256(f"{seed}/{p.id}".encode()).digest())


def load_many(paths: Iterable[str | Path]) -> tuple[list[Problem], list[str]]:
    """Problems from several files and skip summaries. Every problem is kept: an id already
    taken by an earlier file is namespaced with its own file ("synthetic/test.jsonl#gsm8k-7"),
    and a note says how many were; the same file named twice is an error."""
    problems: dict[str, Problem] = {}
    origin: dict[str, str] = {}
    notes = []
    seen_files: set[Path] = set()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen_files:
            raise DataError(f"{path} is named twice: pass each data file once")
        seen_files.add(resolved)
        loaded = load_problems(path)
        label, renamed, clashes = data_label(path), 0, set()
        for p in loaded.problems:
            if p.id in problems and origin[p.id] == label:
                raise DataError(f"{path} holds problem id {p.id} twice: give its records unique ids")
            if p.id in problems:
                clashes.add(origin[p.id])
                p = replace(p, id=f"{label}#{p.id}")
                renamed += 1
            problems[p.id] = p
            origin[p.id] = label
        if renamed:
            notes.append(
                f"{path}: {renamed} problem id(s) also used in {', '.join(sorted(clashes))}: kept as {label}#ID"
            )
        if note := loaded.summary(Path(path)):
            notes.append(note)
    return list(problems.values()), notes
