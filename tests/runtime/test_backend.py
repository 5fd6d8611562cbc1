"""Feature capture in the llama.cpp adapter: the C and Python eval callbacks agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lynx_edge.runtime.llama_backend as backend_module
from lynx_edge.runtime.llama_backend import LlamaBackend


def capture(path: Path) -> tuple[np.ndarray, bool]:
    b = LlamaBackend(path, n_ctx=256, capture_layers=[10, 20])
    tokens = b.tokenize("Wait, let me check that again.")
    b.decode(tokens[:-1])
    return b.decode(tokens[-1:], capture=True), b.native_callback


def test_python_fallback_captures_the_same_features(smol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a C compiler the Python callback reads bit-identical layer outputs."""
    native, used_native = capture(smol)
    monkeypatch.setattr(backend_module, "_compiled_callback", lambda: None)
    fallback, used_fallback = capture(smol)
    assert used_native and not used_fallback
    assert native.shape == (3 * 576,)
    np.testing.assert_array_equal(native, fallback)


def test_capture_leaves_generation_unchanged(smol: Path) -> None:
    """A capture decode returns the same logits as a plain one, and the next decode too."""
    plain = LlamaBackend(smol, n_ctx=256)
    armed = LlamaBackend(smol, n_ctx=256, capture_layers=[5])
    tokens = plain.tokenize("Hmm, so the answer is four. Let me")
    for b, cap in ((plain, False), (armed, True)):
        b.decode(tokens[:-2])
        b.decode(tokens[-2:-1], capture=cap)
    np.testing.assert_array_equal(plain.logits(), armed.logits())
    plain.decode(tokens[-1:])
    armed.decode(tokens[-1:])
    np.testing.assert_array_equal(plain.logits(), armed.logits())


def test_layer_outside_the_model_is_refused(smol: Path) -> None:
    with pytest.raises(Exception, match="feature layer 30 does not exist"):
        LlamaBackend(smol, n_ctx=256, capture_layers=[30])
