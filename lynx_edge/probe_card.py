"""Probe cards: the JSON that says which model, features, cues and thresholds a probe has.

The card is the one artifact both ``tools/`` (which writes it) and the runtime (which reads
and checks it) use. A card made for another model is refused with a one-line reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lynx_edge.errors import ProbeError
from lynx_edge.llama_backend import ModelInfo

CARD_FORMAT = "lynx-edge-probe/1"
CARD_NAME = "card.json"


@dataclass
class ProbeCard:
    """A probe's identity and calibration (see ``probes/README.md`` for each field)."""

    model: dict[str, Any]  # name, architecture, n_embd, n_layer, n_vocab, tokenizer_fingerprint
    layers: list[int]  # 1-based block outputs captured before the final norm state
    final_norm: bool
    cues: list[str]
    exit_text: str
    think_open: str = "<think>"
    think_close: str = "</think>"
    onnx: str = "probe.onnx"
    calibration: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scaffold: list[dict[str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where the card was read from (not stored)

    @property
    def feature_dim(self) -> int:
        return int(self.model["n_embd"]) * (len(self.layers) + int(self.final_norm))

    @property
    def onnx_path(self) -> Path:
        base = self.path.parent if self.path else Path(".")
        return base / self.onnx

    @property
    def label(self) -> str:
        """Short name for headers and JSON: the probe's directory name."""
        return self.path.parent.name if self.path else "probe"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return {"format": CARD_FORMAT, **data}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> ProbeCard:
        """Read a card from a probe directory or a card file, with one-line errors."""
        path = Path(path)
        if path.is_dir():
            path = path / CARD_NAME
        if not path.is_file():
            raise ProbeError(f"no probe card at {path}: pass --probe DIR holding {CARD_NAME}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProbeError(f"probe card {path} is not valid JSON ({exc}): re-export it with tools/") from None
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise ProbeError(f"{path} is not a {CARD_FORMAT} probe card: re-export it with tools/")
        data.pop("format")
        try:
            card = cls(**data, path=path)
        except TypeError as exc:
            raise ProbeError(f"probe card {path} has missing or unknown fields ({exc})") from None
        for key in ("name", "architecture", "n_embd", "n_layer", "n_vocab", "tokenizer_fingerprint"):
            if key not in card.model:
                raise ProbeError(f"probe card {path} lacks model.{key}: re-export it with tools/")
        if not card.cues:
            raise ProbeError(f"probe card {path} lists no cues")
        return card

    def check_model(self, info: ModelInfo) -> None:
        """Refuse a card made for another model (architecture, sizes, tokenizer, layers)."""
        for key in ("architecture", "n_embd", "n_layer", "n_vocab", "tokenizer_fingerprint"):
            want, have = self.model[key], getattr(info, key)
            if want != have:
                raise ProbeError(
                    f"probe {self.label} was made for {self.model['name']} ({key} {want}), "
                    f"not {info.name} ({key} {have}): pass the probe made for this model with "
                    "--probe, or --no-probe"
                )
        bad = [layer for layer in self.layers if not 1 <= layer < info.n_layer]
        if bad:
            raise ProbeError(f"probe {self.label} reads layers {bad} that {info.name} does not have")


def model_fingerprint(info: ModelInfo) -> dict[str, Any]:
    """The ``model`` section of a card for ``info``."""
    return {
        "name": info.name,
        "architecture": info.architecture,
        "n_embd": info.n_embd,
        "n_layer": info.n_layer,
        "n_vocab": info.n_vocab,
        "tokenizer_fingerprint": info.tokenizer_fingerprint,
    }
