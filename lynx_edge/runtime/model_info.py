"""What a probe card is checked against, and what the UI shows about a loaded model.

Kept apart from ``llama_backend`` so that reading a probe card never loads libllama.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

_SAMPLES = 16  # evenly spaced slices of the file hashed for the weights fingerprint
_SAMPLE_BYTES = 1 << 16


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model's identity: shape, tokenizer, and which weights exactly."""

    path: str
    name: str
    architecture: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_ctx_train: int
    tokenizer_fingerprint: str
    weights_fingerprint: str


@dataclass(frozen=True)
class ModelDescription:
    """A loaded model as front ends describe it (the Ollama door's tags and ``show``, the
    server's model id, the chat's meter), so none of them reaches into the backend."""

    info: ModelInfo
    n_ctx: int  # the context this engine runs with
    parameter_size: str  # as model hubs write it ("135M", "7.6B")
    quantization: str  # as llama.cpp names it ("Q8_0")
    chat_template: str
    preset: str  # the preset's name ("generic": a GGUF with no preset)
    temperature: float
    thinks: bool  # whether it thinks before answering (``presets.model_thinks``)

    @property
    def served_name(self) -> str:
        """The name clients pass as ``model``: the preset's, or the GGUF file's stem."""
        return self.preset if self.preset != "generic" else Path(self.info.path).stem


def weights_fingerprint(path: str | Path) -> str:
    """A short hash of the file's size and 16 slices spread over it.

    Architecture, sizes and tokenizer cannot tell a fine-tune (or another quantization) from
    its base model, but the bytes of its tensors can; hashing slices instead of the whole file
    keeps this to a few milliseconds for a multi-gigabyte GGUF.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        for i in range(_SAMPLES):
            fh.seek(max(0, (size - _SAMPLE_BYTES) * i // (_SAMPLES - 1)))
            digest.update(fh.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]
