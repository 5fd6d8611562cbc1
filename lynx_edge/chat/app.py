"""``lynx-edge chat``: a Textual terminal chat on the runtime's event API.

The model runs on one thread for the app's life (``ModelThread``: loading, every reply, every
comparison): it only iterates ``Engine.generate`` and drops events in a queue, which the UI
drains a few times a second. So the generation loop never waits on rendering, and Esc
reaches the engine within one token. After an answer that exited, the same iterator goes on
to measure the exact saving in the background; a new prompt cancels that measurement first.
Persistence lives in ``ChatStore`` (``Turn.save`` writes a reply as it streams), the session
tally in ``display.SessionTotals``, what the next reply runs with in ``settings``, the loaded
models in ``models``, the screens in ``screens``, the styles in ``chat.tcss``. Every key has a
command in the palette (Ctrl+P) too.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, Static

from lynx_edge.chat.models import LoadedModels, model_key
from lynx_edge.chat.screens import AskScreen, CompareScreen, HelpScreen, HistoryScreen, ModelScreen
from lynx_edge.chat.settings import BUDGETS, EFFORTS, ReplySettings
from lynx_edge.chat.store import ChatStore, StoredMessage, chat_markdown, message_markdown
from lynx_edge.chat.view import AssistantMessage, Note, UserMessage
from lynx_edge.display import SessionTotals
from lynx_edge.errors import LynxError, SettingError
from lynx_edge.events import Done, Event, GenerationResult, Savings, ToolCall
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.model_files import available_models
from lynx_edge.runtime.model_thread import ModelThread
from lynx_edge.runtime.options import EFFORT_ALPHA, GenerationOptions
from lynx_edge.runtime.presets import DEFAULT_PRESET
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


CONVERSATION = ("user", "assistant", "tool")  # the stored roles a model is sent


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


def meter_line(result: GenerationResult | None, n_ctx: int | None, totals: SessionTotals) -> str:
    """The footer meter: what the last reply used of the context, how much of that was
    thinking, and the session's tally."""
    if result is None or not n_ctx:
        return totals.line()
    used = result.tokens.prompt + result.tokens.completion
    share = result.tokens.thinking / used if used else 0.0
    return f"context {used}/{n_ctx} ({used / n_ctx:.0%}) · thinking {share:.0%} of it · {totals.line()}"


@dataclass
class Turn:
    """One reply being generated: its view, its stored row, and the worker's state."""

    view: AssistantMessage
    stored: StoredMessage | None
    finished: threading.Event = field(default_factory=threading.Event)
    shown: bool = False  # the end is applied in the view (the model thread being done is not enough)
    saved_at: float = 0.0
    compare: bool = False
    made_with: dict[str, Any] = field(default_factory=dict)  # model and settings, stored with the reply

    def save(self, store: ChatStore, *, force: bool = False) -> None:
        """Write the reply as it stands (throttled while streaming)."""
        if self.stored is None or (not force and time.monotonic() - self.saved_at < SAVE_SECONDS):
            return
        v = self.view
        self.stored.content, self.stored.thinking = v.answer, v.thinking_plain
        self.stored.stats = {"line": v.stats_text, **self.made_with}
        if v.result:
            self.stored.stats.update(
                tokens=v.result.tokens.to_dict(),
                exit=v.result.to_dict()["exit"],
                finish_reason=v.result.finish_reason,
                header=v.header,
            )
            if v.result.tool_calls:
                self.stored.stats["tool_calls"] = [asdict(c) for c in v.result.tool_calls]
        if v.savings:
            self.stored.stats["tokens_saved"] = v.savings.tokens_saved
        store.update(self.stored)
        self.saved_at = time.monotonic()


@dataclass
class Exchange:
    """The newest prompt in the chat: where it sits in the context, its row, its widget
    (what editing the last prompt takes back)."""

    at: int  # its index in the app's history
    message_id: int
    widget: Widget
    text: str


@dataclass
class LastReply:
    """The newest reply in the chat (what copy and regenerate act on)."""

    message_id: int
    view: AssistantMessage


class ChatApp(App[None]):
    """The chat. ``load_engine`` runs on the model thread; its error is shown, not raised."""

    TITLE = "lynx-edge"
    AUTO_FOCUS = "#prompt"
    CSS_PATH = Path(__file__).parent / "chat.tcss"  # absolute: subclasses elsewhere still find it
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("f2", "toggle_lynx", "Exit on/off"),
        Binding("f3", "alpha_down", "α−"),
        Binding("f4", "alpha_up", "α+"),
        Binding("ctrl+f", "next_effort", "Effort", show=False),
        Binding("ctrl+t", "toggle_thinking", "Thinking"),
        Binding("ctrl+b", "next_budget", "Budget"),
        Binding("f8", "pick_model", "Model"),
        Binding("ctrl+o", "copy_answer", "Copy", show=False),
        Binding("ctrl+y", "copy_message", "Copy all", show=False),
        Binding("ctrl+r", "regenerate", "Regenerate", show=False),
        Binding("f9", "edit_last", "Edit last", show=False),
        Binding("f10", "system_prompt", "System prompt", show=False),
        Binding("f12", "change_theme", "Theme", show=False),  # Textual's theme picker
        Binding("f5", "compare", "Compare"),
        Binding("ctrl+n", "new_chat", "New chat", priority=True),
        Binding("f6", "history", "History"),
        Binding("f7", "export", "Export", show=False),
        Binding("f1", "help", "Help"),
    ]

    def __init__(
        self,
        load_engine: Callable[[str], Engine],
        defaults: GenerationOptions | None = None,
        *,
        model: str = DEFAULT_PRESET,
        store: ChatStore | None = None,
        measure_savings: bool = True,
        export_dir: Path | None = None,
        model_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """``load_engine``: the engine for a ``--model`` value (a preset name or a GGUF path);
        ``model``: the one to start with (the picker offers the others). ``defaults``: every
        reply's options (the risk level F3/F4 start from, the token cap; a seed None samples
        each reply with a fresh seed, reported in its result). ``model_thread``: a one-thread
        executor for the model's work, for a host that runs several apps on one engine (by
        default the app makes its own)."""
        super().__init__()
        self.model = ModelThread(model_thread)
        self.defaults = defaults or GenerationOptions()
        self.models = LoadedModels(load_engine)
        self.model_spec = model
        self.store = store or ChatStore()
        self.measure_savings = measure_savings
        self.export_dir = export_dir or Path.cwd()
        self.engine: Engine | None = None
        self.settings = ReplySettings.starting(self.defaults)
        self.loading: tuple[str, float] | None = None  # the model being loaded, since when
        self.chat_id: int | None = None
        self.history: list[dict[str, Any]] = []  # user/assistant answers (and tool turns) sent as context
        self.pending_calls: list[ToolCall] = []  # the newest reply's calls still waiting for a result
        self.events: queue.SimpleQueue[tuple[Turn, Event | LynxError | None]] = queue.SimpleQueue()
        self.turn: Turn | None = None  # the newest chat reply (generating, measuring or done)
        self.running: Turn | None = None  # the newest worker's turn (a reply or a comparison)
        self.exchange: Exchange | None = None
        self.last_reply: LastReply | None = None
        self.editing = False  # the box holds the last prompt, to be resent in its place
        self._answering = False
        self.ui_cpu_mark = 0.0  # the UI thread's CPU time at the last drain
        self.drain_delay = DRAIN_SECONDS[0]
        self.totals = SessionTotals()
        self.last_result: GenerationResult | None = None  # the newest reply's (for the meter)
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
        self.ui_cpu_mark = time.thread_time()
        self.set_timer(self.drain_delay, self.drain)
        self.load_model(self.model_spec)

    def load_model(self, spec: str) -> None:
        """Load ``spec`` on the model thread (behind whatever runs there), saying so meanwhile."""
        self.loading = (spec, time.monotonic())
        self.sub_title = f"loading {spec} …"
        self.refresh_totals()
        ticker = self.set_interval(0.5, self.refresh_totals)

        def load() -> None:
            try:
                engine, cached = self.models.get(spec)
            except Exception as exc:  # noqa: BLE001 - shown in the app, whose history still works
                message = str(exc) if isinstance(exc, LynxError) else f"loading the model failed: {exc!r}"
                self.call_from_thread(self.engine_failed, spec, message, ticker)
                return
            self.call_from_thread(self.engine_ready, spec, engine, cached, ticker)

        self.model.submit(load)

    def engine_ready(self, spec: str, engine: Engine, cached: bool, ticker: Any) -> None:
        ticker.stop()
        seconds = time.monotonic() - self.loading[1] if self.loading else 0.0
        self.loading = None
        switched = self.engine is not None and self.engine is not engine
        self.engine, self.model_spec = engine, spec
        wanted = self.settings.alpha if switched else self.defaults.alpha
        self.settings.alpha = self.level_for(EFFORT_ALPHA.get(self.settings.effort or "", wanted))
        self.query_one("#prompt", Input).placeholder = "Ask something · Enter sends · F1 help · Ctrl+P commands"
        self.refresh_header()
        self.refresh_totals()
        for line in engine.notices:
            self.notify(line, title="early exit", severity="warning", timeout=20)
        if switched:
            how = "already loaded" if cached else "loaded"
            self.add_note(f"model: {engine.model_name} ({self.policy_words()}) · {how} in {seconds:.2f} s")

    def level_for(self, alpha: float | None) -> float | None:
        """The calibrated level this model's card serves for ``alpha`` (its default when the
        card has no such level, said once); None without a probe."""
        e = self.engine
        if e is None or e.card is None:
            return None
        try:
            rule = e.rule_for(alpha, self.defaults.mode, promise=self.defaults.promise)
        except LynxError as exc:  # a risk level this probe cannot serve: said once, the default used
            self.notify(str(exc), title="risk level", severity="error", timeout=20)
            rule = e.rule_for(None, self.defaults.mode, promise=self.defaults.promise)
        return rule.level if rule else None

    def engine_failed(self, spec: str, message: str, ticker: Any) -> None:
        ticker.stop()
        self.loading = None
        self.refresh_totals()
        if self.engine is None:
            self.sub_title = "no model loaded"
            self.query_one("#prompt", Input).placeholder = "no model loaded (see the notice) · F6 history still works"
        else:
            self.refresh_header()
        self.notify(message, title=f"{spec} not loaded", severity="error", timeout=30)

    def policy_words(self) -> str:
        e = self.engine
        if e is None:
            return ""
        if e.probe is None:
            return e.policy_for(GenerationOptions()).describe()
        rule = e.rule_for(self.settings.alpha, self.defaults.mode, promise=self.defaults.promise)
        return f"probe {e.probe_name} · {rule.mode} {rule.statement}"

    def refresh_header(self) -> None:
        e = self.engine
        if e is None:
            return
        self.title = f"lynx-edge · {e.model_name}"
        self.sub_title = f"{self.policy_words()} · {self.settings.words()}"

    def refresh_totals(self) -> None:
        line = meter_line(self.last_result, self.engine.backend.n_ctx if self.engine else None, self.totals)
        if self.loading:
            line = f"loading {self.loading[0]} … {time.monotonic() - self.loading[1]:.0f} s · {line}"
        self.query_one("#totals", Static).update(line)

    def add_note(self, text: str) -> None:
        """Say in the chat (and its history) that something changed between replies."""
        self.query_one("#log", VerticalScroll).mount(Note(text))
        if self.chat_id is not None:
            self.store.add(self.chat_id, StoredMessage("note", text))

    # ---- sending ---------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.engine is None or self.loading:
            self.notify(
                "the model is still loading: wait for it"
                if self.loading
                else "no model is loaded: press F8 to pick one",
                severity="error",
            )
            return
        if self.answering:
            self.notify("still answering: press Esc to cancel first", severity="warning")
            return
        result = text.removeprefix(RESULT_COMMAND).strip() if text.startswith(RESULT_COMMAND) else None
        if result is not None and not self.pending_calls:
            self.notify("no tool call is waiting for a result", severity="warning")
            return
        if result is not None:
            await self.answer_call(result)
            event.input.value = ""
            return
        replacing = self.exchange if self.editing else None
        base = self.history[: replacing.at] if replacing else self.history
        turns = [] if replacing else self.tool_turns(None)
        said = {"role": "user", "content": text}
        try:
            events = self.generate([*base, *turns, said], lynx=self.settings.lynx, measure=self.measure_savings)
        except LynxError as exc:  # context full, bad setting: the typed text stays in the box
            self.notify(str(exc), title="not sent", severity="error", timeout=15)
            return
        event.input.value = ""
        if replacing:
            await self.take_back(replacing)
        self.editing = False
        self.last_prompt = text
        if self.chat_id is None:
            self.start_chat(text)
        for turn in turns:
            self.store.add(
                self.chat_id, StoredMessage("tool", turn["content"], stats={"tool_call_id": turn["tool_call_id"]})
            )
        self.history += turns
        widget = UserMessage(text)
        self.exchange = Exchange(
            len(self.history), self.store.add(self.chat_id, StoredMessage("user", text)), widget, text
        )
        self.history.append(said)
        await self.reply(events, widget)

    def start_chat(self, title: str) -> None:
        assert self.engine is not None
        self.chat_id = self.store.new_chat(title, self.engine.model_name, self.engine.probe_name)
        if self.settings.system:
            self.store.add(self.chat_id, StoredMessage("system", self.settings.system))

    async def answer_call(self, result: str) -> None:
        """``/result``: the first waiting call's result goes into the context (the model is
        asked to go on once every call has one, or when the user types on)."""
        turns = self.tool_turns(result)
        self.history += turns
        self.store.add(self.chat_id, StoredMessage("tool", result, stats={"tool_call_id": turns[0]["tool_call_id"]}))
        await self.query_one("#log", VerticalScroll).mount(UserMessage(f"result: {result}"))
        if self.pending_calls:
            self.notify(f"{len(self.pending_calls)} more call(s) wait for a result")
            return
        try:
            events = self.generate(self.history, lynx=self.settings.lynx, measure=self.measure_savings)
        except LynxError as exc:
            self.notify(str(exc), title="not sent", severity="error", timeout=15)
            return
        await self.reply(events)

    async def reply(self, events: Iterator[Event], *before: Widget) -> None:
        """Show a new reply (after ``before``: the prompt) and start streaming it."""
        assert self.engine is not None
        stored = StoredMessage("assistant", "")
        self.store.add(self.chat_id, stored)
        self.answering = True
        log = self.query_one("#log", VerticalScroll)
        view = AssistantMessage()
        view.measuring = self.measure_savings
        await log.mount(*before, view)
        log.scroll_end(animate=False)
        self.last_reply = LastReply(stored.id, view)
        settings = f"{self.engine.model_name} · {self.settings.words()} · {self.policy_words()}"
        made_with = {"model": self.engine.model_name, "settings": settings, "options": asdict(self.settings)}
        # start once the new widgets are laid out, so mounting them does not compete with the
        # first tokens for the CPU
        self.call_after_refresh(self.begin, Turn(view, stored, made_with=made_with), events)

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
        self, history: list[dict[str, Any]], *, lynx: bool, measure: bool, seed: int | None = None
    ) -> Iterator[Event]:
        """The reply to ``history`` (the chat's system prompt first) under the current settings."""
        assert self.engine is not None
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        options = self.settings.options(
            self.defaults,
            lynx=lynx,
            measure_savings=measure and lynx,
            seed=self.defaults.seed if seed is None else seed,
        )
        return self.engine.generate([*system, *history], options)

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
        self.last_result = done.result
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

    # ---- the palette -------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key's action, each budget and effort by name, a custom budget (and Textual's
        own: theme, keys, quit)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Thinking on/off", "Think before answering, or answer at once (Ctrl+T)", self.action_toggle_thinking
        )
        for budget in BUDGETS:
            words = "none (think until the exit or the token limit)" if budget is None else f"{budget} tokens"
            yield SystemCommand(
                f"Thinking budget: {budget or 'none'}",
                f"Thinking budget {words} (Ctrl+B steps)",
                lambda b=budget: self.set_budget(b),
            )
        yield SystemCommand("Thinking budget: custom…", "Type a thinking budget in tokens", self.action_custom_budget)
        for effort in EFFORTS:
            yield SystemCommand(
                f"Effort: {effort}",
                "The risk level for this effort (Ctrl+F steps)",
                lambda e=effort: self.set_effort(e),
            )
        yield SystemCommand("Early exit on/off", "Let the probe cut the thinking, or not (F2)", self.action_toggle_lynx)
        yield SystemCommand("Switch model…", "Go on with another model (F8)", self.action_pick_model)
        yield SystemCommand("Copy answer", "Copy the last answer (Ctrl+O)", self.action_copy_answer)
        yield SystemCommand(
            "Copy message", "Copy the whole last message: thinking, answer, stats (Ctrl+Y)", self.action_copy_message
        )
        yield SystemCommand("Regenerate", "Write the last reply again (Ctrl+R)", self.action_regenerate)
        yield SystemCommand(
            "Edit last prompt", "Put the last prompt back in the box to resend (F9)", self.action_edit_last
        )
        yield SystemCommand("System prompt…", "This chat's system prompt (F10)", self.action_system_prompt)
        yield SystemCommand("Compare", "Rerun the last prompt without early exit (F5)", self.action_compare)
        yield SystemCommand("Export", "Write this chat as Markdown (F7)", self.action_export)

    # ---- actions -----------------------------------------------------------------------
    def action_cancel(self) -> None:
        if self.answering and self.engine is not None:
            self.engine.cancel()
        elif self.editing:
            self.editing = False
            self.query_one("#prompt", Input).value = ""
            self.notify("editing cancelled: the last exchange stays")

    def changed(self, what: str) -> None:
        self.refresh_header()
        self.notify(f"{what} for the next message")

    def action_toggle_lynx(self) -> None:
        self.settings.lynx = not self.settings.lynx
        self.settings.effort = None
        self.changed(f"early exit {'on' if self.settings.lynx else 'off'}")

    def action_toggle_thinking(self) -> None:
        self.settings.think = not self.settings.think
        self.changed(f"thinking {'on' if self.settings.think else 'off'}")

    def action_next_budget(self) -> None:
        self.set_budget(self.settings.next_budget())

    def set_budget(self, budget: int | None) -> None:
        self.settings.budget = budget
        self.changed(f"thinking budget {budget} tokens" if budget else "no thinking budget")

    def action_custom_budget(self) -> None:
        def given(text: str | None) -> None:
            if text is None:
                return
            try:
                budget = GenerationOptions(thinking_budget=int(text)).thinking_budget
            except (ValueError, SettingError):
                self.notify(f"not a budget: {text!r} (type a whole number of tokens, e.g. 300)", severity="error")
                return
            self.set_budget(budget)

        current = str(self.settings.budget or "")
        self.push_screen(
            AskScreen("Thinking budget in tokens (Enter sets it, Esc keeps the current one):", current, "e.g. 300"),
            given,
        )

    def action_next_effort(self) -> None:
        self.set_effort(self.settings.next_effort())

    def set_effort(self, effort: str) -> None:
        """An effort word picks the risk level through the card's calibrated levels, as F3/F4
        step through them; "max" thinks to the end (early exit off)."""
        self.settings.effort = effort
        self.settings.lynx = effort != "max"
        if effort in EFFORT_ALPHA:
            if self.engine is None or self.engine.card is None:
                self.notify(f"effort {effort}: no probe loaded, so there is no risk level to set", severity="warning")
            else:
                self.settings.alpha = self.level_for(EFFORT_ALPHA[effort])
        level = f" (α={self.settings.alpha:g})" if self.settings.lynx and self.settings.alpha is not None else ""
        self.changed(f"effort {effort}{level}")

    def action_alpha_down(self) -> None:
        self.step_alpha(-1)

    def action_alpha_up(self) -> None:
        self.step_alpha(+1)

    def step_alpha(self, step: int) -> None:
        e = self.engine
        if e is None or e.card is None or self.settings.alpha is None:
            self.notify("no probe loaded: there is no risk level to change", severity="warning")
            return
        rule = e.rule_for(self.settings.alpha, self.defaults.mode, promise=self.defaults.promise)
        level = step_level(e.levels(rule.mode, rule.promise), rule.level, step)
        if level is None:
            which = "smallest" if step < 0 else "largest"
            self.notify(f"α={self.settings.alpha:g} is the {which} calibrated level", severity="warning")
            return
        self.settings.alpha, self.settings.effort = level, None
        self.refresh_header()

    def action_pick_model(self) -> None:
        if self.loading:
            self.notify(f"still loading {self.loading[0]}: wait for it", severity="warning")
            return

        def picked(spec: str | None) -> None:
            if spec is None or model_key(spec) == model_key(self.model_spec):
                return
            running = self.running
            if running is not None and not running.finished.is_set() and self.engine is not None:
                self.engine.cancel()  # an answer, or a savings measurement: the load waits for neither
            self.load_model(spec)

        choices, key = available_models(), model_key(self.model_spec)
        current = next((c.name for c in choices if model_key(c.name) == key), self.model_spec)  # the picker's name
        self.push_screen(ModelScreen(choices, current=current), picked)

    def action_copy_answer(self) -> None:
        reply = self.last_reply
        if reply is None or not (reply.view.answer or reply.view.result):
            self.notify("no answer to copy yet", severity="warning")
            return
        calls = reply.view.result.tool_calls if reply.view.result else ()
        text = "\n".join([reply.view.answer, *(f"{c.name}({c.arguments_json})" for c in calls)]).strip()
        self.copy_to_clipboard(text)
        self.notify(f"answer copied ({len(text)} characters)")

    def action_copy_message(self) -> None:
        reply = self.last_reply
        if reply is None or self.chat_id is None:
            self.notify("no message to copy yet", severity="warning")
            return
        if self.turn is not None:
            self.turn.save(self.store, force=True)
        stored = next((m for m in self.store.messages(self.chat_id) if m.id == reply.message_id), None)
        if stored is None:
            self.notify("no message to copy yet", severity="warning")
            return
        text = message_markdown(stored)
        self.copy_to_clipboard(text)
        self.notify(f"message copied ({len(text)} characters, Markdown)")

    async def action_regenerate(self) -> None:
        """The last reply again, under the current settings (and model); the old one is gone."""
        reply = self.last_reply
        if self.engine is None or self.loading or reply is None or self.chat_id is None:
            self.notify("nothing to regenerate yet: send a prompt first", severity="warning")
            return
        if self.answering:
            self.notify("still answering: wait or press Esc first", severity="warning")
            return
        context = self.history[:-1] if self.history and self.history[-1]["role"] == "assistant" else self.history
        try:
            events = self.generate(context, lynx=self.settings.lynx, measure=self.measure_savings)
        except LynxError as exc:
            self.notify(str(exc), title="not sent", severity="error", timeout=15)
            return
        self.history, self.pending_calls = context, []
        self.store.forget_from(self.chat_id, reply.message_id)
        await reply.view.remove()
        await self.reply(events)

    def action_edit_last(self) -> None:
        if self.exchange is None:
            self.notify("no prompt to edit yet", severity="warning")
            return
        if self.answering:
            self.notify("still answering: wait or press Esc first", severity="warning")
            return
        box = self.query_one("#prompt", Input)
        box.value = self.exchange.text
        box.cursor_position = len(box.value)
        box.focus()
        self.editing = True
        self.notify("editing the last prompt: Enter resends it in place of the last exchange · Esc keeps it")

    async def take_back(self, exchange: Exchange) -> None:
        """Forget the last exchange (the prompt and everything after it) everywhere."""
        self.history = self.history[: exchange.at]
        self.pending_calls = []
        if self.chat_id is not None:
            self.store.forget_from(self.chat_id, exchange.message_id)
        log = self.query_one("#log", VerticalScroll)
        children = list(log.children)
        if exchange.widget in children:  # the prompt and the replies after it; notes stay
            later = children[children.index(exchange.widget) :]
            await log.remove_children([w for w in later if not isinstance(w, Note)])
        self.exchange = self.last_reply = None

    def action_system_prompt(self) -> None:
        def given(text: str | None) -> None:
            if text is None or text.strip() == self.settings.system:
                return
            self.settings.system = text.strip()
            if self.chat_id is not None:
                self.store.add(self.chat_id, StoredMessage("system", self.settings.system))
            shown = f"system prompt: {self.settings.system}" if self.settings.system else "system prompt cleared"
            self.query_one("#log", VerticalScroll).mount(Note(shown))
            self.notify(f"{shown[:60]} (from the next message on)")

        self.push_screen(
            AskScreen("System prompt for this chat (empty: the model's own; Enter sets it):", self.settings.system),
            given,
        )

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
        self.exchange = self.last_reply = None
        self.editing = False
        self.settings.system = ""
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
        self.history = [stored_turn(m) for m in messages if m.role in CONVERSATION]
        self.settings.system = next((m.content for m in reversed(messages) if m.role == "system"), "")
        self.pending_calls = []
        self.last_prompt = next((m.content for m in reversed(messages) if m.role == "user"), None)
        self.exchange = self.last_reply = None
        self.editing = False
        log = self.query_one("#log", VerticalScroll)
        log.remove_children()
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
