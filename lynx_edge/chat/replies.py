"""Replies on their way from the model thread to their views.

The model runs on one thread for the app's life (``ModelThread``): it only iterates
``Engine.generate`` and drops events in a queue, which the UI drains a few times a second. So
the generation loop never waits on rendering, and Esc reaches the engine within one token.
After an answer that exited, the same iterator goes on to measure the exact saving in the
background; a new reply cancels that measurement first (the engine runs one generation at a
time).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from lynx_edge.chat.store import ChatStore, StoredMessage
from lynx_edge.chat.view import AssistantMessage
from lynx_edge.errors import LynxError
from lynx_edge.events import Event
from lynx_edge.runtime.model_thread import ModelThread

# The UI applies the model's events at most every DRAIN_SECONDS[0] and stretches the interval
# (up to DRAIN_SECONDS[1]) so that its own work (layout, rendering) stays under UI_CPU_SHARE of
# one core: on a laptop the model uses every core, and each millisecond the UI takes is one
# the model waits. A long chat makes layout dearer, so it refreshes less often, not slower.
DRAIN_SECONDS = (0.25, 1.0)
UI_CPU_SHARE = 0.02
SAVE_SECONDS = 1.0  # how often a streaming reply is written to the history


def next_drain_delay(ui_cpu_seconds: float, previous: float) -> float:
    """Seconds until the next refresh, given the UI's CPU time since the previous one.

    The delay that keeps the UI under its share, within DRAIN_SECONDS, and at most twice the
    previous delay: one dear frame (a mount, a long paragraph) is no trend.
    """
    wanted = min(max(ui_cpu_seconds / UI_CPU_SHARE, DRAIN_SECONDS[0]), DRAIN_SECONDS[1])
    return min(wanted, 2 * previous)


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
    on_answer: Callable[[], None] | None = None  # a comparison's screen, told when the rerun is done

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


class ReplyFeed:
    """The queue between the model thread and the UI: replies start here, and their events
    come out in batches per reply, each reply's end (``None``, or the error) after them."""

    def __init__(self, model: ModelThread) -> None:
        self.model = model
        self.events: queue.SimpleQueue[tuple[Turn, Event | LynxError | None]] = queue.SimpleQueue()
        self.running: Turn | None = None  # the newest worker's turn (a reply or a comparison)
        self.ui_cpu_mark = time.thread_time()  # the UI thread's CPU time at the last drain
        self.delay = DRAIN_SECONDS[0]

    @property
    def busy(self) -> bool:
        """The newest reply (or its savings measurement) still runs on the model thread."""
        return self.running is not None and not self.running.finished.is_set()

    def begin(self, turn: Turn, events: Iterator[Event], cancel: Callable[[], None]) -> None:
        """Queue ``events`` on the model thread, behind the previous reply's generation (whose
        savings measurement ``cancel`` stops)."""
        if self.busy:
            cancel()
        self.running = turn
        self.ui_cpu_mark = time.thread_time()  # mounting the reply is not streaming work
        future = self.model.stream(events, lambda item: self.events.put((turn, item)))
        future.add_done_callback(lambda _: turn.finished.set())

    def queued(self) -> Iterator[tuple[Turn, Event | LynxError | None]]:
        """What the model thread has put in the queue so far."""
        while True:
            try:
                yield self.events.get_nowait()
            except queue.Empty:
                return

    def take(self) -> tuple[list[tuple[Turn, list[Event]]], list[tuple[Turn, LynxError | None]]]:
        """The queued events grouped by reply, and the replies that ended (with their error)."""
        batches: dict[int, tuple[Turn, list[Event]]] = {}
        ends: list[tuple[Turn, LynxError | None]] = []
        for turn, item in self.queued():
            if isinstance(item, Event):
                batches.setdefault(id(turn), (turn, []))[1].append(item)
            else:
                ends.append((turn, item))
        return list(batches.values()), ends

    def drained(self) -> float:
        """The delay until the next drain, from the UI's CPU time since the last (this runs on
        the UI's thread)."""
        now = time.thread_time()
        spent, self.ui_cpu_mark = now - self.ui_cpu_mark, now
        self.delay = next_drain_delay(spent, self.delay)
        return self.delay
