"""The only module that talks to onnxruntime: features in, probability out.

The CPU execution provider with one thread (the probe runs between llama.cpp decodes and must
not compete with its threads), or CoreML on macOS (``--probe-device``). ``auto`` keeps the
CPU for probes of the size LYNX trains (a linear or small MLP head: microseconds per call on a
CPU, less than one CoreML dispatch costs) and moves only large probe files to CoreML where
onnxruntime offers it. The CoreML path is untested on hardware (no Mac in this project's CI).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import onnxruntime as ort

from lynx_edge.errors import ProbeError

ProbeDevice = Literal["auto", "cpu", "coreml"]
PROBE_DEVICES: tuple[ProbeDevice, ...] = get_args(ProbeDevice)
CPU, COREML = "CPUExecutionProvider", "CoreMLExecutionProvider"
COREML_FROM_BYTES = 16 * 2**20  # auto: a probe file this large (≈ 4M weights) goes to CoreML


def choose_provider(device: ProbeDevice, available: Sequence[str], probe_bytes: int) -> str:
    """The onnxruntime execution provider a probe of ``probe_bytes`` runs on for ``device``,
    given the providers this onnxruntime build offers (pure: testable with any list)."""
    if device not in PROBE_DEVICES:
        raise ProbeError(f"probe device must be auto, cpu or coreml, got {device!r}")
    if device == "coreml" and COREML not in available:
        raise ProbeError(
            "CoreML is not available in this onnxruntime build (macOS only): pass --probe-device cpu or auto"
        )
    if device == "coreml" or (device == "auto" and COREML in available and probe_bytes >= COREML_FROM_BYTES):
        return COREML
    return CPU


def provider_for(device: ProbeDevice, path: Path) -> str:
    """``choose_provider`` on this machine for the probe file at ``path``."""
    return choose_provider(device, ort.get_available_providers(), path.stat().st_size if path.is_file() else 0)


class OnnxProbe:
    """A loaded probe: ``score(features)`` → probability that exiting now is right."""

    def __init__(self, path: Path, feature_dim: int, *, device: ProbeDevice = "auto") -> None:
        if not path.is_file():
            raise ProbeError(f"probe model not found: {path} (the card names it; re-export the probe)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers: list = [CPU]
        if provider_for(device, path) == COREML:
            providers.insert(0, (COREML, {"RequireStaticInputShapes": "0"}))
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            raise ProbeError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        inp = self._session.get_inputs()[0]
        width = inp.shape[-1] if inp.shape else None
        if isinstance(width, int) and width != feature_dim:
            raise ProbeError(
                f"probe {path.name} takes {width} features but its card promises {feature_dim}: "
                "the card and the ONNX file do not belong together"
            )
        self._input = inp.name
        self.providers = self._session.get_providers()
        self.score_batch(np.zeros((1, feature_dim), np.float32))  # first run is slow: warm up

    def score_batch(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for a [batch, D] float32 array."""
        out = self._session.run(None, {self._input: np.asarray(features, np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(features), -1)[:, -1]

    def score(self, features: np.ndarray) -> float:
        return float(self.score_batch(features.reshape(1, -1))[0])
