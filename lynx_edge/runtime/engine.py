"""The engine: a model, its probe and exit policies, ready to answer.

``Engine`` loads a GGUF (preset or path), picks the probe made for exactly that model (or
none), and turns each request into a ``Plan`` (validated once: prompt fits, options make
sense, the grammar parses). ``generate`` runs one plan alone and yields its events;
``scheduler`` hands out the batch scheduler for callers that run many at once (the server,
the probe toolkit). Both run the same ``Generation`` steps, so a request answers alike
either way.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lynx_edge.errors import ContextOverflowError, LynxError, ProbeError, SettingError
from lynx_edge.events import Event
from lynx_edge.runtime.conditions import RequestConditions, answer_shape
from lynx_edge.runtime.cues import CueMatcher
from lynx_edge.runtime.generation import FeatureSink, Generation, Plan, Policy
from lynx_edge.runtime.ledger import token_texts
from lynx_edge.runtime.llama_backend import LlamaBackend, SamplingSettings, json_grammar, tool_call_grammar
from lynx_edge.runtime.model_files import default_probe, resolve_model
from lynx_edge.runtime.model_info import ModelDescription
from lynx_edge.runtime.onnx_probe import OnnxProbe, ProbeDevice
from lynx_edge.runtime.options import MAX_PARALLEL_CALLS, ExitStyle, FunctionTool, GenerationOptions, Mode, Promise
from lynx_edge.runtime.policies import DEFAULT_LEVELS, DEFAULT_TRIAL, MAKE_PROBE_HINT, NoExit, ProbeExit, TrialExit
from lynx_edge.runtime.presets import ModelPreset, model_thinks
from lynx_edge.runtime.probe_card import ProbeCard
from lynx_edge.runtime.rules import Calibration, ExitRule, calibrated_levels, card_rules, select_rule
from lynx_edge.runtime.scheduler import Scheduler
from lynx_edge.runtime.tool_calls import GENERIC, ToolFormat, format_for, string_arguments, template_messages
from lynx_edge.runtime.tool_use import ToolUse

Messages = str | Sequence[dict[str, Any]]
DEFAULT_ALPHA = 0.1
DOES_NOT_THINK = "this model does not think: no early exit"
NO_PROBE = f"early exits use the training-free policy, with no risk guarantee; {MAKE_PROBE_HINT}"
DEFAULT_ANSWER_RESERVE = 64  # tokens kept for the answer under any token limit (or a quarter of it)
BRANCH_CELLS = 256  # cache cells each slot keeps for trial answers and forced exits


class Engine:
    """A model, its probe and exit policies (one ``generate`` at a time, or a scheduler)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        probe: str | Path | None = "auto",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        parallel: int = 1,
        probe_device: ProbeDevice = "auto",
        thinks: bool | None = None,
    ) -> None:
        """``probe="auto"`` uses the shipped probe made for exactly this model when there is
        one; ``None`` runs without a probe. ``parallel`` is how many generations a scheduler
        may run at once (each gets its own slot in the KV cache). ``probe_device`` says where
        the probe runs (``onnx_probe.choose_provider``). ``thinks``: whether the model thinks
        before answering (None: judged from its preset, chat template and tokenizer)."""
        if parallel < 1:
            raise SettingError(f"parallel must be at least 1, got {parallel}")
        resolved = resolve_model(model)
        self.preset: ModelPreset = resolved.preset
        self.notice: str | None = None  # one line a front end shows once (probe missing or refused)
        self.card = ProbeCard.load(probe) if probe not in ("auto", None) else None
        auto_card = (
            ProbeCard.load(default_probe(self.preset)) if probe == "auto" and default_probe(self.preset) else None
        )
        card = self.card or auto_card
        n_ctx = n_ctx or self.preset.n_ctx
        self.backend = LlamaBackend(
            resolved.path,
            n_ctx=n_ctx,
            n_seq=2 * parallel,
            kv_cells=parallel * (n_ctx + BRANCH_CELLS),
            n_threads=n_threads,
            capture_layers=card.layers if card else self.preset.feature_layers,
            capture_final=card.final_norm if card else True,
        )
        has_think_token = len(self.backend.tokenize(self.preset.think_open)) == 1
        self.thinks = (
            model_thinks(self.preset, self.backend.chat_template, has_think_token) if thinks is None else thinks
        )
        if not self.thinks:  # nothing to exit from: served as a plain chat model
            self.card, auto_card = None, None
            self.notice = f"{DOES_NOT_THINK}; it is served as a plain chat model (thinking budgets do not apply)"
        self._settle_card(auto_card)
        # one probe per promise kind the card calibrates (each trained on its own label)
        self.probes: dict[str, OnnxProbe] = (
            {
                p: OnnxProbe(self.card.onnx_path_for(p), self.card.feature_dim, device=probe_device)
                for p in self.card.promises
            }
            if self.card and self.card.onnx
            else {}
        )
        self.probe = self.probes[self.card.promises[0]] if self.probes else None  # the default kind's
        # the level a request that names none runs at: the card's choice, else the runtime's
        self.alpha = self.card.default_alpha if self.card and self.card.default_alpha else DEFAULT_ALPHA
        source = self.card or self.preset
        self.cues = tuple(source.cues)
        self.exit_text = source.exit_text
        self.think_open = source.think_open
        self.think_close = source.think_close
        self.conclude_tokens = len(self.backend.tokenize(self.conclude_text("")))
        self.scaffold = list(self.card.scaffold if self.card and self.card.scaffold else self.preset.scaffold)
        self.matcher = CueMatcher(self.cues)
        self.parallel = parallel
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._scheduler: Scheduler | None = None

    def _settle_card(self, auto_card: ProbeCard | None) -> None:
        """Keep the probe made for exactly this model: an explicit card that does not fit is an
        error; a shipped one that does not fit (another quantization, a renamed fine-tune) is
        dropped with a notice, as is having none."""
        if auto_card is not None:
            try:
                auto_card.check_model(self.backend.info)
                self.card = auto_card
            except ProbeError as exc:
                self.notice = f"the shipped probe does not fit this file ({exc}); {NO_PROBE}"
        elif self.card is not None:
            self.card.check_model(self.backend.info)
        if self.card is None and self.notice is None:
            self.notice = f"no probe matches {self.backend.info.name}: {NO_PROBE}"

    # ---- what the engine offers -------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.backend.info.name

    @property
    def system_prompt(self) -> str | None:
        """The system message put before a conversation that brings none."""
        return next((m["content"] for m in self.scaffold if m["role"] == "system"), None)

    @property
    def probe_name(self) -> str | None:
        return self.card.label if self.card else None

    @property
    def notices(self) -> list[str]:
        """Lines a front end shows once: no probe (or one that does not fit), a weak probe."""
        lines = [self.notice] if self.notice else []
        if self.card is not None and self.card.warning:
            lines.append(self.card.warning)
        return lines

    def rules(self) -> list[ExitRule]:
        """Every calibrated rule of the probe (none without a card)."""
        return card_rules(self.card.calibration) if self.card else []

    def rule_for(
        self,
        alpha: float | None = None,
        mode: Mode | None = None,
        calibration: Calibration | None = None,
        promise: Promise | None = None,
    ) -> ExitRule | None:
        """The calibrated rule a risk level picks in ``calibration`` (default: the card's first
        condition set's) for ``promise`` (default: the card's); None without a card."""
        if not self.card:
            return None
        return select_rule(calibration or self.card.calibration, self.alpha if alpha is None else alpha, mode, promise)

    def levels(self, mode: Mode, promise: Promise | None = None) -> list[float]:
        """The risk levels the card offers in ``mode`` for ``promise``, ascending."""
        return calibrated_levels(self.card.calibration, mode, promise) if self.card else []

    def policy_for(self, options: GenerationOptions, calibration: Calibration | None = None) -> Policy:
        """The exit policy ``options`` ask for, on this model, with thresholds from
        ``calibration`` (default: the card's first condition set's)."""
        kind = options.exit
        if not self.thinks:
            return NoExit(reason=DOES_NOT_THINK)
        if kind == "none":
            return NoExit()
        trial_card = self.card is not None and self.card.score == "trial"
        if kind == "probe" or (kind == "auto" and self.probe is not None):
            if self.probe is None:
                raise SettingError(f"{self.model_name} has no probe, so --exit probe cannot run: {NO_PROBE}")
            rule = self.rule_for(options.alpha, options.mode, calibration, options.promise)
            return ProbeExit(rule, self.probes[rule.promise], self.card.label)
        if kind == "auto":
            kind = "deer" if trial_card else DEFAULT_TRIAL
        level = options.trial_level if options.trial_level is not None else DEFAULT_LEVELS[kind]
        if kind == "deer" and not 0 < level < 1:
            raise SettingError(f"DEER's λ must lie in (0, 1), got {level}: pass e.g. --trial-level 0.95")
        if kind == "consistency" and (level < 2 or level != int(level)):
            raise SettingError(f"consistency needs k ≥ 2 equal trials in a row, got {level}: pass e.g. --trial-level 2")
        rule = (
            self.rule_for(options.alpha, options.mode, calibration, options.promise)
            if trial_card and kind == "deer" and options.trial_level is None
            else None
        )
        return TrialExit(kind, level, rule)

    # ---- requests ---------------------------------------------------------------------
    @property
    def tool_format(self) -> ToolFormat:
        """How this model writes tool calls (read from its chat template)."""
        return format_for(self.backend.chat_template)

    def render_prompt(self, messages: Messages, *, think: bool = True, tools: Sequence[FunctionTool] = ()) -> str:
        """Chat-template text of scaffold + messages (and the ``tools`` the model may call),
        ending inside an open thinking block (or, with ``think`` off and a template that can,
        after an empty one)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        scaffold = self.scaffold
        if any(m["role"] == "system" for m in messages):
            scaffold = [m for m in scaffold if m["role"] != "system"]
        kwargs = dict(self.preset.template_kwargs)
        if not think:
            kwargs.update(self.preset.no_think_kwargs)
        text = self._render([*scaffold, *messages], tools, kwargs)
        if not self.thinks or (not think and self.preset.no_think_kwargs):
            return text
        if not text.rstrip().endswith(self.think_open):
            text += f"{self.think_open}\n"
        return text

    def _render(self, messages: list[dict[str, Any]], tools: Sequence[FunctionTool], kwargs: dict[str, Any]) -> str:
        """The template's text, with tools and tool turns in the form the template takes."""
        fmt = self.tool_format
        declared = [{"type": "function", "function": t.model_dump()} for t in tools]
        if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages) or declared:
            messages = template_messages(messages, declared, fmt)
            if declared and fmt is not GENERIC:
                kwargs["tools"] = declared
        try:
            return self.backend.render_chat(messages, **kwargs)
        except TypeError:  # a template that joins earlier calls' arguments as text
            return self.backend.render_chat(string_arguments(messages), **kwargs)

    def prompt_tokens(self, messages: Messages, *, think: bool = True, tools: Sequence[FunctionTool] = ()) -> list[int]:
        """The tokens a request's prompt takes (what the servers' token counters report)."""
        return self.backend.prompt_tokens(self.render_prompt(messages, think=think, tools=tools))

    def plan(self, messages: Messages, options: GenerationOptions) -> Plan:
        """Check a request against this model and resolve every default (raises ``LynxError``
        subclasses with one-line messages)."""
        _check_messages(messages)
        prompt = self.prompt_tokens(messages, think=options.think, tools=options.callable_tools)
        if len(prompt) + 1 > self.backend.n_ctx:
            raise ContextOverflowError(len(prompt) + 1, self.backend.n_ctx)
        temperature = self.preset.temperature if options.temperature is None else options.temperature
        top_p = self.preset.top_p if options.top_p is None else options.top_p
        max_tokens = min(options.max_tokens or self.preset.max_tokens, self.backend.n_ctx - len(prompt))
        seed = random.randrange(2**31) if options.seed is None else options.seed
        sampling = SamplingSettings(
            temperature,
            top_p,
            options.top_k,
            seed,
            options.frequency_penalty,
            options.presence_penalty,
            max(max_tokens, 1),
            tuple(options.logit_bias),
            options.repeat_penalty,
        )
        for token, _ in options.logit_bias:
            if not 0 <= token < self.backend.info.n_vocab:
                raise SettingError(
                    f"logit_bias names token {token}, outside this model's vocabulary "
                    f"0..{self.backend.info.n_vocab - 1}"
                )
        grammar = None
        if options.json_schema is not None:
            grammar = self.backend.grammar(json_grammar(options.json_schema))
            if grammar is None:
                raise SettingError("the answer's grammar does not parse in llama.cpp: check the JSON schema")
        tools = self._tool_use(options)
        request = RequestConditions(
            temperature=temperature,
            top_p=top_p,
            exit_style=options.exit_style,
            system_prompt=self._system_prompt_of(messages),
            top_k=options.top_k,
            extra_sampling=_extra_sampling(options),
            exit_text=self.exit_text_for(options.exit_style, ""),
            answer_shape=answer_shape(
                tools=len(options.callable_tools),
                json_schema=options.json_schema is not None,
                earlier_turns=_earlier_turns(messages),
            ),
        )
        calibration, departures = self.card.calibration_for(request) if self.card else (None, [])
        policy = self.policy_for(options, calibration)
        departures = departures if policy.guarantee else []
        reserve = answer_reserve(options, max_tokens) if self.thinks else 0  # a plain answer is never cut
        return Plan(
            prompt=prompt,
            max_tokens=max_tokens,
            sampling=sampling,
            policy=policy,
            departures=tuple(departures),
            exit_style=options.exit_style,
            measure_savings=options.measure_savings,
            think=options.think,
            think_closed_in_prompt=not self.thinks or (not options.think and bool(self.preset.no_think_kwargs)),
            grammar=grammar,
            answer_reserve=reserve,
            thinking_budget=options.thinking_budget if self.thinks else None,  # nothing to budget
            loop_guard=options.loop_guard,
            logprobs=options.logprobs,
            top_logprobs=options.top_logprobs,
            tools=tools,
        )

    def _tool_use(self, options: GenerationOptions) -> ToolUse | None:
        """The calls a request allows, with their grammar compiled for this request."""
        if not options.callable_tools:
            return None
        if options.exit_style == "boxed":
            raise SettingError(
                "a boxed exit answers inside \\boxed{}, never with a tool call: use exit_style conclude with tools",
                field="exit_style",
            )
        most = MAX_PARALLEL_CALLS if options.parallel_tool_calls else 1
        gbnf = tool_call_grammar(options.callable_tools, self.tool_format, most=most)
        grammar = self.backend.grammar(gbnf)
        if grammar is None:
            raise SettingError("the tools' grammar does not parse in llama.cpp: check their parameters", field="tools")
        return ToolUse(self.tool_format, options.calls_forced, grammar, gbnf)

    def _system_prompt_of(self, messages: Messages) -> str | None:
        """The system message the model will see: the request's own, else the scaffold's."""
        if not isinstance(messages, str):
            own = [str(m.get("content", "")) for m in messages if m.get("role") == "system"]
            if own:
                return "\n".join(own)
        return self.system_prompt

    def exit_text_for(self, style: ExitStyle, thinking: str) -> str:
        """What the runtime writes when it closes ``thinking`` early in ``style``."""
        return self.exit_text if style == "boxed" else self.conclude_text(thinking)

    def conclude_text(self, thinking: str) -> str:
        """What closes ``thinking`` so the model answers next, in the model's own layout (a
        close tag on its own line, then the gap the model leaves before answering)."""
        lead = "" if not thinking or thinking.endswith("\n") else "\n"
        return f"{lead}{self.think_close}{self.preset.answer_gap}"

    def token_texts(self, tokens: Sequence[int]) -> list[str]:
        """The text each generated token adds (a close tag's pieces count as thinking)."""
        return token_texts(self.backend.piece, tokens, self.think_close)

    def generation(
        self, plan: Plan, slot: Any, *, cancelled: threading.Event, feature_sink: FeatureSink | None = None
    ) -> Generation:
        return Generation(self, plan, slot, cancelled=cancelled, feature_sink=feature_sink)

    def describe(self) -> ModelDescription:
        """The loaded model as front ends show it."""
        b = self.backend
        return ModelDescription(
            b.info,
            b.n_ctx,
            b.parameter_size(),
            b.quantization(),
            b.chat_template or "",
            self.preset.name,
            self.preset.temperature,
            self.thinks,
        )

    def cancel(self) -> None:
        """Stop the running ``generate`` at the next token (thread-safe)."""
        self._cancel.set()

    def generate(
        self,
        messages: Messages,
        options: GenerationOptions | None = None,
        *,
        feature_sink: FeatureSink | None = None,
        **overrides: Any,
    ) -> Iterator[Event]:
        """Yield events for one answer; see ``lynx_edge.events`` for their order.

        ``options`` (or keyword ``overrides`` of its fields) say how; the request is checked
        here, before the first event. ``feature_sink`` receives every cue's features (capture
        armed at every cue even without a probe): the probe toolkit records events through it.
        """
        options = (options or GenerationOptions()).but(**overrides) if overrides else (options or GenerationOptions())
        plan = self.plan(messages, options)
        return self._run_alone(plan, feature_sink)

    def _run_alone(self, plan: Plan, feature_sink: FeatureSink | None) -> Iterator[Event]:
        if not self._lock.acquire(blocking=False):
            raise LynxError("this engine is already generating: wait for it or cancel it first")
        self._cancel.clear()
        scheduler = self.scheduler()
        events: deque[Event] = deque()
        task = scheduler.add(
            lambda slot: self.generation(plan, slot, cancelled=self._cancel, feature_sink=feature_sink).steps(),
            scheduler.slots[0],
            events.append,
        )
        try:
            while True:
                while events:
                    yield events.popleft()
                if task.done:
                    break
                scheduler.step()
            if task.error is not None:
                raise task.error
        finally:
            scheduler.close(task)
            self._lock.release()

    def scheduler(self) -> Scheduler:
        """The batch scheduler over this engine's slots (one per ``parallel``)."""
        if self._scheduler is None:
            self._scheduler = Scheduler(self.backend)
        return self._scheduler

    def close(self) -> None:
        self.backend.close()


def answer_reserve(options: GenerationOptions, max_tokens: int) -> int:
    """Tokens of ``max_tokens`` kept for the answer (the one place this rule lives; 0: none):
    what the request asks for — an error when that leaves no room to think — else
    ``DEFAULT_ANSWER_RESERVE`` or a quarter of the limit, whichever is smaller."""
    if options.answer_reserve is not None:
        if options.answer_reserve and options.answer_reserve >= max_tokens:
            raise SettingError(
                f"the answer reserve ({options.answer_reserve}) leaves no room to think in {max_tokens} tokens: "
                "raise max_tokens or lower answer_reserve",
                field="answer_reserve",
            )
        return options.answer_reserve
    return min(DEFAULT_ANSWER_RESERVE, max_tokens // 4)


def _earlier_turns(messages: Messages) -> int:
    """Turns before the last user message (assistant replies, tool results)."""
    if isinstance(messages, str):
        return 0
    return sum(1 for m in messages if m.get("role") in ("assistant", "tool"))


def _extra_sampling(options: GenerationOptions) -> tuple[str, ...]:
    """Sampler knobs that reshape the distribution beyond temperature/top-p/top-k."""
    knobs = []
    if options.frequency_penalty:
        knobs.append(f"frequency_penalty {options.frequency_penalty:g}")
    if options.presence_penalty:
        knobs.append(f"presence_penalty {options.presence_penalty:g}")
    if options.repeat_penalty != 1.0:
        knobs.append(f"repeat_penalty {options.repeat_penalty:g}")
    if options.logit_bias:
        knobs.append("logit_bias")
    return tuple(knobs)


def _check_messages(messages: Messages) -> None:
    texts = (
        [messages] if isinstance(messages, str) else [m.get("content", "") for m in messages if m.get("role") == "user"]
    )
    if not texts or not any(str(t).strip() for t in texts):
        raise SettingError("the prompt is empty: type a question (or pass '-' to read it from stdin)")
