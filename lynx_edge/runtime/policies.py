"""Exit policies: who may close the thinking at a cue, and on what evidence.

* ``ProbeExit`` — LYNX: the probe scores the hidden state at the cue; a calibrated rule
  (split conformal per cue, Learn-then-Test per answer) decides, so the risk level holds.
* ``TrialExit`` — training-free, for models without a probe: at a cue the runtime writes a
  trial answer on a branch of the KV cache and exits when it is confident (DEER: its mean
  token probability clears λ) or stable (consistency: the same answer k trials in a row).
  No guarantee, unless a card calibrated the trial confidence on labelled traces.
* ``NoExit`` — the plain loop (``--exit none``): cues are shown, never acted on.

Pure Python: what a policy decides from a score or a trial answer, nothing about decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.rules import ExitRule

TrialKind = Literal["deer", "consistency"]
MAKE_PROBE_HINT = "make a probe to get one: lynx-edge probe make --model MODEL -d DATA.jsonl -o probes/NAME"

# Measured on the embedded reasoner with its probe removed (README "Training-free exits").
DEFAULT_TRIAL: TrialKind = "consistency"
DEFAULT_LEVELS: dict[TrialKind, float] = {"deer": 0.95, "consistency": 2}
MIN_THINKING_TOKENS = 0  # no trial before this many thinking tokens
MIN_TRIAL_GAP = 0  # tokens between two trials


@dataclass(frozen=True)
class Decision:
    score: float | None
    threshold: float | None
    exits: bool


@dataclass(frozen=True)
class NoExit:
    """Cues are reported, nothing is scored (the baseline loop)."""

    kind: str = "none"
    guarantee: bool = False
    level: float | None = None
    mode: str | None = None
    rule: ExitRule | None = None
    reason: str = "early exit off"  # why nothing exits: asked, or a model that does not think

    def describe(self) -> str:
        return f"none ({self.reason})"


@dataclass(frozen=True)
class ProbeExit:
    """LYNX: a probe's score against a calibrated rule."""

    rule: ExitRule
    probe: OnnxProbe
    label: str
    kind: str = "probe"
    guarantee: bool = True

    @property
    def level(self) -> float:
        return self.rule.level

    @property
    def mode(self) -> str:
        return self.rule.mode

    def describe(self) -> str:
        return f"LYNX probe {self.label} ({self.rule.mode} {self.rule.statement})"

    def judge(self, features) -> Decision:  # noqa: ANN001 - a float32 feature vector
        score = self.probe.score(features)
        return Decision(score, self.rule.threshold, self.rule.exits(score))


@dataclass(frozen=True)
class TrialExit:
    """A training-free policy on trial answers written at cues (``rule``: a card that
    calibrated the DEER confidence, which then carries its risk level)."""

    kind: TrialKind
    level: float
    rule: ExitRule | None = None
    min_thinking: int = MIN_THINKING_TOKENS
    min_gap: int = MIN_TRIAL_GAP

    @property
    def guarantee(self) -> bool:
        return self.rule is not None

    @property
    def mode(self) -> str | None:
        return self.rule.mode if self.rule else None

    def describe(self) -> str:
        if self.rule is not None:
            return f"trial-confidence exit calibrated at {self.rule.mode} {self.rule.statement}"
        what = f"DEER λ {self.level:g}" if self.kind == "deer" else f"consistency k {self.level:g}"
        return f"training-free exit ({what}), no risk guarantee — {MAKE_PROBE_HINT}"

    def wants_trial(self, token_index: int, last_trial: int | None) -> bool:
        """Trials cost decode time: skip the ones that cannot pay off."""
        if token_index < self.min_thinking:
            return False
        return last_trial is None or token_index - last_trial >= self.min_gap

    def judge(self, answer: str, confidence: float, earlier: list[str]) -> Decision:
        """Decide on a trial answer; ``earlier`` are the previous trials' answers, in order."""
        if self.kind == "deer" or self.rule is not None:
            if self.rule is not None:
                return Decision(confidence, self.rule.threshold, self.rule.exits(confidence))
            return Decision(confidence, self.level, confidence > self.level)
        key = normalize_answer(answer)
        run = 0
        for previous in reversed([*earlier, answer]):
            if not key or normalize_answer(previous) != key:
                break
            run += 1
        return Decision(float(run), float(self.level), run >= self.level)


def first_trial_exit(policy: TrialExit, trials: Sequence[tuple[str, float]]) -> int | None:
    """Index of the trial (answer, confidence) where ``policy`` exits, judging each as the
    runtime does with the trials before it (None: it thinks to the end)."""
    earlier: list[str] = []
    for i, (answer, confidence) in enumerate(trials):
        if policy.judge(answer, confidence, earlier).exits:
            return i
        earlier.append(answer)
    return None


def normalize_answer(text: str) -> str:
    """The answer inside the last ``\\boxed{`` of a trial, without spaces, commas or a
    trailing period ("1,200 " and "1200" agree); the text itself when there is no box."""
    at = text.rfind("\\boxed{")
    inner = text[at + len("\\boxed{") :] if at >= 0 else text
    inner = inner.split("}", 1)[0]
    return re.sub(r"[\s,$]", "", inner).rstrip(".").lower()
