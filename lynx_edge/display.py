"""How replies, savings and probe cards read to people (plain text; the CLI and the chat
style it their own way).

A saving is only called a saving when it is one: an exit whose answer ran longer than the
rest of the thinking would have "cost N tokens", and a saving measured against an un-exited
run that hit the token limit is a lower bound ("≥ N, full run capped at M").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lynx_edge.events import CueScored, ExitTaken, GenerationResult, Savings
from lynx_edge.runtime.conditions import conditions_words
from lynx_edge.runtime.onnx_probe import provider_for
from lynx_edge.runtime.probe_card import ProbeCard
from lynx_edge.runtime.rules import PROMISE_SENTENCES, entry_rule, promises_of, section


def fmt_threshold(value: float | None) -> str:
    if value is None:
        return "—"
    return "never" if value > 1 or math.isinf(value) else f"{value:.3f}"


def cue_marker(event: CueScored) -> str:
    """``⟨wait 0.412<0.870⟩``: the cue, its score against the threshold (or a trial's)."""
    if event.score is None:
        return f"⟨{event.cue}⟩"
    sign = "≥" if event.decision == "exit" else "<"
    if event.threshold is not None and event.threshold >= 1 and float(event.threshold).is_integer():
        return f"⟨{event.cue} {event.score:g}{sign}{event.threshold:g}⟩"  # a count (consistency's run length)
    return f"⟨{event.cue} {event.score:.3f}{sign}{fmt_threshold(event.threshold)}⟩"


def savings_text(savings: Savings) -> str:
    """A measured saving as what it is."""
    if savings.tokens_saved < 0:
        return f"the exit cost {-savings.tokens_saved} extra tok"
    if savings.capped:
        return f"saved ≥{savings.tokens_saved} tok (full run stopped at the {savings.natural_tokens}-token limit)"
    return f"saved {savings.tokens_saved} tok of {savings.natural_tokens}"


WINDOW_EXITS = ("budget", "loop")  # exits the runtime takes by itself, with no cue and no score


def exit_words(event: ExitTaken) -> str:
    """What an exit did, in words (the live marker of ``run`` and the chat)."""
    if event.policy == "budget":
        return f"thinking closed at token {event.token_index}: the thinking budget, or room for the answer"
    if event.policy == "loop":
        return f"thinking closed at token {event.token_index}: it was repeating itself in a loop"
    score = "" if event.score is None or event.threshold is None else f" {event.score:.3g} ≥ {event.threshold:.3g}"
    return f"thinking cut at '{event.cue}' ({event.policy}{score})"


def thinking_header(result: GenerationResult) -> str:
    """A reply's thinking in one title: how long and how much, where it was cut and why, and
    the risk level with whether it holds here ("Thought for 3.2 s · 122 tok · cut at 'Wait'
    (token 43) by the probe · α 0.02 at 90 % confidence (agreement)")."""
    t, e = result.tokens.thinking, result.exit
    if t == 0 and e is None:
        return "No thinking"
    parts = [f"Thought for {result.thinking_seconds:.1f} s", f"{t} tok"]
    if e is None:
        parts.append("thought to the end" if result.finish_reason != "length" else "stopped by the token limit")
    elif e.policy == "budget":
        parts.append(f"cut at token {e.token_index} by the budget")
    elif e.policy == "loop":
        parts.append(f"cut at token {e.token_index}: it was looping")
    else:
        parts.append(f"cut at '{e.cue}' (token {e.token_index}) by the {e.policy}")
    if result.alpha is not None:
        parts.append(risk_words(result))
    elif result.policy != "none":
        parts.append(f"{result.policy}: no guarantee")
    return " · ".join(parts)


def stats_line(result: GenerationResult, savings: Savings | None = None, *, measuring: bool = False) -> str:
    """One line: thinking/answer tokens, exit, probe calls or trials, speed, and the saving.

    ``measuring``: the saving is being measured, so say "saved —" until it is (never a guess);
    an answer that did not exit saved exactly nothing.
    """
    t = result.tokens
    parts = [f"thinking {t.thinking} tok", f"answer {t.answer} tok"]
    if result.exit and result.exit.policy in WINDOW_EXITS:
        parts.append(f"{result.exit.policy} exit at token {result.exit.token_index}")
    elif result.exit:
        score = f", p={result.exit.score:.3f}" if result.exit.score is not None and result.exit.score <= 1 else ""
        parts.append(f"exited at '{result.exit.cue}' ({result.exit.policy}, token {result.exit.token_index}{score})")
    else:
        parts.append("no exit")
    if "answer" in result.loops:
        parts.append("answer stopped: it was looping")
    if t.trial:
        parts.append(f"trials {t.trial} tok ({result.trial_seconds:.2f} s)")
    else:
        parts.append(f"probe calls {result.probe_calls}")
    parts.append(f"{result.tokens_per_second:.0f} tok/s")
    if savings:
        parts.append(savings_text(savings))
    elif measuring:
        parts.append("saved —" if result.exited else "saved 0 tok")
    if result.finish_reason != "stop":
        parts.append(result.finish_reason)
    if result.alpha is not None:
        parts.append(risk_words(result))
    if result.estimate_because:
        parts.append(f"not guaranteed here: {'; '.join(result.estimate_because)}")
    return " · ".join(parts)


def risk_words(result: GenerationResult) -> str:
    """The reply's risk level as a statement, or as an estimate where the request left the
    calibration's conditions: "α 0.02 at 90 % confidence (agreement)"."""
    if result.guarantee and result.risk:
        return result.risk
    kind = f" ({result.promise})" if result.promise else ""
    return f"α {result.alpha:g}{kind} estimated, not guaranteed"


@dataclass
class SessionTotals:
    """Answers, exits and tokens over a session, with savings and costs kept apart."""

    answers: int = 0
    exits: int = 0
    spent: int = 0
    saved: int = 0  # sum of measured positive savings
    cost: int = 0  # sum of tokens exits cost (answers that ran longer than the thinking would have)
    lower_bound: bool = False  # some saving was measured against a capped run

    def answered(self, result: GenerationResult) -> None:
        self.answers += 1
        self.exits += int(result.exited)
        self.spent += result.tokens.completion

    def measured(self, savings: Savings) -> None:
        if savings.tokens_saved >= 0:
            self.saved += savings.tokens_saved
        else:
            self.cost -= savings.tokens_saved
        self.lower_bound = self.lower_bound or savings.capped

    def line(self) -> str:
        net = self.saved - self.cost
        pct = net / (self.spent + net) if self.spent + net > 0 else 0.0
        bound = "≥" if self.lower_bound else ""
        text = (
            f"session: {self.answers} answers · {self.exits} exits · spent {self.spent} tok · "
            f"saved {bound}{self.saved} tok"
        )
        if self.cost:
            text += f" · exits cost {self.cost} tok · net {bound}{net} tok ({pct:.0%})"
        else:
            text += f" ({pct:.0%})"
        return text


def probe_device_words(card: ProbeCard) -> str:
    """Where the card's probe runs on this machine with ``--probe-device auto``."""
    if card.onnx_path is None:
        return "nothing (a trial-score card has no probe)"
    return f"{provider_for('auto', card.onnx_path)} here (--probe-device auto)"


def describe_card(card: ProbeCard) -> str:
    """A probe card for people: identity, features, the promise of every calibrated entry,
    and the test metrics as a table."""
    m = card.model
    lines = [
        f"probe      {card.label}  ({card.path})",
        f"model      {m['name']} · {m['architecture']} · n_embd {m['n_embd']} · {m['n_layer']} layers · "
        f"vocab {m['n_vocab']} · tokenizer {m['tokenizer_fingerprint']}"
        + (f" · weights {m['weights_fingerprint']}" if "weights_fingerprint" in m else ""),
        f"score      {card.score}" + ("" if card.score == "probe" else " (confidence of a trial answer at each cue)"),
    ]
    if card.score == "probe":
        lines.append(
            f"features   layers {card.layers or '—'}{' + final norm' if card.final_norm else ''} "
            f"→ {card.feature_dim} dims"
        )
        lines.append(f"onnx       {card.onnx} · runs on {probe_device_words(card)}")
    lines += [f"cues       {', '.join(repr(c) for c in card.cues)}", f"exit text  {card.exit_text!r}"]
    if card.default_alpha is not None:
        lines.append(f"default α  {card.default_alpha:g}")
    for one in card.all_condition_sets:
        lines += ["", f"holds in   {conditions_words(one['conditions'])}"]
        for promise in promises_of(one["calibration"]):
            _, part = section(one["calibration"], promise)
            probe = card.probes.get(promise, card.onnx) if card.onnx else "trial confidence"
            lines += [
                "",
                f"promise    {promise}{' (default)' if promise == promises_of(one['calibration'])[0] else ''}: "
                f"{PROMISE_SENTENCES[promise]} — scored by {probe}",
            ]
            if groups := part.get("groups"):
                lines.append(
                    f"calibrated per kind of problem ({part.get('population', '')}): "
                    + ", ".join(f"{g} {n}" for g, n in groups.items())
                    + " traces; the strictest certified threshold is bound"
                )
            lines += _calibration_lines(part, promise)
        if one["metrics"]:
            lines += ["", *metrics_table(one["metrics"])]
    if card.warning:
        lines.append(card.warning)
    return "\n".join(lines)


def _calibration_lines(calibration: dict, promise: str) -> list[str]:
    """Each calibrated entry: its threshold, its promise in words, the groups it does not cover."""
    lines = []
    for entry in calibration.get("per_cue", []):
        threshold = entry_rule("per-cue", entry, promise).threshold
        lines.append(
            f"per-cue    δ={entry['delta']:<5} exit if p ≥ {fmt_threshold(threshold):6}  {_promise(entry, 'δ')}"
            f"  (n_pos {entry.get('n_pos', '?')}, n_neg {entry.get('n_neg', '?')}){_uncertified(entry)}"
        )
    for entry in calibration.get("per_answer", []):
        threshold = entry_rule("per-answer", entry, promise).threshold
        lines.append(
            f"per-answer α={entry['alpha']:<5} exit if p ≥ {fmt_threshold(threshold):6}  {_promise(entry, 'α')}"
            f"{_uncertified(entry)}"
        )
    return lines


def _uncertified(entry: dict) -> str:
    """The groups too small to certify an entry's level, named."""
    if not entry.get("uncertified"):
        return ""
    sizes = entry.get("groups", {})
    named = [f"{g} ({sizes.get(g, {}).get('n', sizes.get(g, {}).get('n_neg', '?'))})" for g in entry["uncertified"]]
    return f"  — too few traces to certify: {', '.join(named)}"


def _promise(entry: dict, symbol: str) -> str:
    """Which promise an entry makes, in words."""
    promise = entry.get("promise", "marginal" if symbol == "δ" else "ltt")
    confidence = entry.get("confidence", 0.9)
    where = "at a losing cue of a random trace" if entry.get("unit") == "trace" else "per losing cue"
    if promise == "pac":
        return f"P(exit) ≤ {symbol} {where}, with probability {confidence:g} over calibration draws (PAC)"
    if promise == "marginal":
        return f"P(exit) ≤ {symbol} {where}, on average over calibration draws (split conformal)"
    return f"answers lost by exiting ≤ {symbol} with probability {confidence:g} (Learn-then-Test)"


def metrics_table(metrics: dict) -> list[str]:
    """The test split's figures and what each calibrated rule did there."""
    test = metrics.get("test") or {}
    out = [
        f"test split: {metrics.get('traces', {}).get('test', '?')} traces, AUC {test.get('auc')}, "
        f"accuracy without exits {test.get('accuracy_without_exits')}"
    ]
    rows = test.get("rules") or []
    if rows:
        out += [
            "| rule | per-cue rate | answers changed | spoilt | spoilt among full-right | exit rate | tokens saved |"
            " accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            per_cue = r.get("per_cue_rate")
            level = f"{'δ' if r['mode'] == 'per-cue' else 'α'}={r['level']:g}"
            accuracy = r["accuracy_with_exits"]
            out.append(
                f"| {r.get('promise', '')} {r['mode']} {level} | {'—' if per_cue is None else f'{per_cue:.1%}'} | "
                f"{_rate(r.get('changed'))} | {_rate(r.get('spoilt'))} | {_rate(r.get('spoilt_among_right'))} | "
                f"{r['exit_rate']:.1%} | {r['tokens_saved']:.1%} | {'—' if accuracy is None else f'{accuracy:.1%}'} |"
            )
    if ev := metrics.get("promise_check"):
        out.append(
            f"promise check: {ev['draws']} calibration sets of {ev['cal_size']} drawn from the {ev['pool_traces']} "
            "held-out traces; per kind and group, the share of the draws certifying that group whose rate "
            "(measured on the group's whole pool) exceeded its level, with a 95 % interval:"
        )
        for promise, groups in ev.get("promises", {}).items():
            for where, levels in groups.items():
                out.append(f"  {promise} · {where}: " + " · ".join(_check_cell(k, v) for k, v in levels.items()))
    return out


def _rate(rate: dict | None) -> str:
    if not rate or rate.get("rate") is None:
        return "—"
    return f"{rate['rate']:.1%} ({rate['hits']}/{rate['n']})"


def _check_cell(level: str, cell: dict) -> str:
    if cell.get("status") != "checked":
        return f"{level} {cell.get('status')}"
    low, high = cell["interval_95"]
    return f"{level} {cell['violation_frequency']:.1%} [{low:.1%}–{high:.1%}]"


_MATH = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|\$([^$\n]*\\[^$\n]*)\$", re.S)
_COMMAND = re.compile(r"\\[A-Za-z]+(?:\{[^{}]*\})*")
BOXED = "\\boxed{"


def readable_answer(text: str) -> str:
    """An answer as the chat shows it: ``\\boxed{51}`` as a bold **51**, and LaTeX that
    Markdown cannot render as code instead of stray backslashes (the raw text is what the
    history, the export and ``--json`` keep)."""
    out, at = [], 0
    while (start := text.find(BOXED, at)) >= 0:
        depth, end = 1, start + len(BOXED)
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:  # never closed (yet): the rest stays as written
            return "".join([*out, _code_math(text[at:start]), text[start:]])
        inner = text[start + len(BOXED) : end - 1].strip()
        out += [_code_math(text[at:start]), f"**{_code_math(inner)}**"]
        at = end
    out.append(_code_math(text[at:]))
    return "".join(out)


def _code_math(text: str) -> str:
    """LaTeX spans and commands as inline code (code already in the text is left alone)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside code
        plain = _MATH.sub(lambda m: "\0" + next(g for g in m.groups() if g is not None).strip() + "\0", parts[i])
        pieces = plain.split("\0")
        for j in range(0, len(pieces), 2):
            pieces[j] = _COMMAND.sub(lambda m: f"`{m.group(0)}`", pieces[j])
        parts[i] = "`".join(pieces)
    return "`".join(parts)
