"""Forced answers at any point of a recorded trace, reusing the KV cache prefix.

Decoding is causal, so what a model would answer had it stopped thinking at token ``cut``
depends only on the trace up to there. ``TraceReplayer`` keeps the cache on
``prompt + trace[:cut]``, appends an exit text, decodes greedily, then drops the answer again:
walking cuts in order costs one prefill of the trace plus the answers, never a re-prefill
of the prompt. The probe toolkit labels cue events this way; ``lynx-edge bench`` simulates
exit policies this way.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lynx_edge.engine import BOXED_ANSWER_TOKENS
from lynx_edge.llama_backend import LlamaBackend


@dataclass(frozen=True)
class ForcedAnswer:
    """What the model wrote after an exit text (the text is the exit text's tail after the
    think-close tag, then the answer, so graders see ``\\boxed{`` and its content)."""

    text: str
    exit_tokens: int
    answer_tokens: int
    mean_prob: float  # mean probability of the answer tokens after the first (DEER's confidence)

    @property
    def tokens(self) -> int:
        return self.exit_tokens + self.answer_tokens


class TraceReplayer:
    """Forced answers at cuts of one trace; the cache is shared with whoever made the trace."""

    def __init__(self, backend: LlamaBackend, prompt: Sequence[int], trace: Sequence[int], think_close: str):
        self.b = backend
        self.prompt = list(prompt)
        self.trace = list(trace)
        self.think_close = think_close

    def answer_at(self, cut: int, exit_text: str, *, max_tokens: int = BOXED_ANSWER_TOKENS, stop_at_brace: bool = True) -> ForcedAnswer:
        """Greedy answer after ``trace[:cut] + exit_text``; stops at EOS, at ``max_tokens``,
        or (``stop_at_brace``) when the braces opened after the close tag are closed."""
        if not 0 <= cut <= len(self.trace):
            raise ValueError(f"cut {cut} lies outside the trace (0..{len(self.trace)})")
        prefix = self.prompt + self.trace[:cut]
        self._keep(prefix)
        exit_tokens = self.b.tokenize(exit_text)
        self.b.decode(exit_tokens)
        tail = exit_text.split(self.think_close, 1)[-1]
        depth = tail.count("{") - tail.count("}")
        opened = depth > 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, probs, answered = tail, [], 0
        for _ in range(max_tokens):
            logits = self.b.logits().astype(np.float64)
            token = int(np.argmax(logits))
            probs.append(1.0 / float(np.exp(logits - logits[token]).sum()))
            if self.b.is_eog(token):
                break
            piece = decoder.decode(self.b.piece(token))
            text += piece
            self.b.decode([token])
            answered += 1
            depth += piece.count("{") - piece.count("}")
            opened = opened or depth > 0
            if stop_at_brace and opened and depth <= 0:
                break
        self.b.truncate(len(prefix))
        tail_probs = probs[1:] or probs
        return ForcedAnswer(text, len(exit_tokens), answered, float(np.mean(tail_probs)) if tail_probs else 0.0)

    def keep(self, cut: int) -> None:
        """Make the cache hold the prompt and ``trace[:cut]`` (a timer started after this
        times the answer alone)."""
        self._keep(self.prompt + self.trace[:cut])

    def _keep(self, prefix: list[int]) -> None:
        """Make the cache hold exactly ``prefix``, reusing what it already shares with it."""
        n = self.b.common_prefix(prefix)
        self.b.truncate(n)
        self.b.decode(prefix[n:])
