"""The model's one thread: every llama.cpp call of a front end runs on it.

Why one long-lived thread and not one per reply: llama.cpp's OpenMP team belongs to the
thread that calls it. On 2 cores, generating on a fresh thread per reply measured 4–8 %
slower than on a long-lived one (the team's spin-wait state is lost); with
OMP_WAIT_POLICY=PASSIVE the gap vanished but everything got a third slower. The chat streams
each reply's events from here into its UI queue; the server runs its batch scheduler here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lynx_edge.errors import LynxError
from lynx_edge.events import Event

Put = Callable[[Event | LynxError | None], None]


class ModelThread:
    """A single worker thread for model work, run in submission order."""

    def __init__(self, executor: ThreadPoolExecutor | None = None) -> None:
        """``executor``: a one-thread executor to share (several apps on one engine)."""
        self.owned = executor is None
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="lynx-model")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self.executor.submit(fn, *args)

    def stream(self, events: Iterator[Event], put: Put) -> Future:
        """Iterate ``events`` on the model thread, handing each to ``put``; a failure arrives
        as a ``LynxError`` and the end as ``None``, so the consumer always learns both."""

        def pump() -> None:
            try:
                for event in events:
                    put(event)
            except LynxError as exc:
                put(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the front end, which stays usable
                put(LynxError(f"generation failed: {exc!r}"))
            finally:
                put(None)

        return self.submit(pump)

    def shutdown(self) -> None:
        if self.owned:
            self.executor.shutdown(wait=False, cancel_futures=True)
