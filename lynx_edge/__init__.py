"""lynx-edge: reasoning models that stop thinking once they know the answer (LYNX on llama.cpp).

The Python API for apps::

    from lynx_edge import Engine
    engine = Engine()                      # embedded default model and its probe
    for event in engine.generate("What is 17 * 3?"):
        ...                                # ThinkingDelta, CueScored, ExitTaken, AnswerDelta, Done
"""

from lynx_edge.engine import Engine
from lynx_edge.errors import (
    ContextOverflowError,
    LynxError,
    ModelError,
    ProbeError,
    SettingError,
)
from lynx_edge.events import (
    AnswerDelta,
    CueScored,
    Done,
    Event,
    ExitTaken,
    GenerationResult,
    Savings,
    ThinkingDelta,
    result_of,
)

__version__ = "0.1.0"

__all__ = [
    "AnswerDelta",
    "ContextOverflowError",
    "CueScored",
    "Done",
    "Engine",
    "Event",
    "ExitTaken",
    "GenerationResult",
    "LynxError",
    "ModelError",
    "ProbeError",
    "Savings",
    "SettingError",
    "ThinkingDelta",
    "__version__",
    "result_of",
]
