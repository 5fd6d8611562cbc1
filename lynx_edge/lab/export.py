"""Write an MLP probe (optionally with a standard scaler in front) as an ONNX file.

Used by ``lynx-edge probe train`` and by tests that need probes with known weights. The
scaler is folded into the first layer, so the ONNX graph is Gemm/Relu layers and a Sigmoid:
input ``features`` float32 [batch, D], output ``probability`` float32 [batch, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def fold_scaler(
    weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First layer acting on raw features: W·((x−μ)/σ)+b = (W/σ)·x + (b − (μ/σ)·W)."""
    w = weight / scale[:, None]
    return w, bias - (mean / scale) @ weight


def write_mlp_onnx(
    path: Path,
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> None:
    """``layers`` are (W [in, out], b [out]) pairs; ReLU between them, sigmoid at the end."""
    layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in layers]
    if mean is not None and scale is not None:
        layers[0] = fold_scaler(*layers[0], np.asarray(mean, np.float64), np.asarray(scale, np.float64))
    nodes, inits = [], []
    current = "features"
    for i, (w, b) in enumerate(layers):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32).reshape(-1), f"b{i}"))
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [f"z{i}"]))
        current = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{i}"]))
            current = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", [current], ["probability"]))
    dim = layers[0][0].shape[0]
    graph = helper.make_graph(
        nodes,
        "lynx_probe",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
