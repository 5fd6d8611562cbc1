"""What the chat's next reply is generated with: early exit and its risk level, the effort
word that picked it, thinking on or off, a thinking budget, and the chat's system prompt.

The keys and the command palette change these; every reply is generated from them over the
chat's start-up options (``options``) and stores them beside itself (``words``), so the
history says how each reply was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lynx_edge.errors import SettingError
from lynx_edge.runtime.options import GenerationOptions

BUDGETS: tuple[int | None, ...] = (None, 256, 512, 1024)  # what Ctrl+B steps through
EFFORTS = ("low", "medium", "high", "xhigh", "max")  # what Ctrl+F steps through

NO_BUDGET = "none (think until the exit or the token limit)"
# The palette's commands beside the keys (title, help, action); budgets and efforts by name too.
COMMANDS = (
    ("Thinking on/off", "Think before answering, or answer at once (Ctrl+T)", "toggle_thinking"),
    *(
        (
            f"Thinking budget: {b or 'none'}",
            f"Thinking budget {f'{b} tokens' if b else NO_BUDGET} (Ctrl+B steps)",
            f"set_budget({b})",
        )
        for b in BUDGETS
    ),
    ("Thinking budget: custom…", "Type a thinking budget in tokens", "custom_budget"),
    *((f"Effort: {e}", "The risk level for this effort (Ctrl+F steps)", f"set_effort('{e}')") for e in EFFORTS),
    ("Early exit on/off", "Let the probe cut the thinking, or not (F2)", "toggle_lynx"),
    ("Switch model…", "Go on with another model (F8)", "pick_model"),
    ("Copy answer", "Copy the last answer (Ctrl+O)", "copy_answer"),
    ("Copy message", "Copy the whole last message: thinking, answer, stats (Ctrl+Y)", "copy_message"),
    ("Regenerate", "Write the last reply again (Ctrl+R)", "regenerate"),
    ("Edit last prompt", "Put the last prompt back in the box to resend (F9)", "edit_last"),
    ("System prompt…", "This chat's system prompt (F10)", "system_prompt"),
    ("Compare", "Rerun the last prompt without early exit (F5)", "compare"),
    ("Export", "Write this chat as Markdown (F7)", "export"),
)


def step_level(levels: list[float], current: float, step: int) -> float | None:
    """The calibrated level ``step`` places from ``current`` (None past either end)."""
    i = levels.index(current) + step
    return levels[i] if 0 <= i < len(levels) else None


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

    def toggle_lynx(self) -> str:
        """Early exit on or off (an effort word no longer names the level); what changed."""
        self.lynx, self.effort = not self.lynx, None
        return f"early exit {'on' if self.lynx else 'off'}"

    def toggle_thinking(self) -> str:
        self.think = not self.think
        return f"thinking {'on' if self.think else 'off'}"

    def set_budget(self, budget: int | None) -> str:
        self.budget = budget
        return f"thinking budget {budget} tokens" if budget else "no thinking budget"

    def set_budget_text(self, text: str) -> str:
        """A budget typed by the user (checked as every option is), or a ``SettingError``."""
        try:
            return self.set_budget(GenerationOptions(thinking_budget=int(text)).thinking_budget)
        except (ValueError, SettingError):
            raise SettingError(f"not a budget: {text!r} (type a whole number of tokens, e.g. 300)") from None

    def made_with(self, model: str, policy: str) -> dict[str, Any]:
        """What a stored reply says it was made with."""
        return {"model": model, "settings": f"{model} · {self.words()} · {policy}", "options": asdict(self)}

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
