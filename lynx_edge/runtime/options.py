"""One generation's options: a frozen object validated once, where it is made.

The CLI, the chat, the server and the Python API all build a ``GenerationOptions`` and hand
it to ``Engine.generate``. Ranges are checked here; ``Engine.plan`` adds the checks that need
the model (context size, vocabulary, grammar), and the CLI's click types and the server's
schema check some of the same ranges at their own edge first. The literal types below are
also where click's choices and the server's schema come from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from lynx_edge.errors import SettingError

Mode = Literal["per-cue", "per-answer"]
ExitStyle = Literal["conclude", "boxed"]
ExitPolicyName = Literal["auto", "none", "probe", "deer", "consistency"]
MODES: tuple[Mode, ...] = get_args(Mode)
EXIT_STYLES: tuple[ExitStyle, ...] = get_args(ExitStyle)
EXIT_POLICIES: tuple[ExitPolicyName, ...] = get_args(ExitPolicyName)
MAX_TOP_LOGPROBS = 20


def check_alpha(alpha: float) -> float:
    """Reject a risk level outside (0, 1) with a message that says what to pass."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise SettingError(f"alpha must lie strictly between 0 and 1, got {alpha}: pass e.g. --alpha 0.1")
    return float(alpha)


def check_exit_style(style: object) -> None:
    """Reject an exit style other than conclude or boxed."""
    _check(style in EXIT_STYLES, f"exit style must be conclude or boxed, got {style!r}")


@dataclass(frozen=True)
class GenerationOptions:
    """How to answer one request. ``None`` fields take the model preset's (or probe's) default.

    ``exit`` picks who may close the thinking early: the probe (LYNX, with a calibrated risk
    level), a training-free trial policy (``deer`` / ``consistency``, no guarantee), ``none``
    (the plain loop: the baseline), or ``auto`` (the probe when the model has one, else the
    training-free default).
    """

    max_tokens: int | None = None  # thinking + answer
    temperature: float | None = None
    top_p: float | None = None
    top_k: int = 100
    seed: int | None = None
    exit: ExitPolicyName = "auto"
    alpha: float | None = None  # risk level of the probe's calibrated rule
    mode: Mode | None = None  # per-cue or per-answer calibration
    trial_level: float | None = None  # DEER's λ (confidence) or the consistency run length k
    exit_style: ExitStyle = "conclude"
    measure_savings: bool = False
    think: bool = True  # False: close the thinking at once (--no-think, reasoning_effort "none")
    grammar: str | None = None  # GBNF the answer must follow (the thinking stays free)
    answer_reserve: int | None = None  # tokens kept for the answer out of max_tokens
    logprobs: bool = False
    top_logprobs: int = 0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
        if isinstance(self.logit_bias, Mapping):
            object.__setattr__(self, "logit_bias", tuple((int(k), float(v)) for k, v in self.logit_bias.items()))
        _check(
            self.temperature is None or (_finite(self.temperature) and self.temperature >= 0),
            f"temperature must be ≥ 0, got {self.temperature}: pass e.g. --temperature 0.6",
        )
        _check(
            self.top_p is None or (_finite(self.top_p) and 0 < self.top_p <= 1),
            f"top_p must lie in (0, 1], got {self.top_p}: pass e.g. --top-p 0.95",
        )
        _check(
            self.max_tokens is None or (_int(self.max_tokens) and self.max_tokens >= 1),
            f"max_tokens must be a positive integer, got {self.max_tokens}",
        )
        _check(_int(self.top_k) and self.top_k >= 0, f"top_k must be a non-negative integer, got {self.top_k}")
        _check(self.seed is None or _int(self.seed), f"seed must be an integer, got {self.seed}")
        _check(self.exit in EXIT_POLICIES, f"exit policy must be one of {', '.join(EXIT_POLICIES)}, got {self.exit!r}")
        _check(
            self.mode is None or self.mode in MODES, f"unknown exit mode {self.mode!r}: use one of {', '.join(MODES)}"
        )
        check_exit_style(self.exit_style)
        _check(
            self.trial_level is None or (_finite(self.trial_level) and self.trial_level > 0),
            f"trial level must be positive (DEER λ in (0, 1), consistency k ≥ 2), got {self.trial_level}",
        )
        _check(
            self.answer_reserve is None or (_int(self.answer_reserve) and self.answer_reserve >= 1),
            f"answer reserve must be a positive number of tokens, got {self.answer_reserve}",
        )
        _check(
            _int(self.top_logprobs) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
            f"top_logprobs must lie in 0..{MAX_TOP_LOGPROBS}, got {self.top_logprobs}",
        )
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            _check(_finite(value) and -2.0 <= value <= 2.0, f"{name} must lie in [-2, 2], got {value}")
        for token, bias in self.logit_bias:
            _check(
                _finite(bias) and -100 <= bias <= 100,
                f"logit_bias values must lie in [-100, 100], got {bias} for {token}",
            )

    def but(self, **changes: object) -> GenerationOptions:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingError(message)
