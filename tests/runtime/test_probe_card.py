"""Probe cards are validated against the model; a wrong probe is refused in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import make_probe

from lynx_edge.errors import ProbeError
from lynx_edge.lab.export import write_mlp_onnx
from lynx_edge.runtime.model_info import ModelInfo, weights_fingerprint
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.probe_card import ProbeCard

INFO = ModelInfo("m.gguf", "Test", "llama", 8, 4, 100, 512, "abcd", "w1")


def test_roundtrip_and_score(tmp_path: Path) -> None:
    """A saved card loads back and its ONNX probe scores sigmoid(w·x + b)."""
    w = np.arange(16, dtype=np.float64) / 100
    make_probe(tmp_path, INFO, weight=w, bias=0.5, layers=[2])
    card = ProbeCard.load(tmp_path)
    card.check_model(INFO)
    probe = OnnxProbe(card.onnx_path, card.feature_dim)
    x = np.linspace(-1, 1, 16).astype(np.float32)
    assert probe.score(x) == pytest.approx(1 / (1 + np.exp(-(w @ x + 0.5))), abs=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("architecture", "qwen2"),
        ("n_embd", 16),
        ("n_layer", 8),
        ("n_vocab", 99),
        ("tokenizer_fingerprint", "ffff"),
        ("weights_fingerprint", "w2"),
    ],
)
def test_card_for_another_model_is_refused(tmp_path: Path, field: str, value: object) -> None:
    """Any difference in architecture, sizes, tokenizer or weights (a fine-tune of the same
    base) names the field and the fix."""
    make_probe(tmp_path, INFO)
    other = dataclasses.replace(INFO, **{field: value}, name="Other")
    with pytest.raises(ProbeError, match=rf"made for Test \({field}.*not Other.*--probe"):
        ProbeCard.load(tmp_path).check_model(other)


def test_missing_and_corrupt_cards(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="no probe card"):
        ProbeCard.load(tmp_path / "nowhere")
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ProbeError, match="not valid JSON"):
        ProbeCard.load(tmp_path)
    (tmp_path / "card.json").write_text('{"format": "other"}')
    with pytest.raises(ProbeError, match="is not a lynx-edge-probe/1 probe card"):
        ProbeCard.load(tmp_path)


def test_onnx_width_must_match_card(tmp_path: Path) -> None:
    """An ONNX file that takes another feature width than the card promises is refused."""
    make_probe(tmp_path, INFO)
    write_mlp_onnx(tmp_path / "probe.onnx", [(np.zeros((5, 1)), np.zeros(1))])
    card = ProbeCard.load(tmp_path)
    with pytest.raises(ProbeError, match="takes 5 features but its card promises 8"):
        OnnxProbe(card.onnx_path, card.feature_dim)


def test_corrupt_onnx_is_refused(tmp_path: Path) -> None:
    make_probe(tmp_path, INFO)
    (tmp_path / "probe.onnx").write_bytes(b"garbage")
    with pytest.raises(ProbeError, match="not a loadable ONNX model"):
        OnnxProbe(tmp_path / "probe.onnx", 8)


def test_scaler_folding_matches_explicit_standardisation(tmp_path: Path) -> None:
    """Folding (x−μ)/σ into the first layer gives the same probability as applying it."""
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=(4, 1)), rng.normal(size=1)
    mean, scale = rng.normal(size=6), rng.random(6) + 0.5
    write_mlp_onnx(tmp_path / "p.onnx", [(w1, b1), (w2, b2)], mean=mean, scale=scale)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    z = np.maximum(((x - mean) / scale) @ w1 + b1, 0) @ w2 + b2
    got = OnnxProbe(tmp_path / "p.onnx", 6).score_batch(x)
    assert np.max(np.abs(got - 1 / (1 + np.exp(-z[:, 0])))) < 1e-5


def test_weights_fingerprint_tells_a_fine_tune_from_its_base(smol: Path, reasoner: Path) -> None:
    """Same architecture and tokenizer, other weights: other fingerprints (the base's probe
    is refused for the reasoner)."""
    assert weights_fingerprint(smol) != weights_fingerprint(reasoner)
    assert weights_fingerprint(smol) == weights_fingerprint(smol)


def test_trial_card_needs_no_onnx_and_a_probe_card_needs_one(tmp_path: Path) -> None:
    """A card that calibrates the trial confidence has no ONNX file; mixing the two is refused."""
    make_probe(tmp_path, INFO)
    card = ProbeCard.load(tmp_path)
    card.score, card.onnx = "trial", None
    card.save(tmp_path / "card.json")
    assert ProbeCard.load(tmp_path).onnx_path is None
    card.onnx = "probe.onnx"
    card.save(tmp_path / "card.json")
    with pytest.raises(ProbeError, match="score 'trial' with onnx 'probe.onnx'"):
        ProbeCard.load(tmp_path)


def test_weak_probe_is_flagged(tmp_path: Path) -> None:
    """A card whose test AUC is under 0.65 carries the warning run and chat print."""
    make_probe(tmp_path, INFO, metrics={"test": {"auc": 0.47}})
    assert "barely better than chance (test AUC 0.47)" in ProbeCard.load(tmp_path).warning
    make_probe(tmp_path, INFO, metrics={"test": {"auc": 0.83}})
    assert ProbeCard.load(tmp_path).warning is None
