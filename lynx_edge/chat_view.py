"""Widgets of the chat: one user message, one assistant message (thinking, answer, stats).

The assistant message is fed the runtime's events (``feed``) and renders the thinking as a
dimmed, collapsible block with each cue marked in place — green when the probe's score
cleared the threshold, grey when it did not — and a marker where an exit cut the thinking.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static

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
from lynx_edge.render import cue_marker, stats_line


class UserMessage(Static):
    """What the user typed."""

    DEFAULT_CSS = """
    UserMessage { margin: 1 0 0 0; padding: 0 1; background: $boost; border-left: thick $accent; }
    """


class AssistantMessage(Vertical):
    """A reply as it streams: thinking (with cue marks), answer (Markdown), stats line."""

    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 1 0 0 0; }
    AssistantMessage Collapsible { padding: 0; border-top: none; background: transparent; }
    AssistantMessage .thinking { color: $text-muted; padding: 0 1; }
    AssistantMessage Markdown { margin: 0; padding: 0 1; }
    AssistantMessage .stats { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, label: str = "Thinking", **kwargs) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.thinking_text = Text(style="dim")
        self.thinking_plain = ""  # without marks, as stored and exported
        self.answer = ""
        self.result: GenerationResult | None = None
        self.savings: Savings | None = None
        self.measuring = False
        self.cues: list[CueScored] = []

    def compose(self) -> ComposeResult:
        with Collapsible(title=self.label, collapsed=False):
            yield Static(self.thinking_text, classes="thinking")
        yield Markdown("")
        yield Static("", classes="stats")

    async def feed(self, events: list[Event]) -> None:
        """Apply a batch of events (the app drains them from the generation thread)."""
        answer = ""
        thinking_changed = False
        for event in events:
            if isinstance(event, ThinkingDelta):
                self.thinking_text.append(event.text)
                self.thinking_plain += event.text
                thinking_changed = True
            elif isinstance(event, CueScored):
                self.cues.append(event)
                passed = event.decision == "exit"
                self.thinking_text.append(cue_marker(event), style="bold green" if passed else "cyan")
                thinking_changed = True
            elif isinstance(event, ExitTaken):
                self.thinking_text.append(
                    f"\n✂ thinking cut here: exited at '{event.cue}' (p={event.score:.3f} ≥ {event.threshold:.3f})",
                    style="bold yellow",
                )
                thinking_changed = True
            elif isinstance(event, AnswerDelta):
                answer += event.text
            elif isinstance(event, Done):
                self.result = event.result
            elif isinstance(event, Savings):
                self.savings = event
        if thinking_changed:
            self.query_one(".thinking", Static).update(self.thinking_text)
        if answer:
            self.answer += answer
            await self.query_one(Markdown).append(answer)
        if self.result is not None:
            self.refresh_stats()

    def refresh_stats(self) -> None:
        if self.result is None:
            return
        self.query_one(".stats", Static).update(self.stats_text)
        t = self.result.tokens
        exit_note = f" · exited at '{self.result.exit['cue']}'" if self.result.exit else ""
        self.query_one(Collapsible).title = f"{self.label} · {t['thinking']} tok{exit_note}"

    @property
    def stats_text(self) -> str:
        return stats_line(self.result, self.savings, measuring=self.measuring) if self.result else ""

    def show_stored(self, thinking: str, answer: str, stats: str) -> None:
        """Render a message reopened from history (thinking folded)."""
        self.thinking_plain, self.answer = thinking, answer
        self.query_one(".thinking", Static).update(Text(thinking, style="dim"))
        self.query_one(Markdown).update(answer)
        self.query_one(".stats", Static).update(stats)
        self.query_one(Collapsible).collapsed = True
