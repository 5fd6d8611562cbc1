"""Probe cards: the JSON that says which model, features, cues and thresholds a probe has.

The card is the one artifact both ``lynx-edge probe`` (which writes it) and the runtime (which reads
and checks it) use. A card made for another model is refused with a one-line reason.

``score`` says what the calibrated thresholds apply to: ``probe`` (the ONNX probe's output on
the cue's hidden state) or ``trial`` (the confidence of a training-free trial answer, DEER's
score: a model with labelled traces but no trained probe still gets a stated risk level).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lynx_edge.errors import ProbeError
from lynx_edge.runtime.conditions import Conditions, RequestConditions, departures
from lynx_edge.runtime.model_info import ModelInfo
from lynx_edge.runtime.rules import promises_of

CARD_FORMAT = "lynx-edge-probe/1"
CARD_NAME = "card.json"
SCORES = ("probe", "trial")
WEAK_PROBE_AUC = 0.65  # below this test AUC a probe's exits say little
_IDENTITY = ("architecture", "n_embd", "n_layer", "n_vocab", "tokenizer_fingerprint")


@dataclass
class ProbeCard:
    """A probe's identity and calibration (see ``probes/README.md`` for each field)."""

    model: dict[str, Any]  # name, architecture, n_embd, n_layer, n_vocab, tokenizer and weights fingerprints
    layers: list[int]  # 1-based block outputs captured before the final norm state
    final_norm: bool
    cues: list[str]
    exit_text: str
    think_open: str = "<think>"
    think_close: str = "</think>"
    onnx: str | None = "probe.onnx"  # None for a trial-score card; the probe of a card without ``probes``
    # the probe that scores each promise kind (agreement, harm): each is trained on its own label
    probes: dict[str, str] = field(default_factory=dict)
    score: str = "probe"
    default_alpha: float | None = None  # the level run/chat/serve use when none is asked for
    calibration: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scaffold: list[dict[str, str]] = field(default_factory=list)
    conditions: dict[str, Any] | None = None  # how the calibration traces were made (conditions.Conditions)
    metrics: dict[str, Any] = field(default_factory=dict)
    # more calibrations of the same probe, each made in other conditions (e.g. sampled at
    # T 0.6–0.8 for the chat): {"conditions": ..., "calibration": ..., "metrics": ...}
    condition_sets: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None  # where the card was read from (not stored)

    @property
    def feature_dim(self) -> int:
        return int(self.model["n_embd"]) * (len(self.layers) + int(self.final_norm))

    @property
    def onnx_path(self) -> Path | None:
        if self.onnx is None:
            return None
        base = self.path.parent if self.path else Path(".")
        return base / self.onnx

    def onnx_path_for(self, promise: str) -> Path | None:
        """The ONNX file that scores ``promise`` (a card with one probe serves every kind with it)."""
        name = self.probes.get(promise, self.onnx) if self.onnx is not None else None
        if name is None:
            return None
        base = self.path.parent if self.path else Path(".")
        return base / name

    @property
    def promises(self) -> list[str]:
        """The promise kinds the card calibrates, its default first."""
        return promises_of(self.calibration)

    @property
    def test_auc(self) -> float | None:
        """AUC of the default promise's score on the test split's cue events, as calibrate
        measured it (a card made before promise kinds holds one number)."""
        auc = (self.metrics.get("test") or {}).get("auc")
        return auc.get(self.promises[0]) if isinstance(auc, dict) else auc

    @property
    def warning(self) -> str | None:
        """One line for users when the score carries too little signal to trust its exits."""
        auc = self.test_auc
        if auc is None or auc >= WEAK_PROBE_AUC:
            return None
        return f"warning: this probe is barely better than chance (test AUC {auc:.2f}): exits are not informative"

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
            raise ProbeError(f"no probe card at {path}: name a probe directory that holds {CARD_NAME}")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProbeError(
                f"probe card {path} is not valid JSON ({exc}): remake it with `lynx-edge probe calibrate`"
            ) from None
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise ProbeError(f"{path} is not a {CARD_FORMAT} probe card: remake it with `lynx-edge probe calibrate`")
        data.pop("format")
        try:
            card = cls(**data, path=path)
        except TypeError as exc:
            raise ProbeError(f"probe card {path} has missing or unknown fields ({exc})") from None
        for key in ("name", *_IDENTITY):
            if key not in card.model:
                raise ProbeError(f"probe card {path} lacks model.{key}: remake it with `lynx-edge probe calibrate`")
        if not card.cues:
            raise ProbeError(f"probe card {path} lists no cues")
        if card.score not in SCORES or (card.score == "probe") != (card.onnx is not None):
            raise ProbeError(
                f"probe card {path} has score {card.score!r} with onnx {card.onnx!r}: "
                "remake it with `lynx-edge probe calibrate`"
            )
        return card

    @property
    def all_condition_sets(self) -> list[dict[str, Any]]:
        """Every condition set the card holds, its main one first, each as
        ``{"conditions", "calibration", "metrics"}``."""
        main = {"conditions": self.conditions, "calibration": self.calibration, "metrics": self.metrics}
        return [main, *self.condition_sets]

    @property
    def calibrations(self) -> list[dict[str, list[dict[str, Any]]]]:
        """Every calibration the card holds, its main condition set's first."""
        return [s["calibration"] for s in self.all_condition_sets]

    def calibration_for(self, request: RequestConditions) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
        """The calibration made in the conditions ``request`` runs in, with no departures;
        when none matches, the first one and how ``request`` leaves its conditions (its
        thresholds are then an estimate). A card that does not record its conditions is an
        estimate for every request."""
        if self.conditions is None:
            return self.calibration, ["the card does not record the conditions it was calibrated in"]
        first = departures(Conditions.from_json(self.conditions), request)
        if not first:
            return self.calibration, []
        for extra in self.condition_sets:
            if not departures(Conditions.from_json(extra["conditions"]), request):
                return extra["calibration"], []
        return self.calibration, first

    def check_model(self, info: ModelInfo) -> None:
        """Refuse a card made for another model (architecture, sizes, tokenizer, layers)."""
        keys = [*_IDENTITY, *(["weights_fingerprint"] if "weights_fingerprint" in self.model else [])]
        for key in keys:
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
        "weights_fingerprint": info.weights_fingerprint,
    }
