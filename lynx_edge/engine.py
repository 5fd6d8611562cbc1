"""The LYNX generation loop: think, score cues with the probe, exit when it is safe.

``Engine`` is built once (model + probe + policy) and answers many requests; each request
is a ``_Run`` that walks token by token:

1. sample a token; if it completes a cue word inside the thinking, decode it with feature
   capture armed (embeddings on for that one decode, eval callback armed);
2. score the features with the probe; the calibrated rule decides;
3. on exit, roll the cue tokens out of the KV cache, decode the exit text and let the model
   answer (``conclude``), or answer greedily inside ``\\boxed{…}`` (``boxed``).

A word cue that ends exactly at a token boundary is judged once the next token shows the
word really ended ("Wait," yes, "Waiting" no); the features were captured on the cue token
itself, so nothing is decoded twice.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from lynx_edge.cues import CueMatch, CueMatcher, cue_label
from lynx_edge.errors import ContextOverflowError, LynxError, SettingError
from lynx_edge.events import (
    AnswerDelta,
    CueScored,
    Done,
    Event,
    ExitTaken,
    GenerationResult,
    Savings,
    ThinkingDelta,
)
from lynx_edge.llama_backend import LlamaBackend, Sampler, SamplingSettings
from lynx_edge.model_files import default_probe, resolve_model
from lynx_edge.onnx_probe import OnnxProbe
from lynx_edge.policy import ExitRule, Mode, check_alpha, select_rule
from lynx_edge.presets import ModelPreset
from lynx_edge.probe_card import ProbeCard

ExitStyle = Literal["conclude", "boxed"]
BOXED_ANSWER_TOKENS = 64
Messages = str | Sequence[dict[str, str]]


@dataclass(frozen=True)
class CueFeatures:
    """A cue's features as the probe would see them, for tools that record traces.

    ``cut`` is the index of the first generated token of the cue: an exit there keeps
    ``gen[:cut]``.
    """

    cue: str
    token_index: int
    cut: int
    features: np.ndarray


FeatureSink = Callable[[CueFeatures], None]


@dataclass(frozen=True)
class Request:
    """One request's settings, checked before any token is decoded."""

    max_tokens: int
    sampling: SamplingSettings
    exit_style: ExitStyle = "conclude"
    lynx: bool = True
    rule: ExitRule | None = None
    measure_savings: bool = False


class Engine:
    """A model, its probe and exit policy, ready to answer (one request at a time)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        probe: str | Path | None = "auto",
        alpha: float = 0.1,
        mode: Mode | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
    ) -> None:
        """``probe="auto"`` uses the shipped probe for the model's preset when one exists;
        ``None`` runs without a probe (cues are shown, never scored)."""
        self.alpha = check_alpha(alpha)
        self.mode = mode
        resolved = resolve_model(model)
        self.preset: ModelPreset = resolved.preset
        probe_dir = default_probe(self.preset) if probe == "auto" else probe
        self.card = ProbeCard.load(probe_dir) if probe_dir else None
        if self.card:
            self.rule = select_rule(self.card.calibration, self.alpha, mode)
        self.backend = LlamaBackend(
            resolved.path,
            n_ctx=n_ctx or self.preset.n_ctx,
            n_threads=n_threads,
            capture_layers=self.card.layers if self.card else self.preset.feature_layers,
            capture_final=self.card.final_norm if self.card else True,
        )
        self.probe: OnnxProbe | None = None
        if self.card:
            self.card.check_model(self.backend.info)
            self.probe = OnnxProbe(self.card.onnx_path, self.card.feature_dim)
        source = self.card or self.preset
        self.cues = tuple(source.cues)
        self.exit_text = source.exit_text
        self.think_open = source.think_open
        self.think_close = source.think_close
        self.conclude_text = f"\n{self.think_close}\n\n"  # chat-style exit: close, then answer
        self.scaffold = list(self.card.scaffold if self.card and self.card.scaffold else self.preset.scaffold)
        self.matcher = CueMatcher(self.cues)
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    # ---- public API ---------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.backend.info.name

    @property
    def probe_name(self) -> str | None:
        return self.card.label if self.card else None

    def rule_for(self, alpha: float | None = None, mode: Mode | None = None) -> ExitRule | None:
        """The calibrated rule a request's alpha picks (None without a probe)."""
        if alpha is not None:
            check_alpha(alpha)
        if not self.card:
            return None
        if alpha is None and mode is None:
            return self.rule
        return select_rule(self.card.calibration, alpha if alpha is not None else self.alpha, mode or self.mode)

    def render_prompt(self, messages: Messages) -> str:
        """Chat-template text of scaffold + messages, ending inside an open thinking block."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        scaffold = self.scaffold
        if any(m["role"] == "system" for m in messages):
            scaffold = [m for m in scaffold if m["role"] != "system"]
        text = self.backend.render_chat([*scaffold, *messages], **self.preset.template_kwargs)
        if not text.rstrip().endswith(self.think_open):
            text += f"{self.think_open}\n"
        return text

    def cancel(self) -> None:
        """Stop the running generation at the next token (thread-safe)."""
        self._cancel.set()

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int = 100,
        seed: int | None = None,
        exit_style: ExitStyle = "conclude",
        lynx: bool = True,
        alpha: float | None = None,
        mode: Mode | None = None,
        measure_savings: bool = False,
        feature_sink: FeatureSink | None = None,
    ) -> Iterator[Event]:
        """Yield events for one answer; see ``lynx_edge.events`` for their order.

        ``feature_sink`` receives every cue's features (capture armed at every cue even
        without a probe): the probe toolkit records training events through it.
        """
        request = self._request(
            max_tokens, temperature, top_p, top_k, seed, exit_style, lynx, alpha, mode, measure_savings
        )
        prompt = self.backend.prompt_tokens(self.render_prompt(messages))
        if len(prompt) + 1 > self.backend.n_ctx:
            raise ContextOverflowError(len(prompt) + 1, self.backend.n_ctx)
        return self._locked(_Run(self, prompt, request, feature_sink).events())

    def _locked(self, events: Iterator[Event]) -> Iterator[Event]:
        if not self._lock.acquire(blocking=False):
            raise LynxError("this engine is already generating: wait for it or cancel it first")
        self._cancel.clear()
        try:
            yield from events
        finally:
            self._lock.release()

    def _request(self, max_tokens, temperature, top_p, top_k, seed, exit_style, lynx, alpha, mode, measure) -> Request:
        temperature = self.preset.temperature if temperature is None else float(temperature)
        top_p = self.preset.top_p if top_p is None else float(top_p)
        max_tokens = self.preset.max_tokens if max_tokens is None else int(max_tokens)
        if temperature < 0:
            raise SettingError(f"temperature must be ≥ 0, got {temperature}: pass e.g. --temperature 0.6")
        if not 0 < top_p <= 1:
            raise SettingError(f"top_p must lie in (0, 1], got {top_p}: pass e.g. --top-p 0.95")
        if max_tokens < 1:
            raise SettingError(f"max_tokens must be at least 1, got {max_tokens}")
        if exit_style not in ("conclude", "boxed"):
            raise SettingError(f"exit style must be conclude or boxed, got {exit_style!r}")
        rule = self.rule_for(alpha, mode) if lynx else None
        if seed is None:
            seed = random.randrange(2**31)
        sampling = SamplingSettings(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        return Request(max_tokens, sampling, exit_style, lynx, rule, measure)

    def close(self) -> None:
        self.backend.close()


class _Run:
    """State of one request: the generated tokens, their text, and where thinking ends."""

    def __init__(
        self, engine: Engine, prompt: list[int], request: Request, sink: FeatureSink | None = None
    ) -> None:
        self.e = engine
        self.sink = sink
        self.b = engine.backend
        self.req = request
        self.rule = request.rule if engine.probe else None
        self.prompt = prompt
        self.matcher: CueMatcher = engine.matcher
        self.close_tag = engine.think_close
        self.gen: list[int] = []  # generated tokens, all in the KV cache
        self.text = ""  # their text
        self.starts: list[int] = []  # char offset of each token's text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.decoder_states: list[tuple[bytes, int]] = []
        self.think_end: int | None = None  # char offset of the close tag
        self.answer_start = 0  # char offset where answer text begins
        self.answer_token = 0  # first token after the thinking
        self.emitted_thinking = 0
        self.emitted_answer: int | None = None
        self.pending: tuple[CueMatch, int, np.ndarray | None] | None = None
        self.cues: list[CueScored] = []
        self.exit: ExitTaken | None = None
        self.exit_token = 0
        self.brace_depth: int | None = None
        self.answer_cap = request.max_tokens
        self.resume: tuple[int, list[int], Sampler] | None = None
        self.finish_reason = "stop"
        self.closed_by_runtime = False

    # ---- main loop ------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        start = time.perf_counter()
        b = self.b
        self.reused = b.reuse_prefix(self.prompt)
        b.decode(self.prompt[self.reused :])
        self.sampler = Sampler.build(self.req.sampling)
        decode_start = time.perf_counter()
        while True:
            if self.e._cancel.is_set():
                self.finish_reason = "cancelled"
                break
            if len(self.gen) >= min(self.req.max_tokens, self.answer_cap) or b.n_past >= b.n_ctx:
                self.finish_reason = "length"
                break
            token = b.sample(self.sampler)
            if b.is_eog(token):
                if self.think_end is not None or self.closed_by_runtime:
                    break
                yield from self._close_unfinished_thinking()
                continue
            yield from self._step(token)
            if self.brace_depth is not None and self.brace_depth <= 0:
                break
        self.pending = None
        yield from self._emit(final=True)
        result = self._result(time.perf_counter() - start, time.perf_counter() - decode_start)
        yield Done(result)
        if self.req.measure_savings and self.resume and self.finish_reason != "cancelled":
            yield from self._measure_savings(result)

    def _step(self, token: int) -> Iterator[Event]:
        """Take one sampled token: judge an open cue, commit, find cues, decode, emit."""
        state = self.decoder.getstate()
        new = self.decoder.decode(self.b.piece(token))
        if self.pending and new:
            match, index, feats = self.pending
            self.pending = None
            if not (new[0].isalnum() or new[0] == "_"):
                yield from self._judge(match, index, feats, pending_token=token)
                if self.exit:
                    return
        prev = len(self.text)
        self._commit(token, new, state)
        cue = self._find_cue(prev)
        capture = cue is not None and (self.rule is not None or self.sink is not None)
        feats = self.b.decode([token], capture=capture)
        if cue is not None:
            index = len(self.gen) - 1
            if cue.open_end:
                self.pending = (cue, index, feats)
            else:
                yield from self._judge(cue, index, feats, pending_token=None)
        if self.brace_depth is not None:
            self.brace_depth += new.count("{") - new.count("}")
        yield from self._emit()

    def _commit(self, token: int, text: str, decoder_state: tuple[bytes, int]) -> None:
        self.decoder_states.append(decoder_state)
        self.starts.append(len(self.text))
        self.gen.append(token)
        self.text += text
        if self.think_end is None:
            self._find_close(len(self.text) - len(text))

    def _find_close(self, prev: int) -> None:
        at = self.text.find(self.close_tag, max(0, prev - len(self.close_tag) + 1))
        if at >= 0:
            self.think_end = at
            self.answer_start = at + len(self.close_tag)
            self.answer_token = len(self.gen)

    def _find_cue(self, prev: int) -> CueMatch | None:
        """The last cue ending in the newest token, if it lies inside the thinking."""
        if self.think_end is not None and self.think_end < prev:
            return None
        limit = self.think_end if self.think_end is not None else len(self.text)
        found = [m for m in self.matcher.matches_ending_after(self.text, prev) if m.end <= limit]
        return found[-1] if found else None

    # ---- decisions and exits --------------------------------------------------------
    def _judge(
        self, match: CueMatch, index: int, feats: np.ndarray | None, *, pending_token: int | None
    ) -> Iterator[Event]:
        label = cue_label(match.cue)
        if feats is not None and self.sink is not None:
            self.sink(CueFeatures(label, index, self._cut(match), feats))
        if feats is None or self.rule is None:
            event = CueScored(label, index, None, None, "off")
            self.cues.append(event)
            yield event
            return
        score = self.e.probe.score(feats)
        exits = self.rule.exits(score)
        threshold = self.rule.threshold
        event = CueScored(label, index, score, threshold, "exit" if exits else "continue")
        self.cues.append(event)
        yield event
        if exits:
            yield from self._exit(match, ExitTaken(label, index, score, threshold), pending_token)

    def _exit(self, match: CueMatch, event: ExitTaken, pending_token: int | None) -> Iterator[Event]:
        cut = self._cut(match)
        if self.req.measure_savings:
            tail = self.gen[cut:] + ([pending_token] if pending_token is not None else [])
            self.resume = (cut, tail, self.sampler.clone())
        self._rollback(cut)
        self.pending = None
        yield from self._emit(final=True)
        self.exit = event
        yield event
        boxed = self.req.exit_style == "boxed"
        self.exit_token = len(self.gen)
        self._decode_text(self.e.exit_text if boxed else self.e.conclude_text)
        if boxed:
            self.sampler = Sampler.build(replace(self.req.sampling, temperature=0.0))
            tail = self.text[self.answer_start :] if self.think_end is not None else self.text
            self.brace_depth = tail.count("{") - tail.count("}")
            self.answer_cap = len(self.gen) + BOXED_ANSWER_TOKENS

    def _cut(self, match: CueMatch) -> int:
        """Index of the generated token where the cue's text begins."""
        return bisect_right(self.starts, match.start) - 1

    def _close_unfinished_thinking(self) -> Iterator[Event]:
        """The model ended inside its thinking: close it so that it writes an answer."""
        self.closed_by_runtime = True
        self.pending = None
        yield from self._emit(final=True)
        self._decode_text(self.e.conclude_text)

    def _decode_text(self, text: str) -> None:
        """Append runtime-written text (exit text, closing tag) as generated tokens."""
        tokens = self.b.tokenize(text)
        for token in tokens:
            state = self.decoder.getstate()
            self._commit(token, self.decoder.decode(self.b.piece(token)), state)
        self.b.decode(tokens)

    def _rollback(self, cut: int) -> None:
        """Forget generated tokens from index ``cut`` on, in the KV cache and in the text."""
        self.b.truncate(len(self.prompt) + cut)
        self.decoder.setstate(self.decoder_states[cut])
        self.text = self.text[: self.starts[cut]]
        del self.gen[cut:], self.starts[cut:], self.decoder_states[cut:]

    # ---- streaming --------------------------------------------------------------------
    def _emit(self, *, final: bool = False) -> Iterator[Event]:
        if self.think_end is None:
            limit = len(self.text) if final else self._safe_limit()
            if limit > self.emitted_thinking:
                yield ThinkingDelta(self.text[self.emitted_thinking : limit])
                self.emitted_thinking = limit
            return
        if self.emitted_thinking < self.think_end:
            yield ThinkingDelta(self.text[self.emitted_thinking : self.think_end])
        self.emitted_thinking = self.think_end
        if self.emitted_answer is None:
            stripped = self.text[self.answer_start :].lstrip()
            if not stripped:
                return
            self.emitted_answer = len(self.text) - len(stripped)
        if len(self.text) > self.emitted_answer:
            yield AnswerDelta(self.text[self.emitted_answer :])
            self.emitted_answer = len(self.text)

    def _safe_limit(self) -> int:
        """Thinking text is held back from the start of the token where a cue or the close
        tag might be forming, so an exit never streams text that it then removes."""
        limit = min(self.matcher.partial_start(self.text), self._close_partial_start())
        if self.pending:
            limit = min(limit, self.pending[0].start)
        if limit >= len(self.text):
            return limit
        return self.starts[bisect_right(self.starts, limit) - 1] if self.starts else 0

    def _close_partial_start(self) -> int:
        tag = self.close_tag
        for n in range(min(len(tag) - 1, len(self.text)), 0, -1):
            if self.text.endswith(tag[:n]):
                return len(self.text) - n
        return len(self.text)

    # ---- results ----------------------------------------------------------------------
    def _result(self, seconds: float, decode_seconds: float) -> GenerationResult:
        closed = self.think_end is not None
        thinking_tokens = self.exit_token if self.exit else (self.answer_token if closed else len(self.gen))
        generated = len(self.gen)
        exit_info = None
        if self.exit:
            exit_info = {
                "cue": self.exit.cue,
                "token_index": self.exit.token_index,
                "score": self.exit.score,
                "threshold": self.exit.threshold,
            }
        return GenerationResult(
            answer=self.text[self.answer_start :].strip() if closed else "",
            thinking=(self.text[: self.think_end] if closed else self.text).strip(),
            exited=self.exit is not None,
            exit=exit_info,
            cues=[{k: v for k, v in c.to_dict().items() if k != "type"} for c in self.cues],
            tokens={
                "prompt": len(self.prompt),
                "cached": self.reused,
                "thinking": thinking_tokens,
                "answer": generated - thinking_tokens,
                "total": len(self.prompt) + generated,
            },
            model=self.e.model_name,
            probe=self.e.probe_name,
            alpha=self.rule.level if self.rule else None,
            seconds=round(seconds, 4),
            finish_reason=self.finish_reason,
            seed=self.req.sampling.seed,
            tokens_per_second=round(generated / decode_seconds, 2) if decode_seconds > 0 else 0.0,
            probe_calls=sum(1 for c in self.cues if c.score is not None),
            extra={
                "mode": self.rule.mode if self.rule else None,
                "exit_style": self.req.exit_style,
                "thinking_closed_by_runtime": self.closed_by_runtime,
            },
        )

    def _measure_savings(self, result: GenerationResult) -> Iterator[Event]:
        """Run the un-exited trajectory from the exit point to its natural end."""
        cut, tail, sampler = self.resume
        b = self.b
        b.truncate(len(self.prompt) + cut)
        b.decode(tail)
        natural = cut + len(tail)
        capped = False
        while not self.e._cancel.is_set():
            if natural >= self.req.max_tokens or b.n_past >= b.n_ctx:
                capped = True
                break
            token = b.sample(sampler)
            if b.is_eog(token):
                break
            b.decode([token])
            natural += 1
        else:
            return
        used = result.tokens["thinking"] + result.tokens["answer"]
        result.natural_tokens = natural
        result.tokens_saved = natural - used
        yield Savings(natural, natural - used, capped)
