"""The probe toolkit end to end on the tiny scripted model: collect → train → calibrate →
the runtime loads the card and decides with the same features the toolkit recorded.

The scripted model always thinks the same two cues (" Wait", " Hmm") and always answers 4,
so a problem whose gold is 4 labels its cues 1 and one whose gold is 5 labels them 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lynx_edge import Engine
from lynx_edge.events import CueScored
from lynx_edge.onnx_probe import OnnxProbe
from lynx_edge.probe_card import ProbeCard
from lynx_edge.tasks import trace_seed
from tools.__main__ import main
from tools.collection import Collection

N_PROBLEMS = 40


def corpus(path: Path, n: int = N_PROBLEMS) -> Path:
    lines = [json.dumps({"input": f"Tom has {i} apples and finds {i % 7} more. How many?", "target": 4 + i % 2})
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tools(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def made_probe(tiny_r1: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toolkit")
    data = corpus(root / "corpus.jsonl")
    coll, probe = root / "collection", root / "probe"
    common = ("--model", tiny_r1, "-d", data, "-o", coll, "--max-tokens", 64, "--batch", 7, "--baseline", 3)
    code, out = tools("collect", *common, "--limit", 15)
    assert code == 0, out
    code, out = tools("collect", *common)  # resumes: only the other 25 are generated
    assert code == 0, out
    assert "15 already collected, 25 to go" in out
    assert "throughput" in out
    code, out = tools("train", coll, "-o", probe, "--max-iter", 30)
    assert code == 0, out
    assert "ONNX check" in out
    code, out = tools("calibrate", coll, "-p", probe, "--resplits", 10)
    assert code == 0, out
    return {"data": data, "collection": coll, "probe": probe, "calibrate_output": out}


def test_collection_labels_cues_by_forced_exits(made_probe: dict[str, Path], tiny_r1_info) -> None:
    store = Collection(made_probe["collection"])
    traces = store.traces()
    assert len(traces) == N_PROBLEMS and len({t["id"] for t in traces}) == N_PROBLEMS
    for t in traces:
        assert [c["cue"] for c in t["cues"]] == ["wait", "hmm"]
        assert all(c["answer"] == "4" for c in t["cues"])
        assert all(c["correct"] == (t["gold"] == "4") for c in t["cues"])
        assert t["correct"] == (t["gold"] == "4")
    assert sum("plain_seconds" in t for t in traces) == 3
    assert all(t["plain_same_trace"] for t in traces if "plain_seconds" in t)
    total = 0
    for split in ("train", "cal", "test"):
        events = store.load_split(split)
        ids = {t["id"] for t in traces if t["split"] == split}
        assert set(events.trace_ids) == ids  # a problem's events stay in its split
        assert events.features.shape == (len(events), tiny_r1_info.n_embd)
        assert events.features.dtype == np.float32
        total += len(events)
    assert total == 2 * N_PROBLEMS


def test_card_is_complete_and_loads_in_the_runtime(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    card = ProbeCard.load(made_probe["probe"])
    assert [e["delta"] for e in card.calibration["per_cue"]] == [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3]
    assert [e["alpha"] for e in card.calibration["per_answer"]] == [0.05, 0.1, 0.2]
    m = card.metrics
    assert m["traces_without_cues"] == 0 and sum(m["traces"].values()) == N_PROBLEMS
    assert {r["mode"] for r in m["test"]["rules"]} == {"per-cue", "per-answer"}
    assert m["resplit_evaluation"]["resplits"] == 10
    # 40 problems leave too few calibration traces to certify α = 0.05 at confidence 0.9
    assert card.calibration["per_answer"][0]["threshold"] is None
    assert "never exits at this α" in made_probe["calibrate_output"]
    engine = Engine(tiny_r1, probe=made_probe["probe"], alpha=0.3, mode="per-cue", n_ctx=512)
    assert engine.cues == ("wait", "hmm", "alternatively")
    engine.close()


def test_runtime_scores_the_features_the_toolkit_recorded(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    """Same problem, same seed: the runtime's cue scores equal the probe on collected features."""
    store = Collection(made_probe["collection"])
    trace = store.traces()[0]
    events = store.load_split(trace["split"])
    rows = events.trace_ids == trace["id"]
    card = ProbeCard.load(made_probe["probe"])
    offline = OnnxProbe(card.onnx_path, card.feature_dim).score_batch(events.features[rows])
    from lynx_edge.tasks import load_problems

    problem = next(p for p in load_problems(made_probe["data"]).problems if p.id == trace["id"])
    engine = Engine(tiny_r1, probe=made_probe["probe"], alpha=0.3, mode="per-cue", n_ctx=512)
    run = list(engine.generate(problem.prompt, max_tokens=64, temperature=0.6, top_p=0.95, seed=trace_seed(0, problem.id)))
    cues = [e for e in run if isinstance(e, CueScored)]
    rule = engine.rule_for()
    engine.close()
    assert cues[0].score == pytest.approx(offline[0], abs=1e-6)
    assert cues[0].decision == ("exit" if rule.exits(offline[0]) else "continue")


def test_resume_with_other_settings_is_refused(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    code, out = tools("collect", "--model", tiny_r1, "-d", made_probe["data"], "-o", made_probe["collection"],
                      "--max-tokens", 32)
    assert code == 1
    assert "collected with other settings" in out and "another --out" in out


def test_calibrate_refuses_a_probe_trained_for_another_model(made_probe: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "probe.onnx").write_bytes((made_probe["probe"] / "probe.onnx").read_bytes())
    training = json.loads((made_probe["probe"] / "training.json").read_text())
    training["fingerprint"] = {**training["fingerprint"], "name": "Another Model", "n_embd": 4096}
    (other / "training.json").write_text(json.dumps(training))
    code, out = tools("calibrate", made_probe["collection"], "-p", other, "--resplits", 0)
    assert code == 1 and "trained for Another Model" in out


def test_bad_corpus_lines_are_reported_not_fatal(tiny_r1: Path, tmp_path: Path) -> None:
    data = corpus(tmp_path / "c.jsonl", 3)
    data.write_text(data.read_text() + '{"question": "no answer field"}\n')
    code, out = tools("collect", "--model", tiny_r1, "-d", data, "-o", tmp_path / "c", "--max-tokens", 64, "--baseline", 0)
    assert code == 0
    assert "skipped 1 line(s) (line 4:" in out


def test_train_needs_both_kinds_of_exit(tiny_r1: Path, tmp_path: Path) -> None:
    data = tmp_path / "all-wrong.jsonl"
    data.write_text("".join(json.dumps({"input": f"q{i}", "target": 9}) + "\n" for i in range(4)))
    tools("collect", "--model", tiny_r1, "-d", data, "-o", tmp_path / "c", "--max-tokens", 64, "--baseline", 0,
          "--train-frac", 0.9, "--cal-frac", 0.05)
    code, out = tools("train", tmp_path / "c", "-o", tmp_path / "p")
    assert code == 1 and "no right forced exits" in out
