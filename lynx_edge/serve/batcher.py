"""Requests from the event loop, decoded together on the model thread.

Up to ``parallel`` requests run at once, each in its own KV slot of one llama.cpp batch
(continuous batching: a request that finishes, exits early or is cancelled frees its slot for
the next at once); up to ``max_queue`` more wait, and beyond that a request is refused with
503. Events travel back to each request's asyncio queue. A request whose client left is
dropped before it starts, or stopped within one token once it runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any

from lynx_edge.errors import LynxError
from lynx_edge.runtime.engine import Engine, Messages
from lynx_edge.runtime.model_thread import ModelThread
from lynx_edge.runtime.options import GenerationOptions

END = object()  # the last item of a job's queue
log = logging.getLogger("lynx_edge.serve")


class Busy(Exception):
    """The queue is full."""


class Job:
    """One request: what it asks for, where its events go, and whether its client left."""

    def __init__(self, messages: Messages, options: GenerationOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.messages = messages
        self.options = options
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.started = False
        self.checked = 0.0  # when the client's connection was last looked at (event-loop time)

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def cancel(self) -> None:
        """Stop at the next token, or never start."""
        self.cancelled.set()


class Batcher:
    """Admits jobs into the engine's scheduler and steps it on the model thread."""

    def __init__(self, engine: Engine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.dropped = 0  # queued requests whose client left before they started
        self.stopped = 0  # running generations stopped because their client left (or the server stops)
        self.active: set[Job] = set()  # started and not yet done
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = ModelThread()
        self._loop = self._thread.submit(self._run)

    @property
    def pending(self) -> int:
        """Requests waiting or running."""
        with self._lock:
            return len(self.waiting) + self.running

    def submit(self, job: Job) -> None:
        with self._lock:
            if len(self.waiting) >= self.max_queue and self.running >= self.engine.parallel:
                raise Busy(f"the server is busy ({self.running} running, {len(self.waiting)} queued): retry shortly")
            self.waiting.append(job)
        self._wake.set()

    def _run(self) -> None:
        scheduler = self.engine.scheduler()
        while not self._closed:
            try:
                self._admit(scheduler)
                if scheduler.busy:
                    scheduler.step()
                else:
                    self._wake.wait(0.5)
                    self._wake.clear()
            except Exception:  # a bug must not leave every later request hanging
                log.exception("the batch loop failed; its requests are ended")
                for task in list(scheduler.tasks):
                    scheduler.close(task)

    def _admit(self, scheduler: Any) -> None:
        while True:
            with self._lock:
                if not self.waiting:
                    return
                job = self.waiting[0]
                if job.cancelled.is_set():  # the client left while queued
                    self.waiting.popleft()
                    self.dropped += 1
                    job.put(END)
                    continue
                slot = scheduler.free_slot()
                if slot is None:
                    return
                self.waiting.popleft()
                self.running += 1
            self._start(scheduler, job)

    def _start(self, scheduler: Any, job: Job) -> None:
        try:
            plan = self.engine.plan(job.messages, job.options)
        except LynxError as exc:
            self._done(job, exc)
            return
        slot = scheduler.free_slot(plan.prompt)
        job.started = True
        with self._lock:
            self.active.add(job)
        scheduler.add(
            lambda s: self.engine.generation(plan, s, cancelled=job.cancelled).steps(),
            slot,
            job.put,
            lambda task: self._done(job, task.error),
        )

    def _done(self, job: Job, error: BaseException | None) -> None:
        with self._lock:
            self.running -= 1
            self.active.discard(job)
            self.stopped += job.cancelled.is_set()
        if error is not None:
            job.put(error if isinstance(error, LynxError) else RuntimeError(f"generation failed: {error!r}"))
        job.put(END)

    def end_all(self) -> None:
        """End every generation at its next token and drop the queue (the server is stopping):
        each stream then closes with its door's final event."""
        with self._lock:
            jobs = [*self.waiting, *self.active]
        for job in jobs:
            job.cancel()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        for job in list(self.waiting):
            job.cancel()
        self._thread.shutdown()
