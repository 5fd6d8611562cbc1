"""Where the probe runs: the choice from onnxruntime's provider list and the probe's size."""

from __future__ import annotations

import pytest

from lynx_edge.errors import ProbeError
from lynx_edge.runtime.onnx_probe import COREML, COREML_FROM_BYTES, CPU, choose_provider

MAC = [COREML, CPU]
LINUX = [CPU]


def test_auto_keeps_probes_of_lynx_size_on_the_cpu_even_where_coreml_exists() -> None:
    assert choose_provider("auto", MAC, 40_000) == CPU  # a linear head on 2304 features
    assert choose_provider("auto", LINUX, 10 * COREML_FROM_BYTES) == CPU


def test_auto_moves_large_probes_to_coreml_where_it_exists() -> None:
    assert choose_provider("auto", MAC, COREML_FROM_BYTES) == COREML


def test_asking_for_a_device_is_obeyed_or_refused_in_one_line() -> None:
    assert choose_provider("cpu", MAC, 10 * COREML_FROM_BYTES) == CPU
    assert choose_provider("coreml", MAC, 1) == COREML
    with pytest.raises(ProbeError, match="CoreML is not available.*--probe-device cpu"):
        choose_provider("coreml", LINUX, 1)
    with pytest.raises(ProbeError, match="auto, cpu or coreml"):
        choose_provider("gpu", MAC, 1)  # type: ignore[arg-type]
