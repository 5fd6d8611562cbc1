"""The one door through which offline work replays a recorded trace: forced answers at cuts.

``lynx-edge bench`` (and anything else in ``lynx_edge.lab``) puts a recorded trace back in the
KV cache and asks what the model answers had it stopped at a given token. This module does
that without a scheduler, so the lab never drives the backend's sequences itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from lynx_edge.runtime.forced_answers import BOXED_ANSWER_TOKENS, ForcedAnswer, forced_answer
from lynx_edge.runtime.llama_backend import BatchItem, LlamaBackend
from lynx_edge.runtime.scheduler import Step


def run_alone(backend: LlamaBackend, step: Step) -> object:
    """Drive one step to its end with nothing else in the batch (events are dropped)."""
    value = None
    try:
        while True:
            item = step.send(value)
            value = backend.decode_batch([item])[0] if isinstance(item, BatchItem) else None
    except StopIteration as stop:
        return stop.value


class TraceReplayer:
    """Forced answers at cuts of one recorded trace, on sequence 0 of ``backend``."""

    def __init__(self, backend: LlamaBackend, prompt: Sequence[int], trace: Sequence[int], think_close: str):
        self.b = backend
        self.prompt = list(prompt)
        self.trace = list(trace)
        self.think_close = think_close

    def answer_at(
        self, cut: int, exit_text: str, *, max_tokens: int = BOXED_ANSWER_TOKENS, until_boxed: bool = True
    ) -> ForcedAnswer:
        """Greedy answer after ``trace[:cut] + exit_text`` (the cache keeps the prefix)."""
        if not 0 <= cut <= len(self.trace):
            raise ValueError(f"cut {cut} lies outside the trace (0..{len(self.trace)})")
        prefix = self.prompt + self.trace[:cut]
        self.keep(cut)
        answer = run_alone(
            self.b,
            forced_answer(self.b, 0, exit_text, self.think_close, max_tokens=max_tokens, until_boxed=until_boxed),
        )
        self.b.truncate(len(prefix))
        return answer

    def keep(self, cut: int) -> None:
        """Make the cache hold the prompt and ``trace[:cut]`` (a timer started after this
        times the answer alone), reusing what it already shares with it."""
        prefix = self.prompt + self.trace[:cut]
        n = self.b.common_prefix(prefix)
        self.b.truncate(n)
        self.b.decode(prefix[n:])
