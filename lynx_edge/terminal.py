"""``lynx-edge run`` on a terminal: thinking dimmed on stderr with each cue marked in place,
the answer on stdout, one stats line closing the run on stderr (or one JSON object)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from lynx_edge.display import cue_marker, exit_words, savings_text, stats_line
from lynx_edge.events import AnswerDelta, CueScored, Event, ExitTaken, Reply, ThinkingDelta


class RunPrinter:
    """Streams one run to the terminal, or collects it into one JSON object."""

    def __init__(self, *, as_json: bool, notices: list[str] | None = None) -> None:
        self.as_json = as_json
        self.notices = notices or []
        self.reply = Reply()
        self._err_at_line_start = True
        self._shown = False
        for line in self.notices:
            self._err(line + "\n", fg="yellow")

    def handle(self, event: Event) -> None:
        self.reply.fold(event)
        if isinstance(event, ThinkingDelta):
            self._err(event.text, dim=True)
        elif isinstance(event, CueScored):
            self._err(cue_marker(event), fg="cyan")
        elif isinstance(event, ExitTaken):
            what = exit_words(event)
            self._err(f"\n⟨exit: {what}⟩\n", fg="yellow")
        elif isinstance(event, AnswerDelta) and not self.as_json:
            self._newline()  # the answer starts on a fresh line, after the thinking
            click.echo(event.text, nl=False)
            self._shown = True

    def _err(self, text: str, **style: object) -> None:
        if not self.as_json and text:
            click.echo(click.style(text, **style), nl=False, err=True)
            self._err_at_line_start = text.endswith("\n")
            self._shown = True

    def _newline(self) -> None:
        if not self._err_at_line_start:
            click.echo(err=True)
            self._err_at_line_start = True

    def finish(self) -> None:
        result = self.reply.result
        if result is None:
            return
        if self.as_json:
            click.echo(json.dumps(self.json(), ensure_ascii=False))
            return
        if self.reply.answer:
            click.echo()
        for call in result.tool_calls:  # one JSON object per call, for the caller to run
            self._newline()
            click.echo(json.dumps(asdict(call), ensure_ascii=False))
        self._newline()
        click.echo(click.style(stats_line(result, self.reply.savings), dim=True), err=True)

    def json(self) -> dict[str, Any]:
        data = self.reply.result.to_dict()
        if self.reply.savings:
            data["savings"] = {**self.reply.savings.to_dict(), "text": savings_text(self.reply.savings)}
        data["notices"] = self.notices
        if self.reply.answer_logprobs:
            data["logprobs"] = [asdict(lp) for lp in self.reply.answer_logprobs]
        return data

    def interrupted(self) -> None:
        """Ctrl-C: keep what was generated on screen (or in the JSON), say it was interrupted."""
        if self.as_json:
            click.echo(
                json.dumps(
                    {"thinking": self.reply.thinking, "answer": self.reply.answer, "finish_reason": "interrupted"},
                    ensure_ascii=False,
                )
            )
        elif self.reply.answer:
            click.echo()
        self._newline()
        shown = self._shown or self.as_json
        click.echo("interrupted: partial output shown above" if shown else "interrupted before any output", err=True)
