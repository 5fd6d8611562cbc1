"""User-facing errors: ``str(error)`` is one line that names the problem and the fix.

The CLI prints them without a traceback, the server maps the classes to HTTP statuses, and
the chat shows them as notifications.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any


class LynxError(Exception):
    """A problem the user can fix."""


class ModelError(LynxError):
    """A model file is missing, corrupt, unknown or cannot be fetched."""


class ProbeError(LynxError):
    """A probe card or ONNX file is invalid or belongs to another model."""


class SettingError(LynxError, ValueError):
    """A request setting (alpha, temperature, …) is out of range; ``field`` names the
    ``GenerationOptions`` field when there is one, so each front end can name its own flag
    or parameter."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ContextOverflowError(LynxError):
    """A prompt (plus what is generated) does not fit the context window."""

    def __init__(self, needed: int, n_ctx: int) -> None:
        self.needed = needed
        self.n_ctx = n_ctx
        super().__init__(
            f"the prompt needs {needed} tokens but the context holds {n_ctx}: shorten the prompt or raise --n-ctx"
        )


class DataError(LynxError):
    """A corpus or benchmark file that cannot be read as problems."""


def exits_on_user_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """For click commands: a ``LynxError`` becomes one line on stderr and exit code 1 (no
    traceback; ``LYNX_EDGE_DEBUG=1`` re-raises it)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import click

        try:
            return func(*args, **kwargs)
        except LynxError as exc:
            if os.environ.get("LYNX_EDGE_DEBUG"):
                raise
            raise click.ClickException(str(exc)) from None

    return wrapper
