"""``lynx-edge chat``: a Textual terminal chat on the runtime's event API.

The model runs on one thread for the app's life (``ModelThread``: loading, every reply, every
comparison): it only iterates ``Engine.generate`` and drops events in a queue, which the UI
drains a few times a second. So the generation loop never waits on rendering, and Esc
reaches the engine within one token. After an answer that exited, the same iterator goes on
to measure the exact saving in the background; a new prompt cancels that measurement first.
Persistence lives in ``ChatStore`` (``Turn.save`` writes a reply as it streams), the session
tally in ``display.SessionTotals``, the screens in ``screens``, the styles in ``chat.tcss``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Input, Static

from lynx_edge.chat.screens import CompareScreen, HelpScreen, HistoryScreen
from lynx_edge.chat.store import ChatStore, StoredMessage, chat_markdown
from lynx_edge.chat.view import AssistantMessage, UserMessage
from lynx_edge.display import SessionTotals
from lynx_edge.errors import LynxError
from lynx_edge.events import Done, Event, Savings, ToolCall
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.model_thread import ModelThread
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.tool_calls import assistant_turn, tool_turn

# The UI applies the model's events at most every DRAIN_SECONDS[0] and stretches the interval
# (up to DRAIN_SECONDS[1]) so that its own work (layout, rendering) stays under UI_CPU_SHARE of
# one core: on a laptop the model uses every core, and each millisecond the UI takes is one
# the model waits. A long chat makes layout dearer, so it refreshes less often, not slower.
DRAIN_SECONDS = (0.25, 1.0)
UI_CPU_SHARE = 0.02
SAVE_SECONDS = 1.0  # how often a streaming reply is written to the history


RESULT_COMMAND = "/result"
DECLINED = "(not run: the user went on without running this call)"


def stored_turn(message: StoredMessage) -> dict[str, Any]:
    """A stored message as context again (tool calls and results included)."""
    if message.role == "tool":
        return tool_turn(message.stats.get("tool_call_id", ""), message.content)
    if message.role == "assistant":
        return assistant_turn(message.content, [ToolCall(**c) for c in message.stats.get("tool_calls", [])])
    return {"role": message.role, "content": message.content}


def next_drain_delay(ui_cpu_seconds: float, previous: float) -> float:
    """Seconds until the next refresh, given the UI's CPU time since the previous one.

    The delay that keeps the UI under its share, within DRAIN_SECONDS, and at most twice the
    previous delay: one dear frame (a mount, a long paragraph) is no trend.
    """
    wanted = min(max(ui_cpu_seconds / UI_CPU_SHARE, DRAIN_SECONDS[0]), DRAIN_SECONDS[1])
    return min(wanted, 2 * previous)


def step_level(levels: list[float], current: float, step: int) -> float | None:
    """The calibrated level ``step`` places from ``current`` (None past either end)."""
    i = levels.index(current) + step
    return levels[i] if 0 <= i < len(levels) else None


@dataclass
class Turn:
    """One reply being generated: its view, its stored row, and the worker's state."""

    view: AssistantMessage
    stored: StoredMessage | None
    finished: threading.Event = field(default_factory=threading.Event)
    shown: bool = False  # the end is applied in the view (the model thread being done is not enough)
    saved_at: float = 0.0
    compare: bool = False

    def save(self, store: ChatStore, *, force: bool = False) -> None:
        """Write the reply as it stands (throttled while streaming)."""
        if self.stored is None or (not force and time.monotonic() - self.saved_at < SAVE_SECONDS):
            return
        v = self.view
        self.stored.content, self.stored.thinking = v.answer, v.thinking_plain
        self.stored.stats = {"line": v.stats_text}
        if v.result:
            self.stored.stats.update(
                tokens=v.result.tokens.to_dict(), exit=v.result.to_dict()["exit"], finish_reason=v.result.finish_reason
            )
            if v.result.tool_calls:
                self.stored.stats["tool_calls"] = [asdict(c) for c in v.result.tool_calls]
        if v.savings:
            self.stored.stats["tokens_saved"] = v.savings.tokens_saved
        store.update(self.stored)
        self.saved_at = time.monotonic()


class ChatApp(App[None]):
    """The chat. ``load_engine`` runs on the model thread at start; its error is shown, not raised."""

    TITLE = "lynx-edge"
    AUTO_FOCUS = "#prompt"
    CSS_PATH = Path(__file__).parent / "chat.tcss"  # absolute: subclasses elsewhere still find it
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("f2", "toggle_lynx", "Exit on/off"),
        Binding("f3", "alpha_down", "α−"),
        Binding("f4", "alpha_up", "α+"),
        Binding("f5", "compare", "Compare"),
        Binding("ctrl+n", "new_chat", "New chat", priority=True),
        Binding("f6", "history", "History"),
        Binding("f7", "export", "Export"),
        Binding("f1", "help", "Help"),
    ]

    def __init__(
        self,
        load_engine: Callable[[], Engine],
        defaults: GenerationOptions | None = None,
        *,
        store: ChatStore | None = None,
        measure_savings: bool = True,
        export_dir: Path | None = None,
        model_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """``defaults``: every reply's options (the risk level F3/F4 start from, the token cap;
        a seed None samples each reply with a fresh seed, reported in its result).
        ``model_thread``: a one-thread executor for the model's work, for a host that runs
        several apps on one engine (by default the app makes its own)."""
        super().__init__()
        self.model = ModelThread(model_thread)
        self.defaults = defaults or GenerationOptions()
        self.load_engine = load_engine
        self.store = store or ChatStore()
        self.measure_savings = measure_savings
        self.export_dir = export_dir or Path.cwd()
        self.engine: Engine | None = None
        self.lynx = True
        self.alpha: float | None = None
        self.chat_id: int | None = None
        self.history: list[dict[str, Any]] = []  # user/assistant answers (and tool turns) sent as context
        self.pending_calls: list[ToolCall] = []  # the newest reply's calls still waiting for a result
        self.events: queue.SimpleQueue[tuple[Turn, Event | LynxError | None]] = queue.SimpleQueue()
        self.turn: Turn | None = None  # the newest chat reply (generating, measuring or done)
        self.running: Turn | None = None  # the newest worker's turn (a reply or a comparison)
        self._answering = False
        self.ui_cpu_mark = 0.0  # the UI thread's CPU time at the last drain
        self.drain_delay = DRAIN_SECONDS[0]
        self.totals = SessionTotals()
        self.last_prompt: str | None = None

    @property
    def answering(self) -> bool:
        """A reply is being written (Esc cancels it)."""
        return self._answering

    @answering.setter
    def answering(self, value: bool) -> None:
        self._answering = value
        # a blinking cursor repaints twice a second: CPU the model can use while it writes
        self.query_one("#prompt", Input).cursor_blink = not value

    # ---- layout and start ------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="log")
        yield Static("", id="totals")
        yield Input(placeholder="loading the model …", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "loading …"
        self.refresh_totals()
        self.ui_cpu_mark = time.thread_time()
        self.set_timer(self.drain_delay, self.drain)
        self.model.submit(self.start_engine)

    def start_engine(self) -> None:
        try:
            engine = self.load_engine()
        except LynxError as exc:
            self.call_from_thread(self.engine_failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown in the app, whose history still works
            self.call_from_thread(self.engine_failed, f"loading the model failed: {exc!r}")
            return
        self.call_from_thread(self.engine_ready, engine)

    def engine_ready(self, engine: Engine) -> None:
        self.engine = engine
        try:
            rule = engine.rule_for(self.defaults.alpha, self.defaults.mode)
        except LynxError as exc:  # a risk level this probe cannot serve: said once, the default used
            self.notify(str(exc), title="risk level", severity="error", timeout=20)
            rule = engine.rule_for()
        self.alpha = rule.level if rule else None
        self.query_one("#prompt", Input).placeholder = "Ask something · Enter sends · F1 help"
        self.refresh_header()
        for line in engine.notices:
            self.notify(line, title="early exit", severity="warning", timeout=20)

    def engine_failed(self, message: str) -> None:
        self.sub_title = "no model loaded"
        self.query_one("#prompt", Input).placeholder = "no model loaded (see the notice) · F6 history still works"
        self.notify(message, title="model not loaded", severity="error", timeout=30)

    def refresh_header(self) -> None:
        e = self.engine
        if e is None:
            return
        self.title = f"lynx-edge · {e.model_name}"
        state = "exit on" if self.lynx else "exit off"
        if e.probe is None:
            self.sub_title = f"{e.policy_for(GenerationOptions()).describe()} · {state}"
            return
        rule = e.rule_for(self.alpha, self.defaults.mode)
        self.sub_title = f"probe {e.probe_name} · {rule.mode} α={rule.level:g} · {state}"

    def refresh_totals(self) -> None:
        self.query_one("#totals", Static).update(self.totals.line())

    # ---- sending ---------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.engine is None:
            self.notify("no model is loaded: restart with --model PATH to a GGUF file", severity="error")
            return
        if self.answering:
            self.notify("still answering: press Esc to cancel first", severity="warning")
            return
        result = text.removeprefix(RESULT_COMMAND).strip() if text.startswith(RESULT_COMMAND) else None
        if result is not None and not self.pending_calls:
            self.notify("no tool call is waiting for a result", severity="warning")
            return
        turns = self.tool_turns(result)
        if result is not None and self.pending_calls:
            self.history += turns
            self.store.add(
                self.chat_id, StoredMessage("tool", result, stats={"tool_call_id": turns[0]["tool_call_id"]})
            )
            event.input.value = ""
            await self.query_one("#log", VerticalScroll).mount(UserMessage(f"result: {result}"))
            self.notify(f"{len(self.pending_calls)} more call(s) wait for a result")
            return
        said = [] if result is not None else [{"role": "user", "content": text}]
        messages = [*self.history, *turns, *said]
        try:
            events = self.generate(messages, lynx=self.lynx, measure=self.measure_savings)
        except LynxError as exc:  # context full, bad setting: the typed text stays in the box
            self.notify(str(exc), title="not sent", severity="error", timeout=15)
            return
        event.input.value = ""
        self.last_prompt = text
        if self.chat_id is None:
            self.chat_id = self.store.new_chat(text, self.engine.model_name, self.engine.probe_name)
        for turn in turns:
            self.store.add(
                self.chat_id, StoredMessage("tool", turn["content"], stats={"tool_call_id": turn["tool_call_id"]})
            )
        self.history += [*turns, *said]
        if said:
            self.store.add(self.chat_id, StoredMessage("user", text))
        stored = StoredMessage("assistant", "")
        self.store.add(self.chat_id, stored)
        self.answering = True
        log = self.query_one("#log", VerticalScroll)
        view = AssistantMessage()
        view.measuring = self.measure_savings
        await log.mount(UserMessage(f"result: {result}" if result is not None else text), view)
        log.scroll_end(animate=False)
        # start once the new widgets are laid out, so mounting them does not compete with the
        # first tokens for the CPU
        self.call_after_refresh(self.begin, Turn(view, stored), events)

    def tool_turns(self, result: str | None) -> list[dict[str, Any]]:
        """The tool turns a message makes: ``/result`` answers the first waiting call; typing
        on declines every waiting call (the model is told it was not run). Taken off the queue."""
        if not self.pending_calls:
            return []
        calls = self.pending_calls[:1] if result is not None else self.pending_calls
        self.pending_calls = self.pending_calls[len(calls) :]
        content = result if result is not None else DECLINED
        return [tool_turn(c.id, content, c.name) for c in calls]

    def generate(
        self, messages: list[dict[str, Any]], *, lynx: bool, measure: bool, seed: int | None = None
    ) -> Iterator[Event]:
        assert self.engine is not None
        options = self.defaults.but(
            exit="auto" if lynx else "none",
            alpha=self.alpha if lynx else None,
            measure_savings=measure and lynx,
            seed=self.defaults.seed if seed is None else seed,
        )
        return self.engine.generate(messages, options)

    def begin(self, turn: Turn, events: Iterator[Event]) -> None:
        """Queue ``events`` on the model thread, behind the previous reply's generation
        (whose savings measurement is cancelled: the engine runs one generation at a time)."""
        previous = self.running
        if previous is not None and not previous.finished.is_set() and self.engine is not None:
            self.engine.cancel()
        self.running = turn
        self.ui_cpu_mark = time.thread_time()  # mounting the reply is not streaming work
        if not turn.compare:
            self.turn = turn
        self.answering = True
        future = self.model.stream(events, lambda item: self.events.put((turn, item)))
        future.add_done_callback(lambda _: turn.finished.set())

    # ---- applying events ---------------------------------------------------------------
    async def drain(self) -> None:
        if not self.is_running:  # quitting: on_unmount saves what is still queued
            return
        try:
            await self.apply_events()
        finally:
            now = time.thread_time()  # the UI's CPU since the last drain (this is its thread)
            spent, self.ui_cpu_mark = now - self.ui_cpu_mark, now
            self.drain_delay = next_drain_delay(spent, self.drain_delay)
            self.set_timer(self.drain_delay, self.drain)

    async def apply_events(self) -> None:
        batches: dict[int, tuple[Turn, list[Event]]] = {}
        ends: list[tuple[Turn, LynxError | None]] = []
        for turn, item in self.queued():
            if isinstance(item, Event):
                batches.setdefault(id(turn), (turn, []))[1].append(item)
            else:
                ends.append((turn, item))
        for turn, events in batches.values():
            await turn.view.feed(events)
            for event in events:
                if isinstance(event, Done):
                    self.answered(turn, event)
                elif isinstance(event, Savings) and not turn.compare:
                    self.totals.measured(event)
                    self.refresh_totals()
            if turn.view.result is None:  # still streaming: throttled save (Done saves in full)
                turn.save(self.store)
        for turn, error in ends:
            self.ended(turn, error)
        if batches:
            self.query_one("#log", VerticalScroll).scroll_end(animate=False)

    def queued(self) -> Iterator[tuple[Turn, Event | LynxError | None]]:
        """What the model thread has put in the queue so far."""
        while True:
            try:
                yield self.events.get_nowait()
            except queue.Empty:
                return

    def answered(self, turn: Turn, done: Done) -> None:
        """The answer is complete (the savings measurement may still follow)."""
        if turn is self.running:
            self.answering = False
        if turn.compare:
            if isinstance(self.screen, CompareScreen):
                self.screen.finished()
            return
        self.history.append(assistant_turn(done.result.answer, done.result.tool_calls))
        self.pending_calls = list(done.result.tool_calls)
        self.totals.answered(done.result)
        self.refresh_totals()
        turn.save(self.store, force=True)

    def ended(self, turn: Turn, error: LynxError | None) -> None:
        if turn is self.running:
            self.answering = False
        if error is not None:
            self.notify(str(error), title="generation stopped", severity="error", timeout=15)
        turn.view.show_complete()  # a cancelled measurement stays "—": never a guess
        turn.save(self.store, force=True)
        turn.shown = True

    # ---- actions -----------------------------------------------------------------------
    def action_cancel(self) -> None:
        if self.answering and self.engine is not None:
            self.engine.cancel()

    def action_toggle_lynx(self) -> None:
        self.lynx = not self.lynx
        self.refresh_header()
        self.notify(f"early exit {'on' if self.lynx else 'off'} for the next message")

    def action_alpha_down(self) -> None:
        self.step_alpha(-1)

    def action_alpha_up(self) -> None:
        self.step_alpha(+1)

    def step_alpha(self, step: int) -> None:
        e = self.engine
        if e is None or e.card is None or self.alpha is None:
            self.notify("no probe loaded: there is no risk level to change", severity="warning")
            return
        rule = e.rule_for(self.alpha, self.defaults.mode)
        level = step_level(e.levels(rule.mode), rule.level, step)
        if level is None:
            self.notify(
                f"α={self.alpha:g} is the {'smallest' if step < 0 else 'largest'} calibrated level", severity="warning"
            )
            return
        self.alpha = level
        self.refresh_header()

    def action_compare(self) -> None:
        turn = self.turn
        if self.engine is None or turn is None or turn.view.result is None or self.last_prompt is None:
            self.notify("nothing to compare yet: send a prompt first", severity="warning")
            return
        if self.answering:
            self.notify("still answering: wait or press Esc first", severity="warning")
            return
        last_user = max(i for i, m in enumerate(self.history) if m["role"] == "user")
        messages = [*self.history[:last_user], {"role": "user", "content": self.last_prompt}]
        screen = CompareScreen(turn.view)
        events = self.generate(messages, lynx=False, measure=False, seed=turn.view.result.seed)
        self.push_screen(screen)
        self.begin(Turn(screen.full_view, None, compare=True), events)

    def action_new_chat(self) -> None:
        if self.answering:
            self.action_cancel()
        self.chat_id = None
        self.history = []
        self.last_prompt = None
        self.query_one("#log", VerticalScroll).remove_children()
        self.notify("new chat")

    def action_history(self) -> None:
        def reopen(chat_id: int | None) -> None:
            if chat_id is not None:
                self.open_chat(chat_id)

        self.push_screen(HistoryScreen(self.store), reopen)

    def open_chat(self, chat_id: int) -> None:
        if self.answering:
            self.action_cancel()
        self.chat_id = chat_id
        messages = self.store.messages(chat_id)
        self.history = [stored_turn(m) for m in messages]
        self.pending_calls = []
        self.last_prompt = next((m.content for m in reversed(messages) if m.role == "user"), None)
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
        views = []
        for m in messages:
            if m.role in ("user", "tool"):
                log.mount(UserMessage(m.content if m.role == "user" else f"result: {m.content}"))
            else:
                view = AssistantMessage()
                views.append((view, m))
                log.mount(view)

        def fill() -> None:
            for view, m in views:
                view.show_stored(m.thinking, m.content, m.stats.get("line", ""))
            log.scroll_end(animate=False)

        self.call_after_refresh(fill)
        self.notify(f"reopened: {self.store.title(chat_id)}")

    def action_export(self) -> None:
        if self.chat_id is None:
            self.notify("nothing to export yet: send a prompt first", severity="warning")
            return
        path = self.export_dir / f"lynx-chat-{self.chat_id}.md"
        path.write_text(
            chat_markdown(self.store.title(self.chat_id), self.store.messages(self.chat_id)), encoding="utf-8"
        )
        self.notify(f"exported to {path}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_unmount(self) -> None:
        """Quit mid-answer: stop the model, keep what was written."""
        if self.engine is not None:
            self.engine.cancel()
        if self.running is not None:
            self.running.finished.wait(timeout=5)
        for turn, item in self.queued():  # written after the last drain: saved too
            if isinstance(item, Event):
                turn.view.absorb([item])
        if self.turn is not None:
            self.turn.save(self.store, force=True)
        self.store.close()
        self.model.shutdown()
