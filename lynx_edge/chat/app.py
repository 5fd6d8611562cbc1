"""``lynx-edge chat``: a Textual terminal chat on the runtime's event API.

The app routes keys, commands and settings; the ``Conversation`` widget owns the chat on
screen (its context, its stored history, its replies as they stream from the model thread:
``conversation``, ``replies``). Persistence lives in ``ChatStore``, the session tally in
``display.SessionTotals``, what the next reply runs with in ``settings``, the loaded models in
``models``, the screens in ``screens``, the styles in ``chat.tcss``. Every key has a command in
the palette (Ctrl+P) too; an action that waits for the answer is disabled while one is written
(``check_action``, in one place).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from lynx_edge.chat.conversation import Conversation
from lynx_edge.chat.models import LoadedModels, model_key
from lynx_edge.chat.replies import Turn
from lynx_edge.chat.screens import AskScreen, CompareScreen, HelpScreen, HistoryScreen, ModelScreen
from lynx_edge.chat.settings import COMMANDS, ReplySettings, step_level
from lynx_edge.chat.store import ChatStore
from lynx_edge.errors import LynxError, SettingError
from lynx_edge.events import Event
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.model_files import available_models
from lynx_edge.runtime.model_thread import ModelThread
from lynx_edge.runtime.options import GenerationOptions, effort_asks
from lynx_edge.runtime.presets import DEFAULT_PRESET

RESULT_COMMAND = "/result"
WAIT_FOR_THE_ANSWER = ("regenerate", "edit_last", "compare")  # disabled while a reply is written


class ChatApp(App[None]):
    """The chat. ``load_engine`` runs on the model thread; its error is shown, not raised."""

    TITLE = "lynx-edge"
    AUTO_FOCUS = "#prompt"
    CSS_PATH = Path(__file__).parent / "chat.tcss"  # absolute: subclasses elsewhere still find it
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("f2", "toggle_lynx", "Exit on/off"),
        Binding("f3", "step_alpha(-1)", "α−"),
        Binding("f4", "step_alpha(1)", "α+"),
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
        Binding("f1", "push_screen('help')", "Help"),
    ]
    SCREENS = {"help": HelpScreen}

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
        self.chat = Conversation(self.store, self.model, self.cancel_model, measure_savings=measure_savings)

    def cancel_model(self) -> None:
        """Stop what the model thread runs (a reply, a comparison, a savings measurement)."""
        if self.engine is not None:
            self.engine.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The actions that act on the last exchange wait for its answer (shown disabled)."""
        return None if action in WAIT_FOR_THE_ANSWER and self.chat.answering else True

    # ---- layout and start ------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield self.chat
        yield Footer()

    def on_mount(self) -> None:
        self.load_model(self.model_spec)

    def load_model(self, spec: str) -> None:
        """Load ``spec`` on the model thread (behind whatever runs there), saying so meanwhile."""
        self.loading = (spec, time.monotonic())
        self.sub_title = f"loading {spec} …"
        self.refresh_meter()
        ticker = self.set_interval(0.5, self.refresh_meter)
        ready, failed = (
            partial(self.call_from_thread, then, spec, ticker) for then in (self.engine_ready, self.engine_failed)
        )
        self.model.submit(self.models.load_then, spec, ready, failed)

    def engine_ready(self, spec: str, ticker: Any, engine: Engine, cached: bool) -> None:
        ticker.stop()
        seconds = time.monotonic() - self.loading[1] if self.loading else 0.0
        self.loading = None
        switched = self.engine is not None and self.engine is not engine
        self.engine, self.model_spec = engine, spec
        wanted = self.settings.alpha if switched else self.defaults.alpha
        self.settings.alpha = self.level_for(effort_asks(self.settings.effort, wanted)[1])
        self.chat.box.placeholder = "Ask something · Enter sends · F1 help · Ctrl+P commands"
        self.chat.n_ctx = engine.describe().n_ctx
        self.refresh_header()
        self.refresh_meter()
        for line in engine.notices:
            self.notify(line, title="early exit", severity="warning", timeout=20)
        if switched:
            how = "already loaded" if cached else "loaded"
            self.chat.note(f"model: {engine.model_name} ({self.policy_words()}) · {how} in {seconds:.2f} s")

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

    def engine_failed(self, spec: str, ticker: Any, message: str) -> None:
        ticker.stop()
        self.loading = None
        self.refresh_meter()
        if self.engine is None:
            self.sub_title = "no model loaded"
            self.chat.box.placeholder = "no model loaded (see the notice) · F6 history still works"
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

    def refresh_meter(self) -> None:
        loading = self.loading
        self.chat.meter_prefix = f"loading {loading[0]} … {time.monotonic() - loading[1]:.0f} s · " if loading else ""
        self.chat.show_meter()

    # ---- sending ---------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        chat = self.chat
        if not text:
            return
        if self.engine is None or self.loading:
            waiting = "the model is still loading: wait for it"
            self.notify(waiting if self.loading else "no model is loaded: press F8 to pick one", severity="error")
            return
        if chat.answering:
            self.notify("still answering: press Esc to cancel first", severity="warning")
            return
        if text.startswith(RESULT_COMMAND):
            await self.answer_call(text.removeprefix(RESULT_COMMAND).strip())
            return
        context, turns = chat.context_for(text)
        events = self.generate(context, lynx=self.settings.lynx, measure=self.measure_savings)
        if events is None:  # context full, bad setting: the typed text stays in the box
            return
        event.input.value = ""
        await chat.ask(text, events, turns, self.made_with(), (self.engine, self.settings.system))

    async def answer_call(self, result: str) -> None:
        """``/result``: the first waiting call's result goes into the context (the model is
        asked to go on once every call has one, or when the user types on)."""
        chat = self.chat
        if not chat.pending_calls:
            self.notify("no tool call is waiting for a result", severity="warning")
            return
        chat.box.value = ""
        await chat.add_result(result)
        if chat.pending_calls:
            self.notify(f"{len(chat.pending_calls)} more call(s) wait for a result")
            return
        events = self.generate(chat.history, lynx=self.settings.lynx, measure=self.measure_savings)
        if events is not None:
            await chat.reply(events, self.made_with())

    def made_with(self) -> dict[str, Any]:
        """The model and settings a reply is stored with."""
        return self.settings.made_with(self.engine.model_name, self.policy_words())

    def generate(
        self, history: list[dict[str, Any]], *, lynx: bool, measure: bool, seed: int | None = None
    ) -> Iterator[Event] | None:
        """The reply to ``history`` (the chat's system prompt first) under the current
        settings; None when it cannot be sent (said in a notice)."""
        assert self.engine is not None
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        options = self.settings.options(
            self.defaults,
            lynx=lynx,
            measure_savings=measure and lynx,
            seed=self.defaults.seed if seed is None else seed,
        )
        try:
            return self.engine.generate([*system, *history], options)
        except LynxError as exc:
            self.notify(str(exc), title="not sent", severity="error", timeout=15)
            return None

    # ---- the palette -------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key's action, each budget and effort by name, a custom budget (and Textual's
        own: theme, keys, quit). Commands run as the keys do, through ``check_action``."""
        yield from super().get_system_commands(screen)
        for title, help, action in COMMANDS:
            yield SystemCommand(title, help, lambda a=action: self.run_action(a))

    # ---- settings for the next reply ---------------------------------------------------
    def action_cancel(self) -> None:
        chat = self.chat
        if chat.answering:
            self.cancel_model()
        elif chat.editing:
            chat.editing = False
            chat.box.value = ""
            self.notify("editing cancelled: the last exchange stays")

    def changed(self, what: str) -> None:
        self.refresh_header()
        self.notify(f"{what} for the next message")

    def action_toggle_lynx(self) -> None:
        self.changed(self.settings.toggle_lynx())

    def action_toggle_thinking(self) -> None:
        self.changed(self.settings.toggle_thinking())

    def action_next_budget(self) -> None:
        self.changed(self.settings.set_budget(self.settings.next_budget()))

    def action_set_budget(self, budget: int | None) -> None:
        self.changed(self.settings.set_budget(budget))

    def action_custom_budget(self) -> None:
        def given(text: str | None) -> None:
            if text is not None:
                try:
                    self.changed(self.settings.set_budget_text(text))
                except SettingError as exc:
                    self.notify(str(exc), severity="error")

        current = str(self.settings.budget or "")
        self.push_screen(
            AskScreen("Thinking budget in tokens (Enter sets it, Esc keeps the current one):", current, "e.g. 300"),
            given,
        )

    def action_next_effort(self) -> None:
        self.action_set_effort(self.settings.next_effort())

    def action_set_effort(self, effort: str) -> None:
        """An effort word picks the risk level through the card's calibrated levels, as F3/F4
        step through them; "max" thinks to the end (early exit off)."""
        self.settings.lynx, asked = effort_asks(effort, None)
        self.settings.effort = effort
        if asked is not None and (self.engine is None or self.engine.card is None):
            self.notify(f"effort {effort}: no probe loaded, so there is no risk level to set", severity="warning")
        elif asked is not None:
            self.settings.alpha = self.level_for(asked)
        level = f" (α={self.settings.alpha:g})" if self.settings.lynx and self.settings.alpha is not None else ""
        self.changed(f"effort {effort}{level}")

    def action_step_alpha(self, step: int) -> None:
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
            if self.chat.feed.busy:
                self.cancel_model()  # an answer, or a savings measurement: the load waits for neither
            self.load_model(spec)

        choices, key = available_models(), model_key(self.model_spec)
        current = next((c.name for c in choices if model_key(c.name) == key), self.model_spec)  # the picker's name
        self.push_screen(ModelScreen(choices, current=current), picked)

    def action_system_prompt(self) -> None:
        def given(text: str | None) -> None:
            if text is None or text.strip() == self.settings.system:
                return
            self.settings.system = text.strip()
            shown = self.chat.set_system(self.settings.system)
            self.notify(f"{shown[:60]} (from the next message on)")

        self.push_screen(
            AskScreen("System prompt for this chat (empty: the model's own; Enter sets it):", self.settings.system),
            given,
        )

    # ---- acting on the chat ------------------------------------------------------------
    def action_copy_answer(self) -> None:
        text = self.chat.answer_text()
        if text is None:
            self.notify("no answer to copy yet", severity="warning")
            return
        self.copy_to_clipboard(text)
        self.notify(f"answer copied ({len(text)} characters)")

    def action_copy_message(self) -> None:
        text = self.chat.message_text()
        if text is None:
            self.notify("no message to copy yet", severity="warning")
            return
        self.copy_to_clipboard(text)
        self.notify(f"message copied ({len(text)} characters, Markdown)")

    async def action_regenerate(self) -> None:
        """The last reply again, under the current settings (and model); the old one is gone."""
        chat = self.chat
        if self.engine is None or self.loading or chat.last_reply is None or chat.chat_id is None:
            self.notify("nothing to regenerate yet: send a prompt first", severity="warning")
            return
        context = chat.regenerate_context()
        events = self.generate(context, lynx=self.settings.lynx, measure=self.measure_savings)
        if events is not None:
            await chat.replace_last_reply(context, events, self.made_with())

    def action_edit_last(self) -> None:
        if self.chat.exchange is None:
            self.notify("no prompt to edit yet", severity="warning")
            return
        self.chat.edit_last()
        self.notify("editing the last prompt: Enter resends it in place of the last exchange · Esc keeps it")

    def action_compare(self) -> None:
        turn = self.chat.turn
        if self.engine is None or turn is None or turn.view.result is None or self.chat.last_prompt is None:
            self.notify("nothing to compare yet: send a prompt first", severity="warning")
            return
        screen = CompareScreen(turn.view)
        events = self.generate(self.chat.compare_context(), lynx=False, measure=False, seed=turn.view.result.seed)
        if events is None:
            return

        def rerun_done() -> None:
            if self.screen is screen:
                screen.finished()

        self.push_screen(screen)
        self.chat.begin(Turn(screen.full_view, None, compare=True, on_answer=rerun_done), events)

    def action_new_chat(self) -> None:
        if self.chat.answering:
            self.action_cancel()
        self.chat.clear()
        self.settings.system = ""
        self.notify("new chat")

    def action_history(self) -> None:
        def reopen(chat_id: int | None) -> None:
            if chat_id is not None:
                self.open_chat(chat_id)

        self.push_screen(HistoryScreen(self.store), reopen)

    def open_chat(self, chat_id: int) -> None:
        if self.chat.answering:
            self.action_cancel()
        self.settings.system = self.chat.open(chat_id)
        self.notify(f"reopened: {self.store.title(chat_id)}")

    def action_export(self) -> None:
        if self.chat.chat_id is None:
            self.notify("nothing to export yet: send a prompt first", severity="warning")
            return
        path = self.export_dir / f"lynx-chat-{self.chat.chat_id}.md"
        path.write_text(self.chat.markdown(), encoding="utf-8")
        self.notify(f"exported to {path}")

    def on_unmount(self) -> None:
        """Quit mid-answer: stop the model, keep what was written."""
        self.cancel_model()
        self.chat.save_all()
        self.store.close()
        self.model.shutdown()
