"""What the chat's next reply is generated with: early exit and its risk level, the effort
word that picked it, thinking on or off, a thinking budget, and the chat's system prompt.

The keys and the command palette change these; every reply is generated from them over the
chat's start-up options (``options``) and stores them beside itself (``words``), so the
history says how each reply was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lynx_edge.runtime.options import GenerationOptions

BUDGETS: tuple[int | None, ...] = (None, 256, 512, 1024)  # what Ctrl+B steps through
EFFORTS = ("low", "medium", "high", "xhigh", "max")  # what Ctrl+F steps through


@dataclass
class ReplySettings:
    lynx: bool = True  # early exit on
    alpha: float | None = None  # the calibrated level (None: no probe, so no level)
    effort: str | None = None  # the effort word that picked ``alpha`` (None: set by F3/F4 or start-up)
    think: bool = True
    budget: int | None = None  # thinking tokens (None: no budget beyond the token limit)
    system: str = ""  # the chat's system prompt ("": the model's own)

    @classmethod
    def starting(cls, defaults: GenerationOptions) -> ReplySettings:
        return cls(lynx=defaults.exit != "none", think=defaults.think, budget=defaults.thinking_budget)

    def options(self, defaults: GenerationOptions, *, lynx: bool | None = None, **more: Any) -> GenerationOptions:
        """The options a reply runs with (``lynx`` overrides early exit: a comparison rerun)."""
        on = self.lynx if lynx is None else lynx
        return defaults.but(
            exit=(defaults.exit if defaults.exit != "none" else "auto") if on else "none",
            alpha=self.alpha if on else None,
            think=self.think,
            thinking_budget=self.budget,
            **more,
        )

    def next_budget(self) -> int | None:
        """The budget after this one in ``BUDGETS`` (a custom one steps back to none)."""
        i = BUDGETS.index(self.budget) if self.budget in BUDGETS else -1
        return BUDGETS[(i + 1) % len(BUDGETS)]

    def next_effort(self) -> str:
        i = EFFORTS.index(self.effort) if self.effort in EFFORTS else -1
        return EFFORTS[(i + 1) % len(EFFORTS)]

    def words(self) -> str:
        """The thinking settings in a few words (the header, each stored reply)."""
        parts = ["thinking on" if self.think else "thinking off"]
        if self.think and self.budget is not None:
            parts.append(f"budget {self.budget} tok")
        if self.effort:
            parts.append(f"effort {self.effort}")
        parts.append("exit on" if self.lynx else "exit off")
        return " · ".join(parts)
