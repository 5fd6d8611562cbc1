"""Plain-terminal rendering of events and probe cards (for ``lynx-edge run`` and ``probe info``).

Thinking goes to stderr, dimmed, with each cue marked in place as ``⟨cue p/threshold⟩``;
the answer goes to stdout; one stats line closes the run on stderr.
"""

from __future__ import annotations

import json
import math

import click

from lynx_edge.events import (
    AnswerDelta,
    CueScored,
    Done,
    Event,
    ExitTaken,
    GenerationResult,
    Savings,
    ThinkingDelta,
)
from lynx_edge.probe_card import ProbeCard


def fmt_threshold(value: float | None) -> str:
    if value is None:
        return "—"
    return "never" if value > 1 or math.isinf(value) else f"{value:.3f}"


def cue_marker(event: CueScored) -> str:
    if event.score is None:
        return f"⟨{event.cue}⟩"
    sign = "≥" if event.decision == "exit" else "<"
    return f"⟨{event.cue} {event.score:.3f}{sign}{fmt_threshold(event.threshold)}⟩"


def stats_line(result: GenerationResult, savings: Savings | None = None, *, measuring: bool = False) -> str:
    """One line: thinking/answer tokens, exit, probe calls, speed, and the saving if measured.

    ``measuring``: the saving is being measured, so say "saved —" until it is (never a guess);
    an answer that did not exit saved exactly nothing.
    """
    t = result.tokens
    parts = [f"thinking {t['thinking']} tok", f"answer {t['answer']} tok"]
    if result.exit:
        parts.append(f"exited at '{result.exit['cue']}' (token {result.exit['token_index']}, p={result.exit['score']:.3f})")
    else:
        parts.append("no exit")
    parts.append(f"probe calls {result.probe_calls}")
    parts.append(f"{result.tokens_per_second:.0f} tok/s")
    if savings:
        bound = "≥" if savings.capped else ""
        parts.append(f"saved {bound}{savings.tokens_saved} tok of {savings.natural_tokens}")
    elif measuring:
        parts.append("saved —" if result.exited else "saved 0 tok")
    if result.finish_reason not in ("stop",):
        parts.append(result.finish_reason)
    return " · ".join(parts)


class RunPrinter:
    """Streams one run to the terminal, or collects it into one JSON object."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.result: GenerationResult | None = None
        self.savings: Savings | None = None
        self.thinking: list[str] = []
        self.answer: list[str] = []
        self._answer_started = False

    def handle(self, event: Event) -> None:
        if isinstance(event, ThinkingDelta):
            self.thinking.append(event.text)
            self._err(event.text, dim=True)
        elif isinstance(event, CueScored):
            self._err(cue_marker(event), fg="cyan")
        elif isinstance(event, ExitTaken):
            self._err(f"\n⟨exit: thinking cut at '{event.cue}'⟩\n", fg="yellow")
        elif isinstance(event, AnswerDelta):
            if not self._answer_started and not self.as_json:
                click.echo(err=True)
            self._answer_started = True
            self.answer.append(event.text)
            if not self.as_json:
                click.echo(event.text, nl=False)
        elif isinstance(event, Done):
            self.result = event.result
        elif isinstance(event, Savings):
            self.savings = event

    def _err(self, text: str, **style: object) -> None:
        if not self.as_json:
            click.echo(click.style(text, **style), nl=False, err=True)

    def finish(self) -> None:
        if self.result is None:
            return
        if self.as_json:
            click.echo(json.dumps(self.result.to_dict(), ensure_ascii=False))
            return
        if self._answer_started:
            click.echo()
        click.echo(click.style(stats_line(self.result, self.savings), dim=True), err=True)

    def interrupted(self) -> None:
        """Ctrl-C: show what was generated so far, then say it was interrupted."""
        if self.as_json:
            click.echo(
                json.dumps(
                    {"thinking": "".join(self.thinking), "answer": "".join(self.answer), "finish_reason": "interrupted"},
                    ensure_ascii=False,
                )
            )
        else:
            if self._answer_started:
                click.echo()
        click.echo("interrupted: partial output shown above", err=True)


def describe_card(card: ProbeCard) -> str:
    """Human-readable summary of a probe card."""
    m = card.model
    lines = [
        f"probe      {card.label}  ({card.path})",
        f"model      {m['name']} · {m['architecture']} · n_embd {m['n_embd']} · {m['n_layer']} layers · vocab {m['n_vocab']} · tokenizer {m['tokenizer_fingerprint']}",
        f"features   layers {card.layers or '—'}{' + final norm' if card.final_norm else ''} → {card.feature_dim} dims",
        f"cues       {', '.join(repr(c) for c in card.cues)}",
        f"exit text  {card.exit_text!r}",
        f"onnx       {card.onnx}",
    ]
    for entry in card.calibration.get("per_cue", []):
        lines.append(
            f"per-cue    δ={entry['delta']:<5} exit if p ≥ {fmt_threshold(_per_cue_threshold(entry))}"
            f"  (n_pos {entry.get('n_pos', '?')}, n_neg {entry.get('n_neg', '?')})"
        )
    for entry in card.calibration.get("per_answer", []):
        threshold = math.inf if entry["threshold"] is None else entry["threshold"]
        lines.append(f"per-answer α={entry['alpha']:<5} exit if p ≥ {fmt_threshold(threshold)}")
    if card.metrics:
        lines.append("metrics    " + json.dumps(card.metrics, sort_keys=True))
    return "\n".join(lines)


def _per_cue_threshold(entry: dict) -> float:
    from lynx_edge.conformal import per_cue_threshold

    def q(v: float | None) -> float:
        return math.inf if v is None else v

    return per_cue_threshold(q(entry["q_pos"]), q(entry["q_neg"]))
