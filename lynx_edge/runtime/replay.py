"""The one door through which offline work drives the model: traces and forced answers at cuts.

The probe toolkit (``lynx-edge probe collect``) and the paired bench (``lynx-edge bench``)
both need the same two things: a trace made by the runtime's own loop, and what the model
answers had it stopped at given tokens of that trace. A ``Lane`` offers exactly that over one
KV sequence pair — the trace in its main sequence, each forced answer on a branch sharing the
trace's cells (no copy, no re-decode) — and ``Replay`` runs lanes N at a time in shared
llama.cpp batches, so neither caller drives the scheduler, the slots or the backend's
sequences itself. The same seed gives the same traces and answers whatever N is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.forced_answers import BOXED_ANSWER_TOKENS, ForcedAnswer, answer_on_branch
from lynx_edge.runtime.generation import FeatureSink, Plan
from lynx_edge.runtime.llama_backend import BatchItem, gpu_offload
from lynx_edge.runtime.scheduler import Slot, Step, Task

__all__ = ["AnswerAt", "Job", "Lane", "Replay", "Step", "TimedAnswer", "default_parallel"]


@dataclass(frozen=True)
class AnswerAt:
    """A forced answer wanted after ``trace[:cut]``: ``exit_text``, then a greedy answer of at
    most ``max_tokens`` that stops once boxed (``until_boxed``) or at the model's end."""

    cut: int
    exit_text: str
    max_tokens: int = BOXED_ANSWER_TOKENS
    until_boxed: bool = True


@dataclass(frozen=True)
class TimedAnswer:
    """A forced answer and the seconds it took (branch, exit text and answer; alone only
    when its lane ran alone)."""

    answer: ForcedAnswer
    seconds: float


class Lane:
    """One job's place in a replay: a main KV sequence for its trace, a branch for answers."""

    def __init__(self, engine: Engine, slot: Slot) -> None:
        self._engine = engine
        self._slot = slot

    def generate(self, plan: Plan, feature_sink: FeatureSink | None = None) -> Step:
        """The runtime's loop on this lane (a step; returns the ``GenerationResult``)."""
        return self._engine.generation(plan, self._slot, cancelled=threading.Event(), feature_sink=feature_sink).steps()

    def cold(self) -> None:
        """Forget what the lane's cache holds, so the next generation starts from nothing."""
        self._engine.backend.clear(self._slot.main)

    def hold(self, tokens: Sequence[int]) -> Step:
        """Make the main sequence hold exactly ``tokens`` (a recorded prompt and trace),
        decoding only what it does not already share with them (a step)."""
        b, seq = self._engine.backend, self._slot.main
        n = b.common_prefix(tokens, seq)
        b.truncate(n, seq)
        if n < len(tokens):
            b.check_room(len(tokens) - n, seq)
            yield BatchItem(seq, list(tokens[n:]), logits=False)

    def answers(self, n_prompt: int, wanted: Sequence[AnswerAt]) -> Step:
        """The forced answer at each cut of the trace the main sequence holds after its
        ``n_prompt`` prompt tokens, each on the branch (a step; returns ``TimedAnswer``s in
        the order asked)."""
        b, e, slot = self._engine.backend, self._engine, self._slot
        held = len(b.seqs[slot.main]) - n_prompt
        done: list[TimedAnswer] = []
        for want in wanted:
            if not 0 <= want.cut <= held:
                raise ValueError(f"cut {want.cut} lies outside the trace (0..{held})")
            start = time.perf_counter()
            forced = yield from answer_on_branch(
                b,
                slot.main,
                slot.branch,
                n_prompt + want.cut,
                want.exit_text,
                e.think_close,
                max_tokens=want.max_tokens,
                until_boxed=want.until_boxed,
            )
            done.append(TimedAnswer(forced, time.perf_counter() - start))
        return done


Job = Callable[[Lane], Step]


def default_parallel() -> int:
    """Jobs decoded together when the caller does not say: 8 where llama.cpp offloads to a
    GPU (or Metal), 4 on a CPU (measured on 2 cores: see tools/README.md)."""
    return 8 if gpu_offload() else 4


class Replay:
    """Runs lane jobs on one engine, as many at a time as it has slots (``parallel``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._scheduler = engine.scheduler()

    def run(
        self, jobs: Iterable[Job], finished: Callable[[Any], None], *, after_step: Callable[[], None] | None = None
    ) -> None:
        """Run ``jobs`` (taken lazily, in order) to their ends; each job's result goes to
        ``finished`` as it ends. A job's error stops the run and is raised here."""
        pending = iter(jobs)
        more = True
        failed: list[BaseException] = []

        def done(task: Task) -> None:
            if task.error is not None:
                failed.append(task.error)
            elif not failed:  # after a failure the others are closed unfinished: no results
                finished(task.result)

        def admit() -> None:
            nonlocal more
            while more and not failed and (slot := self._scheduler.free_slot()) is not None:
                job = next(pending, None)
                if job is None:
                    more = False
                    return
                self._scheduler.add(lambda s, j=job: j(Lane(self.engine, s)), slot, _drop, done)

        admit()
        while self._scheduler.busy and not failed:
            self._scheduler.step()
            admit()
            if after_step is not None:
                after_step()
        if failed:
            for task in list(self._scheduler.tasks):
                self._scheduler.close(task)
            raise failed[0]

    def one(self, job: Job) -> Any:
        """Run one job alone and return its result."""
        results: list[Any] = []
        self.run([job], results.append)
        return results[0]


def _drop(_event: object) -> None:
    """Replayed jobs report through their results; their stream events are not wanted."""
