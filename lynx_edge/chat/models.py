"""The models a chat has loaded, so that switching back and forth costs no reload.

Loading a GGUF takes seconds (a merge of the shipped adapter, the first time, ten); a chat
that switches between two models keeps both in memory and switches in well under a second.
More than ``MAX_LOADED`` would hold a laptop's memory for models nobody is talking to, so
the one used longest ago is closed. Everything here runs on the model thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from lynx_edge.errors import LynxError
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.model_files import local_file
from lynx_edge.runtime.presets import PRESETS

MAX_LOADED = 2


def model_key(spec: str) -> str:
    """One name per model file: a preset whose file is here and that file's path are the same
    model (the chat started with ``--model PATH``, the picker offers the preset)."""
    preset = PRESETS.get(spec)
    local = local_file(preset) if preset else None
    if local is not None:
        return str(local.resolve())
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_file() else spec


class LoadedModels:
    """Engines by model, the newest used last."""

    def __init__(self, load: Callable[[str], Engine]) -> None:
        """``load``: makes the engine for a ``--model`` value (a preset name or a path)."""
        self.load = load
        self.engines: OrderedDict[str, Engine] = OrderedDict()

    def get(self, spec: str) -> tuple[Engine, bool]:
        """The engine for ``spec`` and whether it was already loaded; loads it otherwise and
        closes the one used longest ago past ``MAX_LOADED``."""
        key = model_key(spec)
        if key in self.engines:
            self.engines.move_to_end(key)
            return self.engines[key], True
        engine = self.load(spec)
        self.engines[key] = engine
        while len(self.engines) > MAX_LOADED:
            _, old = self.engines.popitem(last=False)
            old.close()
        return engine, False

    def load_then(self, spec: str, ready: Callable[[Engine, bool], None], failed: Callable[[str], None]) -> None:
        """``get`` for a front end that shows the outcome: ``ready`` gets the engine and
        whether it was already loaded, ``failed`` a one-line reason (never an exception)."""
        try:
            engine, cached = self.get(spec)
        except Exception as exc:  # noqa: BLE001 - shown in the front end, which stays usable
            failed(str(exc) if isinstance(exc, LynxError) else f"loading the model failed: {exc!r}")
            return
        ready(engine, cached)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
