"""The chat's modal screens: help, history, the model picker, a one-line question (system
prompt, custom budget), and the side-by-side comparison."""

from __future__ import annotations

import time

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, ListItem, ListView, Markdown, Static

from lynx_edge.chat.store import ChatStore
from lynx_edge.chat.view import AssistantMessage
from lynx_edge.runtime.model_files import ModelChoice

HELP = """\
# lynx-edge chat

The model thinks (dimmed block), then answers. At each **cue** in the thinking
("Wait", "Hmm", "Alternatively") the exit policy judges whether answering now is safe:

- `⟨wait 0.120<0.450⟩` (cyan) — the probe's score is below the threshold: thinking goes on;
- `⟨wait 0.830≥0.450⟩` (green) — the score cleared it: **✂** marks where the thinking was cut.

With a probe the threshold comes from conformal calibration at the risk level **α** in the
header. A model without one uses a training-free policy (a trial answer at each cue), which
carries no risk guarantee. After an answer that exited, the runtime finishes the un-exited
thinking in the background and reports the exact **tokens saved** ("—" until measured).

| key | action |
|---|---|
| Enter | send |
| Esc | cancel the answer (what was written stays) |
| F2 | early exit on / off for the next message |
| F3 / F4 | stricter / looser risk level α (calibrated values only) |
| Ctrl+F | effort: low → medium → high → xhigh → max (picks α; max: exit off) |
| Ctrl+T | thinking on / off |
| Ctrl+B | thinking budget: none → 256 → 512 → 1024 tokens (custom: Ctrl+P) |
| F8 | switch the model (the chat goes on with it) |
| Ctrl+O / Ctrl+Y | copy the last answer / the whole last message |
| Ctrl+R | regenerate the last reply |
| F9 | edit the last prompt (Enter resends it in place of the last exchange) |
| F10 | system prompt for this chat |
| F5 | compare: rerun the last prompt without early exit, side by side |
| Ctrl+N | new chat |
| F6 | history: reopen an earlier chat |
| F7 | export this chat to Markdown |
| F12 | theme |
| Ctrl+P | command palette: every action above, custom budget, theme |
| F1 | this help |
| Ctrl+Q | quit (everything is already saved) |

The line above the prompt is the meter: context used of the context size by the last reply
and how much of it was thinking, then the session's answers, exits and tokens saved.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]
    AUTO_FOCUS = "VerticalScroll"

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)


class HistoryScreen(ModalScreen[int | None]):
    """Earlier chats, newest first; Enter reopens one."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]
    AUTO_FOCUS = "ListView"

    def __init__(self, store: ChatStore) -> None:
        super().__init__()
        self.chats = store.chats()

    def compose(self) -> ComposeResult:
        items = [
            ListItem(
                Label(
                    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(c.updated))}  {c.title}  ({c.messages} messages)"
                )
            )
            for c in self.chats
        ]
        yield ListView(*items) if items else ListView(ListItem(Label("no saved chats yet")))

    @on(ListView.Selected)
    def chosen(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        self.dismiss(self.chats[index].id if self.chats and index is not None else None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ModelScreen(ModalScreen[str | None]):
    """The models this machine can run (presets and GGUFs in the cache); Enter picks one."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]
    AUTO_FOCUS = "ListView"

    def __init__(self, choices: list[ModelChoice], current: str | None) -> None:
        super().__init__()
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        yield Static("[b]Switch the model[/b] · the conversation goes on with it", classes="title")
        items = []
        for c in self.choices:
            mark = "●" if c.name == self.current else " "
            probe = "probe ✓" if c.probe else "no probe"
            items.append(ListItem(Label(f"{mark} {c.name}  ({probe})\n    {c.description}\n    {c.where}")))
        yield ListView(*items, initial_index=self.initial())

    def initial(self) -> int:
        return next((i for i, c in enumerate(self.choices) if c.name == self.current), 0)

    @on(ListView.Selected)
    def chosen(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        self.dismiss(self.choices[index].name if index is not None else None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One line to type (a system prompt, a budget): Enter gives it, Esc gives None."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    AUTO_FOCUS = "Input"

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        yield Label(self.question)
        yield Input(self.value, placeholder=self.placeholder)

    @on(Input.Submitted)
    def given(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class CompareScreen(ModalScreen[None]):
    """The last reply with early exit beside a rerun of the same prompt without it."""

    BINDINGS = [Binding("escape", "close", "Close (cancels the rerun)")]
    AUTO_FOCUS = "#full-side"

    def __init__(self, lynx_view: AssistantMessage) -> None:
        super().__init__()
        self.lynx_view = lynx_view
        self.full_view = AssistantMessage(label="Thinking (exit off)", id="full")

    def compose(self) -> ComposeResult:
        with Horizontal():
            with VerticalScroll(id="lynx-side"):
                yield Static("[b]early exit on[/b]")
                yield AssistantMessage(label="Thinking (exit on)", id="lynx")
            with VerticalScroll(id="full-side"):
                yield Static("[b]early exit off[/b]")
                yield self.full_view
        yield Static("running the full thinking …", id="saving")
        yield Footer()

    def on_mount(self) -> None:
        src = self.lynx_view
        lynx = self.query_one("#lynx", AssistantMessage)
        lynx.show_stored(src.thinking_plain, src.answer, src.stats_text, src.header)
        lynx.fold.collapsed = False

    def finished(self) -> None:
        a, b = self.lynx_view.result, self.full_view.result
        if a is None or b is None:
            return
        used_a, used_b = a.tokens.completion, b.tokens.completion
        diff = used_b - used_a
        if diff >= 0:
            verdict = f"saved {diff} tokens ({diff / used_b:.0%})" if used_b else "saved 0 tokens"
        else:
            verdict = f"the exit cost {-diff} extra tokens"
        capped = "" if b.finish_reason == "stop" else f" · full run {b.finish_reason} (the saving is a lower bound)"
        self.query_one("#saving", Static).update(
            f"early exit used {used_a} tokens, full thinking {used_b}: {verdict}{capped}"
        )

    def action_close(self) -> None:
        self.app.action_cancel()
        self.dismiss(None)
