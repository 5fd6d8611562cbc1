"""Click options shared by the commands, with choices taken from the runtime's literals.

Values are turned into a ``GenerationOptions`` (validated there, once) or engine arguments;
a value click cannot parse, or one outside its range, is a usage error (exit code 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lynx_edge.errors import SettingError
from lynx_edge.runtime.options import EXIT_POLICIES, EXIT_STYLES, MODES, check_alpha

F = Callable[..., Any]


class Alpha(click.ParamType):
    """A risk level strictly between 0 and 1."""

    name = "alpha"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return check_alpha(float(value))
        except (TypeError, ValueError):
            self.fail(
                f"alpha must be a number strictly between 0 and 1, got {value!r}: pass e.g. --alpha 0.1", param, ctx
            )


class LogitBias(click.ParamType):
    """``TOKEN=BIAS`` (a token id and a bias in [-100, 100])."""

    name = "token=bias"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, float]:
        if isinstance(value, tuple):
            return value
        try:
            token, bias = value.split("=")
            return int(token), float(bias)
        except ValueError:
            self.fail(f"logit bias must look like TOKEN=BIAS (e.g. 1234=-100), got {value!r}", param, ctx)


def apply(options: list[Callable[[F], F]], func: F) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: F) -> F:
    """Options shared by every command that loads a model and probe."""
    return apply(
        [
            click.option("--model", "-m", help="GGUF path or preset name (see `lynx-edge models`)."),
            click.option(
                "--probe",
                type=click.Path(),
                help="Probe directory or card.json (default: the probe shipped for this model).",
            ),
            click.option(
                "--no-probe", is_flag=True, help="Run without a probe (training-free exits, or none with --exit none)."
            ),
            click.option(
                "--alpha",
                type=Alpha(),
                help="Risk level in (0, 1): the calibrated entry at or below it is used (default: the probe's).",
            ),
            click.option(
                "--mode",
                type=click.Choice(MODES),
                help="Which calibration to use (default: per-answer when the probe has it).",
            ),
            click.option(
                "--n-ctx",
                type=click.IntRange(min=16),
                help="Context size in tokens per request (default: the preset's).",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                help="CPU threads for llama.cpp (default: the physical cores no other busy process wants, "
                "re-checked as it runs).",
            ),
            click.option(
                "--probe-device",
                type=click.Choice(["auto", "cpu", "coreml"]),
                default="auto",
                show_default=True,
                help="Where the probe runs: auto keeps small probes on the CPU (faster than a CoreML "
                "dispatch) and moves large ones to CoreML on macOS.",
            ),
        ],
        func,
    )


def exit_options(func: F) -> F:
    """Who may close the thinking early."""
    return apply(
        [
            click.option(
                "--exit",
                "exit_policy",
                type=click.Choice(EXIT_POLICIES),
                default="auto",
                show_default=True,
                help="auto: the probe when the model has one, else the training-free default; none: never exit.",
            ),
            click.option("--no-exit", is_flag=True, help="Same as --exit none: the plain loop, the baseline."),
            click.option(
                "--trial-level",
                type=float,
                help="DEER's confidence λ, or consistency's run length k (training-free exits).",
            ),
        ],
        func,
    )


def generation_options(func: F) -> F:
    """Sampling and answer options of one request."""
    return apply(
        [
            click.option("--seed", type=int, help="Sampling seed (default: random, reported in --json)."),
            click.option(
                "--temperature",
                "-t",
                type=click.FloatRange(min=0),
                help="Sampling temperature; 0 is greedy (default: the preset's).",
            ),
            click.option(
                "--top-p",
                type=click.FloatRange(0, 1, min_open=True),
                help="Nucleus probability (default: the preset's).",
            ),
            click.option(
                "--max-tokens",
                type=click.IntRange(min=1),
                help="Cap on thinking + answer tokens (default: the preset's).",
            ),
            click.option(
                "--exit-style",
                type=click.Choice(EXIT_STYLES),
                default="conclude",
                show_default=True,
                help="conclude: close the thinking, the model answers; boxed: greedy \\boxed{} answer.",
            ),
            click.option(
                "--no-think",
                is_flag=True,
                help="Close the thinking at once (the template's own switch where it has one).",
            ),
            click.option(
                "--json-schema",
                "json_schema",
                type=click.Path(dir_okay=False, path_type=Path),
                help="The answer (not the thinking) must be JSON valid against this schema file.",
            ),
            click.option("--json-object", is_flag=True, help="The answer must be a JSON object."),
            click.option(
                "--answer-reserve",
                type=click.IntRange(min=1),
                help="Keep this many of --max-tokens for the answer: the thinking is closed in time (a budget exit).",
            ),
            click.option("--frequency-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True),
            click.option("--presence-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True),
            click.option(
                "--logit-bias", type=LogitBias(), multiple=True, help="TOKEN=BIAS, repeatable (bias in [-100, 100])."
            ),
        ],
        func,
    )


def answer_grammar(json_schema: Path | None, json_object: bool) -> str | None:
    """The GBNF the answer must follow, from --json-schema / --json-object."""
    from lynx_edge.runtime.llama_backend import json_grammar

    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingError(f"cannot read the JSON schema {json_schema} ({exc}): pass a JSON file") from None
        return json_grammar(schema)
    return json_grammar(None) if json_object else None


def exit_choice(exit_policy: str, no_exit: bool) -> str:
    return "none" if no_exit else exit_policy
