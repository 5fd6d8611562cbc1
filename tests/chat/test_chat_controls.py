"""The chat's everyday controls, driven as a user would with Textual's pilot on the real
embedded models: thinking on/off, budget, effort, model switch, copy, regenerate, edit the
last prompt, system prompt, theme — each by its key and by its command in the palette — the
thinking header, the meter, and what the history keeps of each reply.

One session in a real terminal (tmux) does it end to end: ask, switch the model, ask again,
copy the answer, regenerate, quit; the history holds both models."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.command import CommandInput, CommandPalette
from textual.widgets import ListView

from lynx_edge.chat.screens import AskScreen, CompareScreen, ModelScreen
from lynx_edge.chat.view import Note
from lynx_edge.runtime.options import EFFORT_ALPHA
from tests.chat.test_chat import PROBLEM, PROMPT, SIZE, ask, first_answer, make_app, messages, ready, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


REASONER = "smollm2-135m-reasoner"


async def palette(pilot, command: str) -> None:
    """Run ``command`` from the command palette (Ctrl+P), typed as a user would."""
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
    pilot.app.screen.query_one(CommandInput).value = command
    await pilot.pause(0.3)  # the palette gathers its matches
    while isinstance(pilot.app.screen, CommandPalette):
        await pilot.press("enter")  # highlights the best match, then runs it
        await pilot.pause(0.2)


async def answered(pilot, text: str = PROMPT):
    view = await ask(pilot, text)
    await until(pilot, lambda: view.result is not None and pilot.app.chat.feed.running.shown)
    return view


async def pick_model(pilot, name: str) -> None:
    """Choose ``name`` in the model picker (F8) and wait until the chat runs on it."""
    await pilot.press("f8")
    await until(pilot, lambda: isinstance(pilot.app.screen, ModelScreen))
    screen = pilot.app.screen
    screen.query_one(ListView).index = [c.name for c in screen.choices].index(name)
    await pilot.press("enter")
    await until(pilot, lambda: pilot.app.loading is None and pilot.app.model_spec == name)


async def test_thinking_budget_and_effort_keys_change_the_next_reply(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "thinking on" in app.sub_title
        await pilot.press("ctrl+b")
        assert app.settings.budget == 256 and "budget 256 tok" in app.sub_title
        await pilot.press("ctrl+b", "ctrl+b", "ctrl+b")  # 512, 1024, back to none
        assert app.settings.budget is None and "budget" not in app.sub_title
        await pilot.press("ctrl+f")  # effort low: the card's level for α 0.2
        assert app.settings.effort == "low" and app.settings.alpha == app.engine.rule_for(EFFORT_ALPHA["low"]).level
        assert "effort low" in app.sub_title and f"α {app.settings.alpha:g}" in app.sub_title
        await pilot.press("ctrl+f", "ctrl+f", "ctrl+f", "ctrl+f")  # medium, high, xhigh, max
        assert app.settings.effort == "max" and not app.settings.lynx and "exit off" in app.sub_title
        await pilot.press("ctrl+f")  # low again: exits back on
        assert app.settings.lynx and "exit on" in app.sub_title
        await pilot.press("ctrl+t")
        assert not app.settings.think and "thinking off" in app.sub_title
        view = await answered(pilot)
        assert view.result.tokens.thinking < 16 and view.answer  # answered without thinking it through
        stored = app.store.messages(app.chat.chat_id)[-1]
        assert "thinking off" in stored.stats["settings"] and stored.stats["model"] == app.engine.model_name
        assert stored.stats["options"]["think"] is False and stored.stats["options"]["effort"] == "low"
        await pilot.press("ctrl+t")
        assert app.settings.think


async def test_a_custom_budget_from_the_palette_cuts_the_thinking_there(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False, max_tokens=300)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await palette(pilot, "Thinking budget: custom")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        app.screen.query_one("Input").value = "forty"
        await pilot.press("enter")  # not a number: said, nothing changes
        assert app.settings.budget is None and any("not a budget" in n for n in app.notices)
        await palette(pilot, "Thinking budget: custom")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        app.screen.query_one("Input").value = "24"
        await pilot.press("enter")
        assert app.settings.budget == 24 and "budget 24 tok" in app.sub_title
        await pilot.press("f2")  # exits off: only the budget can close the thinking
        view = await answered(pilot, PROBLEM)
        assert view.result.exit is not None and view.result.exit.policy == "budget"
        assert "by the budget" in str(view.fold.title) and "Thought for" in str(view.fold.title)


async def test_header_meter_copy_regenerate_edit_and_system_prompt(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        view = await first_answer(pilot)
        r = view.result
        title = str(view.fold.title)  # the thinking block's header
        assert f"Thought for {r.thinking_seconds:.1f} s" in title and f"{r.tokens.thinking} tok" in title
        assert f"cut at '{r.exit.cue}'" in title
        # this probe was calibrated with boxed exits and the chat exits by concluding: it says so
        assert not r.guarantee and "α 0.1 (harm) estimated, not guaranteed" in title
        used = r.tokens.prompt + r.tokens.completion
        meter = str(app.query_one("#totals").render())
        assert f"context {used}/{app.engine.backend.n_ctx}" in meter
        assert f"thinking {r.tokens.thinking / used:.0%} of it" in meter and "session: 1 answers" in meter

        await pilot.press("ctrl+o")
        assert app.clipboard == r.answer
        await pilot.press("ctrl+y")
        assert "## Assistant" in app.clipboard and r.answer in app.clipboard and r.thinking[:40] in app.clipboard
        assert app.engine.model_name in app.clipboard and "thinking on" in app.clipboard

        await pilot.press("ctrl+r")  # regenerate: the old reply goes, a new one takes its place
        await until(pilot, lambda: app.chat.turn.view is not view and app.chat.turn.view.result is not None)
        await until(pilot, lambda: app.chat.feed.running.shown)
        assert messages(app) == [PROMPT, "assistant"]
        assert [m.role for m in app.store.messages(app.chat.chat_id)] == ["user", "assistant"]
        assert [m["role"] for m in app.chat.history] == ["user", "assistant"]

        await pilot.press("f9")  # edit the last prompt: back in the box
        assert app.query_one("#prompt").value == PROMPT and app.chat.editing
        edited = "A pen costs 3 dollars. How much do 4 pens cost?"
        await answered(pilot, edited)
        assert messages(app) == [edited, "assistant"] and not app.chat.editing
        assert [m.content for m in app.store.messages(app.chat.chat_id) if m.role == "user"] == [edited]
        assert app.chat.history[0] == {"role": "user", "content": edited}

        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        app.screen.query_one("Input").value = "You are a careful math tutor."
        await pilot.press("enter")
        assert app.settings.system == "You are a careful math tutor."
        assert "system prompt: You are a careful math tutor." in [str(n.render()) for n in app.query(Note)]
        third = await answered(pilot, "What is 7 + 5?")
        sent = "".join(app.engine.token_texts(third.result.prompt_ids))
        assert "You are a careful math tutor." in sent
        await pilot.press("f7")
        exported = (tmp_path / f"lynx-chat-{app.chat.chat_id}.md").read_text()
        assert "## System prompt\n\nYou are a careful math tutor." in exported
        assert "<summary>Thought for" in exported and f"_{app.engine.model_name} · thinking on" in exported


async def test_every_palette_command_does_what_its_key_does(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await palette(pilot, "Thinking on/off")
        assert not app.settings.think
        await palette(pilot, "Thinking on/off")
        assert app.settings.think
        await palette(pilot, "Thinking budget: 512")
        assert app.settings.budget == 512
        await palette(pilot, "Thinking budget: none")
        assert app.settings.budget is None
        await palette(pilot, "Effort: high")
        assert app.settings.effort == "high" and app.settings.alpha == app.engine.rule_for(0.05).level
        await palette(pilot, "Early exit on/off")
        assert not app.settings.lynx
        await palette(pilot, "Early exit on/off")
        assert app.settings.lynx
        await palette(pilot, "Switch model")
        await until(pilot, lambda: isinstance(app.screen, ModelScreen))
        assert {"smollm2-135m", REASONER} <= {c.name for c in app.screen.choices}
        await pilot.press("escape")
        await palette(pilot, "System prompt")
        await until(pilot, lambda: isinstance(app.screen, AskScreen))
        await pilot.press("escape")  # Esc keeps the current one
        assert app.settings.system == ""
        before = app.theme
        await palette(pilot, "Theme")  # Textual's theme list opens; Enter takes its first theme
        assert app.theme != before
        await pilot.press("f12")  # the theme key opens the same list
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        app.screen.query_one(CommandInput).value = "nord" if app.theme != "nord" else "gruvbox"
        await pilot.pause(0.3)
        while isinstance(app.screen, CommandPalette):
            await pilot.press("enter")
            await pilot.pause(0.2)
        assert app.theme in ("nord", "gruvbox")

        view = await answered(pilot)
        await palette(pilot, "Copy answer")
        assert app.clipboard == view.result.answer
        await palette(pilot, "Copy message")
        assert "## Assistant" in app.clipboard
        await palette(pilot, "Regenerate")
        await until(pilot, lambda: app.chat.turn.view is not view and app.chat.turn.view.result is not None)
        await until(pilot, lambda: app.chat.feed.running.shown)
        await palette(pilot, "Edit last prompt")
        assert app.query_one("#prompt").value == PROMPT and app.chat.editing
        await pilot.press("escape")  # Esc: editing off, the exchange stays
        assert not app.chat.editing and messages(app) == [PROMPT, "assistant"]
        await palette(pilot, "Compare")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        await until(pilot, lambda: app.screen.full_view.result is not None)
        await pilot.press("escape")
        await palette(pilot, "Export")
        assert (tmp_path / f"lynx-chat-{app.chat.chat_id}.md").is_file()


async def test_switching_the_model_mid_chat_goes_on_and_is_in_the_history(
    smol: Path, reasoner: Path, tmp_path: Path
) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        first = await first_answer(pilot)
        base_name = app.engine.model_name
        await pick_model(pilot, REASONER)
        assert app.engine.model_name != base_name and app.engine.model_name in app.title
        note = str(app.query(Note).last().render())
        assert f"model: {app.engine.model_name}" in note and "loaded in" in note
        second = await answered(pilot, "And how much do 5 shirts cost?")
        assert second.result.model == app.engine.model_name
        # its own probe; the card was calibrated on single questions, so a second turn is an
        # estimate, and the reply says why
        assert second.result.probe and not second.result.guarantee
        assert any("earlier turn" in why for why in second.result.estimate_because)
        assert "estimated, not guaranteed" in str(second.fold.title)
        assert app.chat.history[:2] == [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": first.result.answer},
        ]  # the conversation went on
        await pick_model(pilot, "smollm2-135m")  # back: already loaded, no reload
        assert "already loaded" in str(app.query(Note).last().render()) and app.engine.model_name == base_name
        engine = app.engine
        app.load_model(str(tmp_path / "missing.gguf"))  # a file that is not there: said, the chat stays
        await until(pilot, lambda: app.loading is None)
        assert app.engine is engine and any("model file not found" in n for n in app.notices)
        stored = app.store.messages(app.chat.chat_id)
        models = [m.stats["model"] for m in stored if m.role == "assistant"]
        assert models == [base_name, second.result.model]
        assert [m.role for m in stored] == ["user", "assistant", "note", "user", "assistant", "note"]
        await pilot.press("f7")
        exported = (tmp_path / f"lynx-chat-{app.chat.chat_id}.md").read_text()
        assert f"> model: {second.result.model}" in exported and f"_{base_name} · " in exported


def test_tmux_session_ask_switch_ask_copy_regenerate_quit(reasoner: Path, tmp_path: Path) -> None:
    """`lynx-edge chat` in tmux, as a user drives it: every key goes through a real terminal."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is needed for this test (.ci/run installs it)"
    socket = str(tmp_path / "tmux.sock")
    home = tmp_path / "home"
    env = {**os.environ, "LYNX_EDGE_HOME": str(home), "TERM": "xterm-256color"}

    def tmux_run(*args: str) -> str:
        return subprocess.run([tmux, "-S", socket, *args], capture_output=True, text=True, env=env, check=True).stdout

    def screen() -> str:
        return tmux_run("capture-pane", "-p", "-t", "chat")

    def wait_for(condition, what: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while not condition(shown := screen()):
            assert time.monotonic() < deadline, f"{what} never appeared:\n{shown}"
            time.sleep(0.3)
        return shown

    def keys(*names: str) -> None:
        tmux_run("send-keys", "-t", "chat", *names)

    command = f"{sys.executable} -m lynx_edge chat --model smollm2-135m --max-tokens 160 --no-measure-savings"
    tmux_run("-f", "/dev/null", "new-session", "-d", "-s", "chat", "-x", "120", "-y", "45", command)
    try:
        tmux_run("set-option", "-g", "set-clipboard", "on")  # OSC 52 copies land in tmux's buffer
        wait_for(lambda s: "Ask something" in s, "the prompt")
        keys("-l", PROMPT)
        keys("Enter")
        wait_for(lambda s: "tok/s" in s, "the first answer's stats")
        keys("F8")
        wait_for(lambda s: "Switch the model" in s, "the model picker")
        keys("Up")  # from the model in use to the one above it: the reasoner (the default, listed first)
        keys("Enter")
        wait_for(lambda s: "loaded in" in s, "the model switch")
        keys("-l", "And how much do 5 shirts cost?")
        keys("Enter")
        wait_for(lambda s: s.count("tok/s") >= 2, "the second answer's stats")
        keys("C-o")
        wait_for(lambda s: "answer copied" in s, "the copy notice")
        copied = tmux_run("show-buffer")
        last = last_reply(home)
        assert copied == last[1]  # the answer itself, through the terminal (OSC 52)
        keys("C-r")
        wait_for(lambda s: "session: 3 answers" in s, "the regenerated reply")
        keys("C-q")
        deadline = time.monotonic() + 120  # quitting saves the chat: slow on a loaded machine
        while "chat" in subprocess.run([tmux, "-S", socket, "ls"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the chat did not quit"
            time.sleep(0.3)
    finally:
        subprocess.run([tmux, "-S", socket, "kill-server"], capture_output=True)
    rows = history_rows(home)
    replies = [json.loads(stats) for role, _, stats, _ in rows if role == "assistant"]
    assert len(replies) == 2 and "header" in replies[1]  # the regenerated reply replaced the second one
    assert len({r["model"] for r in replies}) == 2  # both models are in the history
    assert any(role == "note" and "model:" in content for role, content, _, _ in rows)


def history_rows(home: Path) -> list[tuple[str, str, str, int]]:
    """(role, content, stats, id) of every stored message, oldest first (read while the chat runs)."""
    with sqlite3.connect(home / "chats.sqlite3") as db:
        return db.execute("SELECT role, content, stats, id FROM messages ORDER BY id").fetchall()


def last_reply(home: Path) -> tuple[int, str, dict]:
    """The newest assistant message: its id, its text, its stats."""
    _, content, stats, id_ = [r for r in history_rows(home) if r[0] == "assistant"][-1]
    return id_, content, json.loads(stats)
