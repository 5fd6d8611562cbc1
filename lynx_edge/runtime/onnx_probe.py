"""The only module that talks to onnxruntime: features in, probability out.

CPU execution provider with one thread (the probe runs between llama.cpp decodes and must
not compete with its threads); CoreML on macOS when asked for and available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from lynx_edge.errors import ProbeError


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


class OnnxProbe:
    """A loaded probe: ``score(features)`` → probability that exiting now is right."""

    def __init__(self, path: Path, feature_dim: int, *, coreml: bool = False) -> None:
        if not path.is_file():
            raise ProbeError(f"probe model not found: {path} (the card names it; re-export the probe)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers: list = ["CPUExecutionProvider"]
        if coreml and "CoreMLExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CoreMLExecutionProvider", {"RequireStaticInputShapes": "0"}))
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
