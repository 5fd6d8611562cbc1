"""`lynx-edge chat` driven by Textual's pilot on the real embedded model (SmolLM2 + its probe),
and once in a real terminal (tmux). Waits poll widget state; nothing asserts on a sleep."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lynx_edge.chat.app import ChatApp
from lynx_edge.chat.replies import DRAIN_SECONDS, next_drain_delay
from lynx_edge.chat.screens import CompareScreen, HelpScreen, HistoryScreen
from lynx_edge.chat.settings import step_level
from lynx_edge.chat.store import ChatStore
from lynx_edge.chat.view import LIVE_LINES, AssistantMessage, UserMessage
from lynx_edge.cli import main
from lynx_edge.errors import ModelError
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.options import GenerationOptions

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


PROMPT = "A shirt costs 12 dollars. How much do 3 shirts cost?"
PROBLEM = "Elena buys 8 cards for 23 dollars each and pays with 200 dollars. How much change does Elena get?"
LONG_PROMPT = "Write a long story about a cat who learns to fly."  # greedy: thousands of tokens
SIZE = (110, 40)


class RecordingApp(ChatApp):
    """The chat, remembering every notice it showed (through its public notify)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notices: list[str] = []

    def notify(self, message: str, **kwargs) -> None:
        self.notices.append(message)
        super().notify(message, **kwargs)


def make_app(model: Path, tmp_path: Path, **kwargs) -> RecordingApp:
    return RecordingApp(
        load,
        GenerationOptions(max_tokens=kwargs.pop("max_tokens", 160), loop_guard=kwargs.pop("loop_guard", True)),
        model=str(model),
        store=ChatStore(tmp_path / "chats.sqlite3"),
        export_dir=tmp_path,
        **kwargs,
    )


def load(spec: str) -> Engine:
    """The chat's model loader in tests: two threads, the shipped probe when one fits."""
    return Engine(spec, n_threads=2)


async def until(pilot, condition, timeout: float = 600.0) -> None:
    """Wait for ``condition`` (an event in the app), however long a loaded machine takes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for the app: {_state(pilot.app)}"
        await pilot.pause(0.05)


def _state(app: ChatApp) -> str:
    turn = app.chat.turn
    view = turn.view if turn else None
    return (
        f"screen={type(app.screen).__name__} answering={app.chat.answering} "
        f"finished={turn.finished.is_set() if turn else None} result={view.result if view else None} "
        f"thinking={view.thinking_plain[-200:] if view else ''!r}"
    )


async def ready(pilot) -> None:
    await until(pilot, lambda: pilot.app.engine is not None)


async def ask(pilot, text: str = PROMPT) -> AssistantMessage:
    before = pilot.app.chat.turn
    pilot.app.query_one("#prompt").value = text
    await pilot.press("enter")
    await until(pilot, lambda: pilot.app.chat.turn is not before)
    return pilot.app.chat.turn.view


async def first_answer(pilot) -> AssistantMessage:
    """Wait for the model, ask PROMPT, and wait until the reply and its worker are done."""
    await ready(pilot)
    view = await ask(pilot)
    await until(pilot, lambda: view.result is not None and pilot.app.chat.feed.running.shown)
    return view


def messages(app: ChatApp) -> list[str]:
    return [str(w.render()) if isinstance(w, UserMessage) else "assistant" for w in app.query_one("#log").children]


async def test_prompt_streams_thinking_cues_exit_answer_and_measured_saving(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert "smollm2-135m" in app.sub_title and "α 0.1" in app.sub_title and "exit on" in app.sub_title
        view = await ask(pilot)
        await until(pilot, lambda: view.savings is not None)
        thinking = str(view.block.render())  # what the screen shows
        assert view.reply.cues and view.reply.cues[-1].decision == "exit"
        assert "✂ thinking cut at" in thinking and "≥" in thinking  # cue marked with score vs threshold
        assert "boxed" in view.answer
        stats = view.stats_text
        assert "thinking" in stats and "tok/s" in stats and "probe calls" in stats
        assert f"saved {view.savings.tokens_saved} tok" in stats and view.savings.tokens_saved > 0
        await until(pilot, lambda: f"saved {view.savings.tokens_saved} tok" in str(app.query_one("#totals").render()))
        assert "1 answers · 1 exits" in str(app.query_one("#totals").render())


async def test_escape_cancels_keeps_text_and_the_app_stays_usable(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, max_tokens=4000)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")  # exits off: the model thinks on, so there is time to cancel
        assert "exit off" in app.sub_title
        view = await ask(pilot, LONG_PROMPT)
        await until(pilot, lambda: len(view.thinking_plain) > 20)
        await pilot.press("escape")
        await until(pilot, lambda: view.result is not None and app.chat.feed.running.shown)
        assert view.result.finish_reason == "cancelled"
        assert not view.result.exited and all(c.decision == "off" for c in view.reply.cues)
        kept = view.thinking_plain
        assert kept.strip() == view.result.thinking  # what streamed is what the result holds
        stored = app.store.messages(app.chat.chat_id)
        assert stored[1].thinking == kept  # what was written is in the history
        second = await ask(pilot, "What is 2 + 2?")
        await until(pilot, lambda: second.result is not None)
        assert second.result.finish_reason in ("stop", "length")


async def test_thinking_streams_as_a_live_tail_and_quitting_saves_every_token(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, max_tokens=4000, loop_guard=False)  # a greedy story may loop: let it
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")  # exits off: a long story, longer than the live tail
        view = await ask(pilot, LONG_PROMPT)
        await until(pilot, lambda: len(view.block.shown) > 2 * LIVE_LINES * SIZE[0])
        lines = str(view.block.render()).split("\n")
        assert len(lines) == LIVE_LINES  # only the newest lines while it streams
        words = " ".join(lines).split()
        assert words == view.block.shown.split()[-len(words) :]
        chat_id = app.chat.chat_id
        await pilot.press("ctrl+q")  # quit mid-answer
    assert view.result is not None and view.result.finish_reason == "cancelled"
    stored = ChatStore(tmp_path / "chats.sqlite3").messages(chat_id)
    assert stored[1].thinking.strip() == view.result.thinking  # every token written is saved
    assert stored[1].stats["tokens"]["thinking"] == view.result.tokens.thinking


def test_alpha_steps_stop_at_either_end() -> None:
    assert step_level([0.05, 0.1, 0.2], 0.1, -1) == 0.05
    assert step_level([0.05, 0.1, 0.2], 0.2, +1) is None


def test_the_chat_refreshes_less_often_when_drawing_gets_dear() -> None:
    fastest, slowest = DRAIN_SECONDS
    assert next_drain_delay(0.001, fastest) == fastest  # cheap frames: the fastest rate
    assert next_drain_delay(1.0, fastest) == 2 * fastest  # one dear frame: only doubles
    delay = fastest
    for _ in range(5):
        delay = next_drain_delay(0.05, delay)
    assert delay == slowest  # dear frames in a row: the slowest rate, never slower


async def test_alpha_steps_through_calibrated_levels(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f3")
        assert app.settings.alpha == 0.05 and "α 0.05" in app.sub_title
        await pilot.press("f3")  # already the smallest: stays, with a notice
        assert app.settings.alpha == 0.05
        await pilot.press("f4", "f4")
        assert app.settings.alpha == 0.2 and "α 0.2" in app.sub_title
        view = await ask(pilot)
        await until(pilot, lambda: view.result is not None)
        assert view.result.alpha == 0.2


async def test_history_reopens_a_saved_chat_and_exports_it(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        view = await first_answer(pilot)
        answer = view.answer
        await pilot.press("ctrl+n")
        await until(pilot, lambda: not app.query_one("#log").children)
        await pilot.press("f6")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        await pilot.press("enter")
        await until(pilot, lambda: len(app.query_one("#log").children) == 2)
        assert messages(app) == [PROMPT, "assistant"]
        reopened = app.query(AssistantMessage).first()
        await until(pilot, lambda: reopened.answer == answer)
        assert app.chat.history[-1] == {"role": "assistant", "content": view.result.answer}
        await pilot.press("f7")
        exported = (tmp_path / f"lynx-chat-{app.chat.chat_id}.md").read_text()
        assert f"## You\n\n{PROMPT}" in exported and answer in exported and "tok/s" in exported


async def test_compare_reruns_without_lynx_side_by_side(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path, measure_savings=False)
    async with app.run_test(size=SIZE) as pilot:
        view = await first_answer(pilot)
        assert view.result.exited
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await until(pilot, lambda: screen.full_view.result is not None)
        full = screen.full_view.result
        assert not full.exited and full.seed == view.result.seed
        used, natural = view.result.tokens.completion, full.tokens.completion
        await until(pilot, lambda: "early exit used" in str(screen.query_one("#saving").render()))
        verdict = (
            f"saved {natural - used} tokens" if natural >= used else f"the exit cost {used - natural} extra tokens"
        )
        assert f"early exit used {used} tokens, full thinking {natural}: {verdict}" in str(
            screen.query_one("#saving").render()
        )


async def test_missing_model_is_a_notice_and_history_still_opens(tmp_path: Path) -> None:
    def missing(spec: str) -> Engine:
        raise ModelError(f"no model file at {tmp_path / 'nope.gguf'}: pass --model PATH to a GGUF file")

    app = RecordingApp(missing, store=ChatStore(tmp_path / "chats.sqlite3"))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: app.sub_title == "no model loaded")
        assert any("no model file" in n for n in app.notices)
        app.query_one("#prompt").value = "hello"
        await pilot.press("enter")
        assert app.query_one("#prompt").value == "hello"  # nothing typed is lost
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await pilot.press("f6")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))


async def test_a_model_without_a_probe_says_so_and_names_its_policy(reasoner: Path, tmp_path: Path) -> None:
    app = RecordingApp(
        lambda spec: Engine(spec, probe=None, n_threads=2), model=str(reasoner), store=ChatStore(tmp_path / "c.sqlite3")
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        assert any("no probe matches" in n and "lynx-edge probe make" in n for n in app.notices)
        assert "training-free exit (consistency k 2), no risk guarantee" in app.sub_title


async def test_prompt_longer_than_the_context_keeps_the_typed_text(smol: Path, tmp_path: Path) -> None:
    app = make_app(smol, tmp_path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        huge = "count " * 9000
        app.query_one("#prompt").value = huge
        await pilot.press("enter")
        assert app.query_one("#prompt").value == huge
        assert any("context" in n for n in app.notices)
        assert app.chat.chat_id is None and not app.query_one("#log").children


ANSI = re.compile(rb"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>])")


def test_real_terminal_shows_answer_and_stats(tmp_path: Path) -> None:
    """`lynx-edge chat` on a pseudo-terminal (Textual's real driver): type a prompt, see the
    thinking's stats line, the answer and the session totals drawn."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 120, 0, 0))
    env = {**os.environ, "LYNX_EDGE_HOME": str(tmp_path / "home"), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lynx_edge", "chat", "--max-tokens", "200"],  # threads: the governor adapts to load
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    drawn = bytearray()

    def wait_for(text: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in (plain := ANSI.sub(b"", drawn)):
            assert time.monotonic() < deadline, f"{text!r} never appeared:\n{plain[-2000:]!r}"
            if select.select([master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    drawn.extend(os.read(master, 1 << 16))
        return plain.decode("utf-8", errors="replace")

    try:
        wait_for("Ask something")
        os.write(master, PROBLEM.encode() + b"\r")
        screen = wait_for("tok/s")
        assert "thinking" in screen and "session:" in screen
        assert "answer" in screen.lower()
    finally:
        with contextlib.suppress(OSError):
            os.write(master, b"\x11")  # Ctrl+Q
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(master)


def test_bench_chat_times_both_paths_on_the_same_tokens(smol: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench-chat.json"
    result = CliRunner().invoke(
        main,
        ["bench", "chat", "--model", str(smol), "--rounds", "2", "--tokens", "24", "--threads", "2", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["terminal"] == ("pseudo-terminal" if os.name == "posix" else "headless")
    assert len(report["run_tokens_per_s"]) == len(report["chat_tokens_per_s"]) == 2
    assert len(report["chat_vs_run_per_round"]) == 2 and report["threads"] == 2
    lo, hi = report["chat_vs_run_90ci"]
    assert lo <= report["chat_vs_run"] <= hi
    assert f"chat/run = {report['chat_vs_run']:.3f}" in result.output


def test_bench_chat_on_a_missing_model_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "chat", "--model", str(tmp_path / "nope.gguf"), "--rounds", "1", "--out", str(tmp_path / "o.json")],
    )
    assert result.exit_code == 1
    assert "nope.gguf" in result.output and len(result.output.strip().splitlines()) == 1


async def test_a_tool_call_is_shown_and_answered_with_result(tmp_path: Path) -> None:
    """The chat runs nothing: it shows the call, the user pastes what it returned with
    /result, the model goes on from there; the chat keeps the call and the result."""
    calculator = {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression such as 8 * 23.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    }
    options = GenerationOptions(
        max_tokens=200, temperature=0, tools=[calculator], tool_choice="calculator", parallel_tool_calls=False
    )
    store = ChatStore(tmp_path / "chats.sqlite3")
    app = RecordingApp(load, options, store=store, export_dir=tmp_path, measure_savings=False)
    async with app.run_test() as pilot:
        await ready(pilot)
        view = await ask(pilot, "What is 8 * 23?")
        await until(pilot, lambda: view.result is not None and pilot.app.chat.feed.running.shown)
        call = view.result.tool_calls[0]
        assert call.name == "calculator" and app.chat.pending_calls == [call]
        assert "calculator(" in str(view.calls.render()) and "/result" in str(view.calls.render())
        second = await ask(pilot, "/result 184")
        await until(pilot, lambda: second.result is not None and pilot.app.chat.feed.running.shown)
        assert {"role": "tool", "tool_call_id": call.id, "name": "calculator", "content": "184"} in app.chat.history
        assert "result: 184" in messages(app)
        chat_id = app.chat.chat_id
        app.open_chat(chat_id)
        assert any(m.get("tool_calls") for m in app.chat.history) and any(m["role"] == "tool" for m in app.chat.history)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("The answer is \\boxed{51}.", "The answer is **51**."),
        ("So \\(\\frac{1}{2}\\) and \\boxed{\\frac{3}{4}}", "So `\\frac{1}{2}` and **`\\frac{3}{4}`**"),
        ("x \\times y = 3, costs $5 and $6", "x `\\times` y = 3, costs $5 and $6"),
        ("still writing \\boxed{12", "still writing \\boxed{12"),
        ("code `\\n` stays", "code `\\n` stays"),
    ],
)
def test_answers_read_as_answers(raw: str, shown: str) -> None:
    """A boxed answer shows bold, LaTeX Markdown cannot draw shows as code; the raw text is kept."""
    from lynx_edge.display import readable_answer

    assert readable_answer(raw) == shown
