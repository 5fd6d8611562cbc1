"""Grade a model's answer against gold: one implementation for probe labels and benchmarks.

The answer is the last ``\\boxed{…}`` (balanced braces), else what follows "the answer is",
else the last number. Numbers compare with a relative tolerance (fractions, percents,
thousands separators and LaTeX wrappers understood); MATH answers are normalised LaTeX,
compared as strings, as numbers, element-wise as tuples, then by SymPy equivalence; multiple
choice compares letters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lynx_edge.lab.problems import Kind

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


@dataclass(frozen=True)
class Grade:
    extracted: str | None  # what was read as the answer (None: nothing to read)
    correct: bool | None  # None: no gold answer to grade against


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` or ``\\fbox{…}`` with balanced braces.

    An unclosed box (an answer cut at its token cap) yields what was written inside it.
    """
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return text[start:].strip() or None


def extract_answer(text: str) -> str | None:
    """The answer a response commits to (see the module docstring for the order)."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    said = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?(?:\.\s|\.$|\n|$)", text, flags=re.IGNORECASE)
    if said:
        return said[-1].strip()
    numbers = re.findall(_NUM, text)
    return numbers[-1] if numbers else None


def _strip_latex(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|mathbf|textbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ ", "", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "%").replace("\\$", "")
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5" → "5"
    return s.strip().rstrip(".").strip()


def to_number(text: str) -> float | None:
    """A number from answer text: 1,234 · 3/4 · \\frac{3}{4} · 50% · $5 · 5 (apples)."""
    s = _strip_latex(text).replace(" ", "")
    percent = s.endswith("%")
    s = s.rstrip("%")
    frac = re.fullmatch(r"(-?)\\frac\{?(-?\d+(?:\.\d+)?)\}?\{?(-?\d+(?:\.\d+)?)\}?", s)
    if frac:
        den = float(frac.group(3))
        value = (-1 if frac.group(1) else 1) * float(frac.group(2)) / den if den else None
    elif m := re.fullmatch(r"(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)", s):
        value = float(m.group(1)) / float(m.group(2)) if float(m.group(2)) else None
    else:
        m = re.match(_NUM, s)
        if not m or not _is_number_with_unit(s, m.end()):
            return None
        value = float(m.group(0).replace(",", ""))
    if value is None:
        return None
    return value / 100 if percent else value


def _is_number_with_unit(s: str, end: int) -> bool:
    """ "12", "12dollars", "12(apples)" are numbers; "12+x" or "3:30" are not."""
    rest = s[end:]
    return not rest or bool(re.fullmatch(r"[a-zA-Z()\s.]*", rest))


def numbers_equal(a: float, b: float) -> bool:
    """Integers compare exactly (10001 is not 10000); other numbers within a relative 1e-4,
    so a rounded fraction or percent still counts."""
    if a == int(a) and b == int(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)


def _number_matches(pred: str, gold: str) -> bool:
    g = to_number(gold)
    p = to_number(pred)
    if g is None or p is None:
        return False
    if numbers_equal(p, g):
        return True
    # "50%" for a gold of 50, and "0.5" for a gold of 50%: both readings are accepted
    return "%" in pred and numbers_equal(p * 100, g)


def _split_tuple(s: str) -> list[str] | None:
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        parts, depth, cur = [], 0, ""
        for ch in s[1:-1]:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch in "({["
            depth -= ch in ")}]"
            cur += ch
        parts.append(cur)
        return [p.strip() for p in parts] if len(parts) > 1 else None
    return None


def _latex_to_sympy(s: str) -> str:
    s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    s = re.sub(r"\\sqrt(\d+)", r"sqrt(\1)", s)
    s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    s = s.replace("{", "(").replace("}", ")")
    return s


def _sympy_equal(a: str, b: str) -> bool:
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transforms = (*standard_transformations, implicit_multiplication_application)
    try:
        ea = parse_expr(_latex_to_sympy(a), transformations=transforms, evaluate=True)
        eb = parse_expr(_latex_to_sympy(b), transformations=transforms, evaluate=True)
        return bool(sympy.simplify(ea - eb) == 0)
    except Exception:  # noqa: BLE001 — SymPy raises many kinds on text it cannot read
        return False


def math_equal(pred: str, gold: str) -> bool:
    """MATH-style equivalence: normalised text, numbers, tuples, then SymPy."""
    p, g = _strip_latex(pred), _strip_latex(gold)
    if p.replace(" ", "") == g.replace(" ", ""):
        return True
    if (pn := to_number(p)) is not None and (gn := to_number(g)) is not None:
        return numbers_equal(pn, gn)
    pt, gt = _split_tuple(p.replace(" ", "")), _split_tuple(g.replace(" ", ""))
    if pt is not None or gt is not None:
        return pt is not None and gt is not None and len(pt) == len(gt) and all(map(math_equal, pt, gt))
    return _sympy_equal(p, g)


def _choice_letter(pred: str) -> str | None:
    s = _strip_latex(pred).strip().strip("()").strip()
    m = re.match(r"([A-Ea-e])(?:\b|\))", s)
    return m.group(1).upper() if m else None


def same_answer(a: str | None, b: str | None, kind: Kind) -> bool:
    """Whether two extracted answers to one question are the same answer, compared as answers
    to a gold of that kind are (numbers within tolerance, normalised LaTeX, letters): the
    ``changes`` label, which needs no gold. Two answers that both say nothing agree."""
    if a is None or b is None:
        return a is None and b is None
    if kind == "choice":
        return _choice_letter(a) == _choice_letter(b)
    if (na := to_number(a)) is not None and (nb := to_number(b)) is not None:
        return numbers_equal(na, nb)
    if kind == "math":
        return math_equal(a, b)
    return _strip_latex(a).lower().replace(" ", "") == _strip_latex(b).lower().replace(" ", "")


def read_answer(response: str, kind: Kind) -> str | None:
    """The answer ``response`` commits to, read as ``grade`` reads it (no gold needed)."""
    if kind == "choice":
        return grade(response, "", kind).extracted
    return extract_answer(response)


def grade(response: str, gold: str, kind: Kind) -> Grade:
    """Read the answer from ``response`` and compare it with ``gold``."""
    if kind == "choice":
        boxed = last_boxed(response)
        letter = _choice_letter(boxed) if boxed else None
        if letter is None:
            said = re.findall(r"answer is\s*\(?([A-E])\b", response)
            letters = said or re.findall(r"\(([A-E])\)|\b([A-E])\b", response)
            letter = (letters[-1] if isinstance(letters[-1], str) else "".join(letters[-1])) if letters else None
        return Grade(letter, letter == gold.upper())
    extracted = extract_answer(response)
    if extracted is None:
        return Grade(None, False)
    if kind == "number":
        return Grade(extracted, _number_matches(extracted, gold))
    if kind == "integer":
        value = to_number(extracted)
        return Grade(extracted, value is not None and value == int(gold))
    if kind == "math":
        return Grade(extracted, math_equal(extracted, gold))
    return Grade(extracted, _strip_latex(extracted).lower() == gold.strip().lower())
