"""Test helpers: the tiny model's script, probes with known weights, small utilities."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lynx_edge.lab.export import write_mlp_onnx
from lynx_edge.runtime.llama_backend import LlamaBackend
from lynx_edge.runtime.model_info import ModelInfo
from lynx_edge.runtime.probe_card import ProbeCard, model_fingerprint

# The tiny model's thinking: two word cues (" Wait", " Hmm"), then the real </think> token.
R1_SCRIPT = [
    "\n",
    "Okay",
    ",",
    " so",
    " I",
    " need",
    " the",
    " sum",
    ".",
    " Wait",
    " let",
    " me",
    " check",
    " again",
    ":",
    " it",
    " is",
    " four",
    " Hmm",
    " yes",
    " right",
    ".\n",
    "</think>",
    "\n\n",
    "The",
    " answer",
    " equals",
    " \\",
    "boxed",
    "{",
    "4",
    "}",
    " done",
    "<｜end▁of▁sentence｜>",
]
R1_THINKING = "Okay, so I need the sum. Wait let me check again: it is four Hmm yes right.\n"
# A tiny model that does not think (the Qwen2.5 instruct vocabulary): its greedy reply, scripted
PLAIN_SCRIPT = ["\n", "The", " answer", " is", " ", "4", "2", ".", "<|im_end|>"]
PLAIN_ANSWER = "The answer is 42."
PLAIN_QUESTION = "What is 6 times 7?"

WAIT_INDEX, HMM_INDEX = R1_SCRIPT.index(" Wait") - 1, R1_SCRIPT.index(" Hmm") - 1
ALWAYS, NEVER = 20.0, -20.0  # probe biases: p ≈ 1 and p ≈ 0

CONSTANT_CALIBRATION = {
    "per_cue": [
        {"delta": 0.05, "q_pos": 0.5, "q_neg": 0.5, "n_pos": 100, "n_neg": 100},
        {"delta": 0.1, "q_pos": 0.6, "q_neg": 0.4, "n_pos": 100, "n_neg": 100},
    ],
    "per_answer": [{"alpha": 0.1, "threshold": 0.5, "confidence": 0.9, "n_traces": 50}],
}


def model_info(path: Path) -> ModelInfo:
    """What a probe card is checked against, read once from a real load."""
    backend = LlamaBackend(path, n_ctx=256)
    info = backend.info
    backend.close()
    return info


def make_probe(
    directory: Path,
    info: ModelInfo,
    *,
    weight: np.ndarray | None = None,
    bias: float = 0.0,
    layers: Sequence[int] = (),
    cues: Sequence[str] = ("wait", "hmm", "alternatively"),
    exit_text: str = "</think> Final Answer: \\boxed{",
    calibration: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """A linear probe p = sigmoid(w·x + b) as ONNX plus a card for ``info``.

    With ``weight`` None the probe ignores the features: p = sigmoid(bias), so a large
    positive bias always passes and a large negative one never does.
    """
    directory.mkdir(parents=True, exist_ok=True)
    dim = info.n_embd * (len(layers) + 1)
    w = np.zeros((dim, 1)) if weight is None else np.asarray(weight, np.float64).reshape(dim, 1)
    write_mlp_onnx(directory / "probe.onnx", [(w, np.array([bias]))])
    card = ProbeCard(
        model=model_fingerprint(info),
        layers=list(layers),
        final_norm=True,
        cues=list(cues),
        exit_text=exit_text,
        calibration=json.loads(json.dumps(calibration or CONSTANT_CALIBRATION)),
        metrics=metrics or {},
    )
    card.save(directory / "card.json")
    return directory


def hmm_not_wait_weights(tiny_r1: Path, question: str = "What is 2+2?") -> tuple[np.ndarray, float]:
    """Weights and bias of a linear probe on layer 1 + final norm of the tiny model that
    scores ≈1 at its " Hmm" cue and ≈0 at its " Wait" cue (greedy run on ``question``)."""
    from lynx_edge.events import result_of
    from lynx_edge.runtime.engine import Engine

    engine = Engine(tiny_r1, probe=None, n_ctx=512)
    prompt = engine.backend.prompt_tokens(engine.render_prompt(question))
    result_of(engine.generate(question, temperature=0, seed=0, exit="none"))
    generated = engine.backend.tokens[len(prompt) :]
    engine.close()
    backend = LlamaBackend(tiny_r1, n_ctx=512, capture_layers=[1])
    backend.decode(prompt)
    feats = {}
    for i, tok in enumerate(generated[: HMM_INDEX + 1]):
        f = backend.decode([tok], capture=i in (WAIT_INDEX, HMM_INDEX))
        if f is not None:
            feats[i] = f.astype(np.float64)
    backend.close()
    direction = feats[HMM_INDEX] - feats[WAIT_INDEX]
    midpoint = (feats[HMM_INDEX] + feats[WAIT_INDEX]) / 2
    w = 50 * direction / np.linalg.norm(direction) ** 2
    return w, float(-w @ midpoint)
