"""lynx-edge: reasoning models that stop thinking once they know the answer (LYNX on llama.cpp).

The Python API for apps::

    from lynx_edge import Engine
    engine = Engine()                      # embedded default model and its probe
    for event in engine.generate("What is 17 * 3?"):
        ...                                # ThinkingDelta, CueScored, ExitTaken, AnswerDelta, Done

Names are imported on first use, so ``import lynx_edge.events`` (or reading a probe card)
does not load llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Engine": "lynx_edge.runtime.engine",
    "GenerationOptions": "lynx_edge.runtime.options",
    "ContextOverflowError": "lynx_edge.errors",
    "LynxError": "lynx_edge.errors",
    "ModelError": "lynx_edge.errors",
    "ProbeError": "lynx_edge.errors",
    "SettingError": "lynx_edge.errors",
    "Promise": "lynx_edge.runtime.options",
    "AnswerDelta": "lynx_edge.events",
    "CueScored": "lynx_edge.events",
    "Done": "lynx_edge.events",
    "Event": "lynx_edge.events",
    "ExitTaken": "lynx_edge.events",
    "GenerationResult": "lynx_edge.events",
    "Reply": "lynx_edge.events",
    "Savings": "lynx_edge.events",
    "ThinkingDelta": "lynx_edge.events",
    "result_of": "lynx_edge.events",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lynx_edge' has no attribute {name!r}")
