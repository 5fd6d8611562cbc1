"""Widgets of the chat: one user message, one assistant message (thinking, answer, stats).

The assistant message is fed the runtime's events (``feed``) and renders the thinking as a
dimmed, collapsible block with each cue marked in place — green when the probe's score
cleared the threshold, cyan when it did not — and a marker where an exit cut the thinking.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content, Span
from textual.widgets import Collapsible, Markdown, Static

from lynx_edge.display import cue_marker, exit_words, readable_answer, stats_line, thinking_header
from lynx_edge.events import AnswerDelta, CueScored, Event, ExitTaken, Reply, ThinkingDelta, ToolCall


class UserMessage(Static):
    """What the user typed."""

    DEFAULT_CSS = """
    UserMessage { margin: 1 0 0 0; padding: 0 1; background: $boost; border-left: thick $accent; }
    """


class Note(Static):
    """Something that changed between replies (the model, the system prompt): shown and
    exported, never sent to the model."""

    DEFAULT_CSS = "Note { margin: 1 0 0 0; padding: 0 1; color: $text-muted; text-style: italic; }"


LIVE_LINES = 8  # lines of thinking shown while it streams
HIDDEN_CONTROLS = {c: None for c in [*range(32), 127] if c not in (9, 10)}  # tab and newline stay


class ThinkingBlock(Static):
    """The thinking with its marks: only its last ``LIVE_LINES`` lines while it streams, all of
    it once the reply is complete.

    Why a live tail: a box that keeps its height is repainted alone when tokens arrive, while a
    growing one makes Textual lay out the whole chat again on every update, and on a laptop
    that layout takes CPU from the model (the chat must not slow generation down).
    """

    DEFAULT_CSS = "ThinkingBlock { color: $text-muted; text-style: dim; padding: 0 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.shown = ""  # the thinking as displayed: text and marks
        self.marks: list[Span] = []
        self.live = False  # showing the live tail (a box of LIVE_LINES lines), not everything
        self.stale = False  # text added since the last repaint

    def add(self, text: str, style: str = "") -> None:
        text = text.translate(HIDDEN_CONTROLS)  # Content would drop them and shift the marks
        if style:
            self.marks.append(Span(len(self.shown), len(self.shown) + len(text), style))
        self.shown += text
        self.stale = True

    def show_tail(self) -> None:
        """Repaint the last lines, padded to LIVE_LINES: a layout only when the box first appears."""
        width = self.content_region.width or max(self.app.size.width - 8, 20)
        window = (LIVE_LINES + 1) * width
        # wrap from a line start when one is near, so the lines match the final full view
        start = self.shown.rfind("\n", max(0, len(self.shown) - 4 * window), max(0, len(self.shown) - window)) + 1
        if start == 0 and len(self.shown) > 4 * window:
            start = len(self.shown) - window
        lines = self._content(start).wrap(width)[-LIVE_LINES:]
        lines += [Content("")] * (LIVE_LINES - len(lines))
        self.update(Content("\n").join(lines), layout=not self.live)
        self.live, self.stale = True, False

    def show_all(self) -> None:
        """The whole thinking (once, when the reply is over)."""
        if self.live or self.stale:
            self.update(self._content(0))
            self.live, self.stale = False, False

    def _content(self, start: int) -> Content:
        marks = [Span(max(m.start - start, 0), m.end - start, m.style) for m in self.marks if m.end > start]
        return Content(self.shown[start:], marks)


class AssistantMessage(Vertical):
    """A reply as it streams: thinking (with cue marks), answer (Markdown), stats line.

    ``absorb`` folds events into the reply's data (a ``Reply``: what is saved) and ``feed``
    also draws them, so a reply whose widgets are already gone (the app is quitting) still
    saves every token.
    """

    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 1 0 0 0; }
    AssistantMessage Collapsible { padding: 0; border-top: none; background: transparent; }
    AssistantMessage Markdown { margin: 0; padding: 0 1; }
    AssistantMessage .stats { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, label: str = "Thinking", **kwargs) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.reply = Reply()
        self.measuring = False
        self.block = ThinkingBlock()
        self.fold = Collapsible(self.block, title=f"{label} …", collapsed=False)
        self.markdown = Markdown("")
        self.calls = Static("", classes="calls")
        self.stats = Static("", classes="stats")

    def compose(self) -> ComposeResult:
        yield self.fold
        yield self.markdown
        yield self.calls
        yield self.stats

    @property
    def result(self):  # noqa: ANN201 - GenerationResult | None
        return self.reply.result

    @property
    def savings(self):  # noqa: ANN201 - Savings | None
        return self.reply.savings

    @property
    def thinking_plain(self) -> str:
        """The thinking without marks, as stored and exported."""
        return self.reply.thinking

    @property
    def answer(self) -> str:
        return self.reply.answer

    def absorb(self, events: list[Event]) -> tuple[bool, str]:
        """Fold a batch of events into the reply; returns (thinking changed, new answer text)."""
        answer = ""
        thinking_changed = False
        for event in events:
            self.reply.fold(event)
            if isinstance(event, ThinkingDelta):
                self.block.add(event.text)
                thinking_changed = True
            elif isinstance(event, CueScored):
                self.block.add(cue_marker(event), "bold green" if event.decision == "exit" else "cyan")
                thinking_changed = True
            elif isinstance(event, ExitTaken):
                self.block.add(f"\n✂ {exit_words(event)}", "bold yellow")
                thinking_changed = True
            elif isinstance(event, AnswerDelta):
                answer += event.text
        return thinking_changed, answer

    async def feed(self, events: list[Event]) -> None:
        """Take a batch of events (the app drains them from the generation thread) and draw them."""
        thinking_changed, answer = self.absorb(events)
        if not self.is_attached:
            return
        if thinking_changed and self.result is None:
            self.block.show_tail()
        if answer:
            await self.markdown.append(answer)
        if self.result is not None:
            self.show_complete()

    def show_complete(self) -> None:
        """The reply is over (answered, cancelled or failed): all the thinking, the stats."""
        self.block.show_all()
        if self.result is None:
            return
        self.stats.update(self.stats_text)
        if self.answer:  # streamed as written; shown finished as an answer reads
            self.markdown.update(readable_answer(self.answer))
        if self.result.tool_calls:
            self.calls.update(calls_text(self.result.tool_calls))
        self.fold.title = self.header

    @property
    def header(self) -> str:
        """The thinking block's title once the reply is complete."""
        return thinking_header(self.result) if self.result else self.label

    @property
    def stats_text(self) -> str:
        return stats_line(self.result, self.savings, measuring=self.measuring) if self.result else ""

    def show_stored(self, thinking: str, answer: str, stats: str, header: str = "") -> None:
        """Render a message reopened from history (thinking folded)."""
        self.reply = Reply(thinking=thinking, answer=answer)
        self.block.add(thinking)
        self.block.show_all()
        self.markdown.update(readable_answer(answer))
        self.stats.update(stats)
        self.fold.title = header or self.label
        self.fold.collapsed = True


def calls_text(calls: tuple[ToolCall, ...]) -> str:
    """The calls a reply asks for, and how to answer them (nothing is run by lynx-edge)."""
    lines = [f"⚙ {c.name}({c.arguments_json})" for c in calls]
    lines.append("run it yourself and type  /result <what it returned>  (or type on to skip it)")
    return "\n".join(lines)
