"""One chat on screen: its log, its meter, its prompt box, and everything the chat holds.

The ``Conversation`` widget owns a chat's state — the context sent to the model, the waiting
tool calls, the newest exchange and reply (what edit, copy and regenerate act on), the stored
history — and its replies as they stream (``replies.ReplyFeed``). The app routes keys and
settings to it and hands it the events of each reply it starts; the conversation never picks
a model or a setting itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Static

from lynx_edge.chat.replies import ReplyFeed, Turn
from lynx_edge.chat.store import ChatStore, StoredMessage, chat_markdown, message_markdown
from lynx_edge.chat.view import AssistantMessage, Note, UserMessage
from lynx_edge.display import SessionTotals
from lynx_edge.errors import LynxError
from lynx_edge.events import Done, Event, GenerationResult, Savings, ToolCall
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.model_thread import ModelThread
from lynx_edge.runtime.tool_calls import assistant_turn, tool_turn

DECLINED = "(not run: the user went on without running this call)"
CONVERSATION = ("user", "assistant", "tool")  # the stored roles a model is sent


def stored_turn(message: StoredMessage) -> dict[str, Any]:
    """A stored message as context again (tool calls and results included)."""
    if message.role == "tool":
        return tool_turn(message.stats.get("tool_call_id", ""), message.content)
    if message.role == "assistant":
        return assistant_turn(message.content, [ToolCall(**c) for c in message.stats.get("tool_calls", [])])
    return {"role": message.role, "content": message.content}


def meter_line(result: GenerationResult | None, n_ctx: int | None, totals: SessionTotals) -> str:
    """The footer meter: what the last reply used of the context, how much of that was
    thinking, and the session's tally."""
    if result is None or not n_ctx:
        return totals.line()
    used = result.tokens.prompt + result.tokens.completion
    share = result.tokens.thinking / used if used else 0.0
    return f"context {used}/{n_ctx} ({used / n_ctx:.0%}) · thinking {share:.0%} of it · {totals.line()}"


@dataclass
class Exchange:
    """The newest prompt in the chat: where it sits in the context, its row, its widget
    (what editing the last prompt takes back)."""

    at: int  # its index in the context
    message_id: int
    widget: Widget
    text: str


@dataclass
class LastReply:
    """The newest reply in the chat (what copy and regenerate act on)."""

    message_id: int
    view: AssistantMessage


class Conversation(Vertical):
    """A chat: the log of messages, the meter line, the prompt box."""

    def __init__(
        self, store: ChatStore, model: ModelThread, cancel: Callable[[], None], *, measure_savings: bool
    ) -> None:
        """``cancel`` stops what the model thread runs (the engine's cancel)."""
        super().__init__(id="conversation")
        self.store = store
        self.feed = ReplyFeed(model)
        self.cancel = cancel
        self.measure_savings = measure_savings
        self.chat_id: int | None = None
        self.history: list[dict[str, Any]] = []  # user/assistant answers (and tool turns) sent as context
        self.pending_calls: list[ToolCall] = []  # the newest reply's calls still waiting for a result
        self.turn: Turn | None = None  # the newest chat reply (generating, measuring or done)
        self.exchange: Exchange | None = None
        self.last_reply: LastReply | None = None
        self.last_prompt: str | None = None
        self.editing = False  # the box holds the last prompt, to be resent in its place
        self._answering = False
        self.totals = SessionTotals()
        self.last_result: GenerationResult | None = None  # the newest reply's (for the meter)
        self.n_ctx: int | None = None  # the loaded model's context, for the meter
        self.meter_prefix = ""  # what the app says before the meter (a model loading)

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="log")
        yield Static("", id="totals")
        yield Input(placeholder="loading the model …", id="prompt")

    def on_mount(self) -> None:
        self.feed.ui_cpu_mark = time.thread_time()
        self.set_timer(self.feed.delay, self.drain)

    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    @property
    def box(self) -> Input:
        return self.query_one("#prompt", Input)

    @property
    def answering(self) -> bool:
        """A reply is being written (Esc cancels it)."""
        return self._answering

    @answering.setter
    def answering(self, value: bool) -> None:
        self._answering = value
        # a blinking cursor repaints twice a second: CPU the model can use while it writes
        self.box.cursor_blink = not value
        self.app.refresh_bindings()  # the actions that wait for the answer show as such

    def show_meter(self) -> None:
        line = meter_line(self.last_result, self.n_ctx, self.totals)
        self.query_one("#totals", Static).update(f"{self.meter_prefix}{line}")

    def note(self, text: str) -> None:
        """Say in the chat (and its history) that something changed between replies."""
        self.log_view.mount(Note(text))
        if self.chat_id is not None:
            self.store.add(self.chat_id, StoredMessage("note", text))

    # ---- prompts and replies -----------------------------------------------------------
    def context_for(self, text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The context a prompt is sent with (in place of the last exchange when editing it),
        and the tool turns it adds (typing on declines every waiting call)."""
        if self.editing and self.exchange is not None:
            return [*self.history[: self.exchange.at], {"role": "user", "content": text}], []
        turns = self.tool_turns(None, take=False)
        return [*self.history, *turns, {"role": "user", "content": text}], turns

    async def ask(
        self,
        text: str,
        events: Iterator[Event],
        turns: list[dict[str, Any]],
        made_with: dict[str, Any],
        start: tuple[Engine, str],
    ) -> None:
        """Show a sent prompt and stream its reply: ``turns`` are the tool turns it sent;
        ``start`` (the engine, the system prompt) begins the stored chat at its first message."""
        if self.editing and self.exchange is not None:
            await self.take_back(self.exchange)
        self.pending_calls = self.pending_calls[len(turns) :]
        self.editing = False
        self.last_prompt = text
        if self.chat_id is None:
            engine, system = start
            self.chat_id = self.store.new_chat(text, engine.model_name, engine.probe_name)
            if system:
                self.store.add(self.chat_id, StoredMessage("system", system))
        for turn in turns:
            stats = {"tool_call_id": turn["tool_call_id"]}
            self.store.add(self.chat_id, StoredMessage("tool", turn["content"], stats=stats))
        self.history += turns
        widget = UserMessage(text)
        message_id = self.store.add(self.chat_id, StoredMessage("user", text))
        self.exchange = Exchange(len(self.history), message_id, widget, text)
        self.history.append({"role": "user", "content": text})
        await self.reply(events, made_with, widget)

    def tool_turns(self, result: str | None, *, take: bool = True) -> list[dict[str, Any]]:
        """The tool turns a message makes: ``/result`` answers the first waiting call; typing
        on declines every waiting call (the model is told it was not run)."""
        calls = self.pending_calls[:1] if result is not None else self.pending_calls
        if take:
            self.pending_calls = self.pending_calls[len(calls) :]
        content = result if result is not None else DECLINED
        return [tool_turn(c.id, content, c.name) for c in calls]

    async def add_result(self, result: str) -> None:
        """``/result``: the first waiting call's result goes into the context."""
        turns = self.tool_turns(result)
        self.history += turns
        self.store.add(self.chat_id, StoredMessage("tool", result, stats={"tool_call_id": turns[0]["tool_call_id"]}))
        await self.log_view.mount(UserMessage(f"result: {result}"))

    async def reply(self, events: Iterator[Event], made_with: dict[str, Any], *before: Widget) -> None:
        """Show a new reply (after ``before``: the prompt) and start streaming it."""
        stored = StoredMessage("assistant", "")
        self.store.add(self.chat_id, stored)
        self.answering = True
        view = AssistantMessage()
        view.measuring = self.measure_savings
        await self.log_view.mount(*before, view)
        self.log_view.scroll_end(animate=False)
        self.last_reply = LastReply(stored.id, view)
        # start once the new widgets are laid out, so mounting them does not compete with the
        # first tokens for the CPU
        self.call_after_refresh(self.begin, Turn(view, stored, made_with=made_with), events)

    def begin(self, turn: Turn, events: Iterator[Event]) -> None:
        """Stream ``events`` into ``turn`` (a reply, or a comparison's rerun)."""
        self.feed.begin(turn, events, self.cancel)
        if not turn.compare:
            self.turn = turn
        self.answering = True

    # ---- applying events ---------------------------------------------------------------
    async def drain(self) -> None:
        if not self.app.is_running:  # quitting: save_all saves what is still queued
            return
        try:
            await self.apply_events()
        finally:
            self.set_timer(self.feed.drained(), self.drain)

    async def apply_events(self) -> None:
        batches, ends = self.feed.take()
        for turn, events in batches:
            await turn.view.feed(events)
            for event in events:
                if isinstance(event, Done):
                    self.answered(turn, event)
                elif isinstance(event, Savings) and not turn.compare:
                    self.totals.measured(event)
                    self.show_meter()
            if turn.view.result is None:  # still streaming: throttled save (Done saves in full)
                turn.save(self.store)
        for turn, error in ends:
            self.ended(turn, error)
        if batches:
            self.log_view.scroll_end(animate=False)

    def answered(self, turn: Turn, done: Done) -> None:
        """The answer is complete (the savings measurement may still follow)."""
        if turn is self.feed.running:
            self.answering = False
        if turn.compare:
            if turn.on_answer is not None:
                turn.on_answer()
            return
        self.history.append(assistant_turn(done.result.answer, done.result.tool_calls))
        self.pending_calls = list(done.result.tool_calls)
        self.totals.answered(done.result)
        self.last_result = done.result
        self.show_meter()
        turn.save(self.store, force=True)

    def ended(self, turn: Turn, error: LynxError | None) -> None:
        if turn is self.feed.running:
            self.answering = False
        if error is not None:
            self.app.notify(str(error), title="generation stopped", severity="error", timeout=15)
        turn.view.show_complete()  # a cancelled measurement stays "—": never a guess
        turn.save(self.store, force=True)
        turn.shown = True

    # ---- editing the chat ----------------------------------------------------------------
    def regenerate_context(self) -> list[dict[str, Any]]:
        """The context the last reply was written for."""
        last = self.history[-1]["role"] if self.history else None
        return self.history[:-1] if last == "assistant" else self.history

    async def replace_last_reply(
        self, context: list[dict[str, Any]], events: Iterator[Event], made_with: dict[str, Any]
    ) -> None:
        """The last reply is gone (store, screen, context); ``events`` write it again."""
        reply = self.last_reply
        self.history, self.pending_calls = context, []
        self.store.forget_from(self.chat_id, reply.message_id)
        await reply.view.remove()
        await self.reply(events, made_with)

    def edit_last(self) -> None:
        """Put the last prompt back in the box, to be resent in its place."""
        self.box.value = self.exchange.text
        self.box.cursor_position = len(self.box.value)
        self.box.focus()
        self.editing = True

    async def take_back(self, exchange: Exchange) -> None:
        """Forget the last exchange (the prompt and everything after it) everywhere."""
        self.history = self.history[: exchange.at]
        self.pending_calls = []
        if self.chat_id is not None:
            self.store.forget_from(self.chat_id, exchange.message_id)
        children = list(self.log_view.children)
        if exchange.widget in children:  # the prompt and the replies after it; notes stay
            later = children[children.index(exchange.widget) :]
            await self.log_view.remove_children([w for w in later if not isinstance(w, Note)])
        self.exchange = self.last_reply = None

    def set_system(self, system: str) -> str:
        """A new system prompt from the next message on; what the chat says about it."""
        if self.chat_id is not None:
            self.store.add(self.chat_id, StoredMessage("system", system))
        shown = f"system prompt: {system}" if system else "system prompt cleared"
        self.log_view.mount(Note(shown))
        return shown

    def compare_context(self) -> list[dict[str, Any]]:
        """The last prompt in its context, to rerun without early exit."""
        last_user = max(i for i, m in enumerate(self.history) if m["role"] == "user")
        return [*self.history[:last_user], {"role": "user", "content": self.last_prompt}]

    def clear(self) -> None:
        """A new, empty chat."""
        self.chat_id = None
        self.history, self.pending_calls = [], []
        self.last_prompt = None
        self.exchange = self.last_reply = None
        self.editing = False
        self.log_view.remove_children()

    def open(self, chat_id: int) -> str:
        """Show a stored chat and go on from it; returns its system prompt."""
        self.clear()
        self.chat_id = chat_id
        messages = self.store.messages(chat_id)
        self.history = [stored_turn(m) for m in messages if m.role in CONVERSATION]
        self.last_prompt = next((m.content for m in reversed(messages) if m.role == "user"), None)
        log = self.log_view
        views, at = [], 0
        for m in messages:
            if m.role == "assistant":
                view = AssistantMessage()
                views.append((view, m))
                log.mount(view)
                self.last_reply = LastReply(m.id, view)
            elif m.role in ("user", "tool"):
                widget = UserMessage(m.content if m.role == "user" else f"result: {m.content}")
                log.mount(widget)
                if m.role == "user":
                    self.exchange = Exchange(at, m.id, widget, m.content)
            else:
                log.mount(Note(m.content if m.role == "note" else f"system prompt: {m.content or '(cleared)'}"))
            at += m.role in CONVERSATION

        def fill() -> None:
            for view, m in views:
                view.show_stored(m.thinking, m.content, m.stats.get("line", ""), m.stats.get("header", ""))
            log.scroll_end(animate=False)

        self.call_after_refresh(fill)
        return next((m.content for m in reversed(messages) if m.role == "system"), "")

    # ---- what leaves the chat ------------------------------------------------------------
    def answer_text(self) -> str | None:
        """The last answer and its calls as plain text (None: no answer yet)."""
        reply = self.last_reply
        if reply is None or not (reply.view.answer or reply.view.result):
            return None
        calls = reply.view.result.tool_calls if reply.view.result else ()
        return "\n".join([reply.view.answer, *(f"{c.name}({c.arguments_json})" for c in calls)]).strip()

    def message_text(self) -> str | None:
        """The whole last message as Markdown: thinking, answer, stats (None: none yet)."""
        reply = self.last_reply
        if reply is None or self.chat_id is None:
            return None
        if self.turn is not None:
            self.turn.save(self.store, force=True)
        stored = next((m for m in self.store.messages(self.chat_id) if m.id == reply.message_id), None)
        return message_markdown(stored) if stored is not None else None

    def markdown(self) -> str:
        return chat_markdown(self.store.title(self.chat_id), self.store.messages(self.chat_id))

    def save_all(self) -> None:
        """Quitting: what the model thread wrote after the last drain is saved too."""
        if self.feed.running is not None:
            self.feed.running.finished.wait(timeout=5)
        for turn, item in self.feed.queued():
            if isinstance(item, Event):
                turn.view.absorb([item])
        if self.turn is not None:
            self.turn.save(self.store, force=True)
