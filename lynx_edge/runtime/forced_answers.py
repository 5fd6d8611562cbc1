"""Forced answers: what a model answers when its thinking is cut at a given point.

Decoding is causal, so the answer a model would give had it stopped thinking at token ``cut``
depends only on the trace up to there. ``forced_answer`` writes it on a branch of the trace's
sequence (the prefix's cache cells are shared, not copied or re-decoded): the exit text, then
a greedy answer until the braces the exit text opened are closed. The runtime's boxed exits,
training-free trial answers, the probe toolkit's labels and ``lynx-edge bench`` all answer
this way; ``runtime.replay`` runs it on a recorded trace without a scheduler. The other way
round, ``natural_end`` lets a trace that exited think on to where it would have ended.
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass

import numpy as np

from lynx_edge.runtime.llama_backend import BatchItem, BatchOut, LlamaBackend, Sampler
from lynx_edge.runtime.scheduler import Step

BOXED_ANSWER_TOKENS = 64  # cap on a forced answer after an exit text


class BoxedAnswer:
    """Tracks the braces an exit text opened (``\\boxed{``): the answer is complete when the
    model closes them."""

    def __init__(self, written: str) -> None:
        self.depth = written.count("{") - written.count("}")
        self.opened = self.depth > 0

    def take(self, piece: str) -> bool:
        """Account for ``piece``; True once the opened braces are closed."""
        self.depth += piece.count("{") - piece.count("}")
        self.opened = self.opened or self.depth > 0
        return self.opened and self.depth <= 0


@dataclass(frozen=True)
class ForcedAnswer:
    """What the model wrote after an exit text (the text is the exit text's tail after the
    think-close tag, then the answer, so graders see ``\\boxed{`` and its content)."""

    text: str
    exit_tokens: int
    answer_tokens: int
    mean_prob: float  # mean probability of the answer tokens (a trial answer's confidence)

    @property
    def tokens(self) -> int:
        return self.exit_tokens + self.answer_tokens


def forced_answer(
    backend: LlamaBackend,
    seq: int,
    exit_text: str,
    think_close: str,
    *,
    max_tokens: int = BOXED_ANSWER_TOKENS,
    until_boxed: bool = True,
) -> Step:
    """Append ``exit_text`` to ``seq`` and answer greedily (a scheduler step; returns a
    ``ForcedAnswer``). Stops at end of generation, at ``max_tokens``, or (``until_boxed``) when
    the braces the exit text or the answer opened after the close tag are closed — enough to
    grade; the runtime's conclude exit writes on to the end, as ``until_boxed=False`` does.
    The confidence (DEER's) is the mean probability of the answer tokens that are not bare
    braces: a ``{`` after ``\\boxed`` or the closing ``}`` is near-certain whatever the answer."""
    exit_tokens = backend.tokenize(exit_text)
    out: BatchOut = yield BatchItem(seq, exit_tokens)
    tail = exit_text.split(think_close, 1)[-1]
    boxed = BoxedAnswer(tail)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, probs, answered = tail, [], 0
    for _ in range(max_tokens):
        logits = backend.logits(out.row).astype(np.float64)
        token = int(np.argmax(logits))
        if backend.is_eog(token):
            break
        piece = decoder.decode(backend.piece(token))
        text += piece
        answered += 1
        closes = boxed.take(piece)
        if piece.strip() not in ("{", "}"):
            probs.append(1.0 / float(np.exp(logits - logits[token]).sum()))
        if (closes and until_boxed) or answered == max_tokens:
            break
        out = yield BatchItem(seq, [token])
    return ForcedAnswer(text, len(exit_tokens), answered, float(np.mean(probs)) if probs else 0.0)


def answer_on_branch(
    backend: LlamaBackend,
    seq: int,
    branch: int,
    keep: int,
    exit_text: str,
    think_close: str,
    *,
    max_tokens: int = BOXED_ANSWER_TOKENS,
    until_boxed: bool = True,
) -> Step:
    """``forced_answer`` after the first ``keep`` tokens of ``seq``, written on ``branch``
    (sharing the prefix's cells) and forgotten after: ``seq`` is left as it was. The
    runtime's trials and the replay door's answers at cuts (a scheduler step)."""
    backend.branch(seq, branch, keep)
    answer = yield from forced_answer(
        backend, branch, exit_text, think_close, max_tokens=max_tokens, until_boxed=until_boxed
    )
    backend.clear(branch)
    return answer


class Trials:
    """The trial answers of one reply under the training-free policy (each written on the
    branch sequence after the thinking so far), and what they cost."""

    def __init__(self, backend: LlamaBackend, seq: int, branch: int, prompt_tokens: int, exit_text: str, close: str):
        self.backend, self.seq, self.branch, self.prompt_tokens = backend, seq, branch, prompt_tokens
        self.exit_text, self.close = exit_text, close
        self.answers: list[str] = []  # earlier trials' answers, oldest first
        self.last: int | None = None  # the token index of the latest trial
        self.tokens = 0
        self.seconds = 0.0

    def run(self, cut: int) -> Step:
        """A trial answer had the thinking stopped at its token ``cut`` (a ``ForcedAnswer``)."""
        start = time.perf_counter()
        keep = self.prompt_tokens + cut
        answer = yield from answer_on_branch(self.backend, self.seq, self.branch, keep, self.exit_text, self.close)
        self.tokens += answer.tokens
        self.seconds += time.perf_counter() - start
        return answer

    def taken(self, answer: str, index: int) -> None:
        """Record a judged trial's answer, made at token ``index``."""
        self.answers.append(answer)
        self.last = index


def natural_end(
    backend: LlamaBackend,
    seq: int,
    keep: int,
    tail: list[int],
    sampler: Sampler,
    *,
    limit: int,
    cancelled: threading.Event,
) -> Step:
    """Run ``seq`` on from its first ``keep`` tokens as if it had never exited: ``tail`` (the
    tokens it had sampled past the exit point) first, then ``sampler`` (a clone of the reply's,
    taken at the exit) to the end of generation or ``limit`` tokens (a scheduler step). Returns
    (the tokens written after ``keep``, whether ``limit`` or the context capped them), or None
    when cancelled."""
    backend.truncate(keep, seq)
    out: BatchOut = yield BatchItem(seq, tail)
    written = len(tail)
    while written < limit and len(backend.seqs[seq]) < backend.n_ctx:
        if cancelled.is_set():
            return None
        token = backend.sample(sampler, out.row)
        if backend.is_eog(token):
            return written, False
        out = yield BatchItem(seq, [token])
        written += 1
    return None if cancelled.is_set() else (written, True)
