"""Many generations, one llama.cpp batch per step (continuous batching).

A generation is written as a plain generator (``Step``): it yields ``Event`` objects for its
caller and ``BatchItem`` requests for tokens it needs decoded, and is sent back the
``BatchOut`` of its request once the batch ran. The scheduler collects one request from every
live generation, decodes them together in one ``llama_decode`` (long prompts in chunks that
share the batch with everyone's next token), and resumes each with its own output row, so
each keeps its own sampler, cue detection, probe calls and exits. A generation that finishes
or is cancelled leaves at once; a new one joins at the next step.

Why this shape: sequential code (think → cue → trial → exit) stays readable, and running
one generation alone is the same code with a batch of one, so a request's tokens do not
depend on what else is in the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from lynx_edge.errors import LynxError
from lynx_edge.events import Event
from lynx_edge.runtime.llama_backend import N_BATCH, BatchItem, BatchOut, LlamaBackend

Step = Generator[Event | BatchItem, BatchOut | None, Any]
Sink = Callable[[Event], None]


@dataclass
class Slot:
    """A pair of KV sequences a generation owns while it runs: ``main`` for its tokens (kept
    afterwards, so a follow-up turn reuses the prefix) and ``branch`` for trials and forced
    exits."""

    main: int
    branch: int
    busy: bool = False


@dataclass
class Task:
    """One generation in the scheduler."""

    step: Step
    sink: Sink
    slot: Slot
    cancelled: threading.Event = field(default_factory=threading.Event)
    request: BatchItem | None = None
    sent: int = 0  # tokens of ``request`` already decoded (long requests go in chunks)
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    on_done: Callable[[Task], None] | None = None

    def cancel(self) -> None:
        self.cancelled.set()


class Scheduler:
    """Steps the tasks of one backend together; not thread-safe (one driving thread)."""

    def __init__(self, backend: LlamaBackend) -> None:
        self.backend = backend
        self.slots = [Slot(2 * i, 2 * i + 1) for i in range(backend.n_seq // 2)]
        self.tasks: list[Task] = []

    # ---- admission -------------------------------------------------------------------
    def free_slot(self, prompt: list[int] | None = None) -> Slot | None:
        """An idle slot, preferring the one whose cache shares the longest prefix with
        ``prompt`` (a follow-up turn lands where its conversation is cached)."""
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        if prompt is None:
            return idle[0]
        return max(idle, key=lambda s: self.backend.common_prefix(prompt, s.main))

    def add(
        self, make: Callable[[Slot], Step], slot: Slot, sink: Sink, on_done: Callable[[Task], None] | None = None
    ) -> Task:
        """Start a task on ``slot``; ``make`` builds its generator for that slot."""
        slot.busy = True
        task = Task(make(slot), sink, slot, on_done=on_done)
        self.tasks.append(task)
        self._advance(task, None)
        return task

    @property
    def busy(self) -> bool:
        return bool(self.tasks)

    # ---- stepping --------------------------------------------------------------------
    def step(self) -> None:
        """One batched decode for every task waiting on tokens, then resume them."""
        items, owners, finals = self._batch()
        if not items:
            return
        self.backend.follow_load()
        try:
            outs = self.backend.decode_batch(items)
        except LynxError as exc:  # a full cache, a failed decode: those tasks end, the others go on
            for task in {id(t): t for t in owners}.values():
                self._fail(task, exc)
            return
        for task, out, final in zip(owners, outs, finals):
            if final:
                task.request, task.sent = None, 0
                self._advance(task, out)

    def _batch(self) -> tuple[list[BatchItem], list[Task], list[bool]]:
        """Requests for this step: every single token, then chunks of longer requests while
        room is left. A step that captures features takes no long chunks (capturing turns
        every row into an output)."""
        waiting = [t for t in self.tasks if t.request is not None]
        capture = any(t.request.capture for t in waiting)
        items, owners, finals = [], [], []
        room = N_BATCH
        for task in sorted(waiting, key=lambda t: len(t.request.tokens) - t.sent):
            req = task.request
            left = len(req.tokens) - task.sent
            if left > 1 and capture:
                continue
            take = min(left, room)
            if take <= 0:
                break
            final = take == left
            items.append(
                BatchItem(req.seq, req.tokens[task.sent : task.sent + take], req.logits and final, req.capture)
            )
            owners.append(task)
            finals.append(final)
            task.sent += take
            room -= take
        return items, owners, finals

    def _advance(self, task: Task, out: BatchOut | None) -> None:
        """Resume ``task`` until it asks for tokens or ends; its events go to its sink."""
        value: Any = out
        try:
            while True:
                item = task.step.send(value)
                if isinstance(item, BatchItem):
                    task.request = item
                    return
                task.sink(item)
                value = None
        except StopIteration as stop:
            task.result = stop.value
            self._finish(task)
        except Exception as exc:  # noqa: BLE001 - the task's caller gets it; the others go on
            task.error = exc
            self._finish(task)

    def _fail(self, task: Task, exc: BaseException) -> None:
        task.request = None
        try:
            item = task.step.throw(exc)
        except StopIteration as stop:
            task.result = stop.value
            self._finish(task)
        except Exception as error:  # noqa: BLE001
            task.error = error
            self._finish(task)
        else:
            if isinstance(item, BatchItem):
                task.request = item
            else:
                task.sink(item)
                self._advance(task, None)

    def _finish(self, task: Task) -> None:
        task.done = True
        task.request = None
        task.slot.busy = False
        self.backend.clear(task.slot.branch)
        if task in self.tasks:
            self.tasks.remove(task)
        if task.on_done:
            task.on_done(task)

    def close(self, task: Task) -> None:
        """Stop ``task`` now (its generator's cleanup runs), e.g. when its consumer left."""
        if task.done:
            return
        task.step.close()
        self._finish(task)
