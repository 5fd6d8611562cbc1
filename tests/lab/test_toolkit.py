"""The probe toolkit end to end on the tiny scripted model: collect → train → calibrate →
the runtime loads the card and decides with the same features the toolkit recorded; parallel
and sharded collection give what sequential collection gives.

The scripted model always thinks the same two cues (" Wait", " Hmm") and always answers 4,
so a problem whose gold is 4 labels its cues 1 and one whose gold is 5 labels them 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lynx_edge.cli.probe import probe as main
from lynx_edge.display import stats_line
from lynx_edge.errors import ProbeError, SettingError
from lynx_edge.events import CueScored, Reply
from lynx_edge.lab.collection import Collection
from lynx_edge.lab.problems import load_problems, trace_seed
from lynx_edge.runtime.engine import Engine
from lynx_edge.runtime.onnx_probe import OnnxProbe
from lynx_edge.runtime.options import GenerationOptions
from lynx_edge.runtime.probe_card import ProbeCard
from lynx_edge.runtime.rules import select_rule

N_PROBLEMS = 40


def corpus(path: Path, n: int = N_PROBLEMS) -> Path:
    lines = [
        json.dumps({"input": f"Tom has {i} apples and finds {i % 7} more. How many?", "target": 4 + i % 2})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def tools(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def collect(model: Path, data: Path, out: Path, *more: object, max_tokens: int = 64) -> tuple[int, str]:
    """`lynx-edge probe collect` of ``data`` on ``model`` into ``out``."""
    return tools("collect", "--model", model, "-d", data, "-o", out, "--max-tokens", max_tokens, *more)


@pytest.fixture(scope="module")
def made_probe(tiny_r1: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toolkit")
    data = corpus(root / "corpus.jsonl")
    coll, probe = root / "collection", root / "probe"
    common = ("--model", tiny_r1, "-d", data, "-o", coll, "--max-tokens", 64, "--batch", 7, "--parallel", 3)
    code, out = tools("collect", *common)
    assert code == 0, out
    lines = (coll / "traces.jsonl").read_text().splitlines(keepends=True)
    (coll / "traces.jsonl").write_text("".join(lines[:15]))  # as if it had been stopped there
    code, out = tools("calibrate", coll, "-p", probe, "--score", "trial", "--draws", 0)
    assert code == 1 and "holds 15 of the 40 problems planned: finish the collection" in out
    code, out = tools("collect", *common, "--limit", 20)
    assert code == 1 and "planned for 40 problems and this command plans 20" in out
    code, out = tools("collect", *common, "--baseline", 3)  # resumes: only the other 25 are generated
    assert code == 0, out
    assert "15 already collected, 25 to go, 3 at a time" in out
    assert "throughput" in out and "collection_vs_plain" in out
    code, out = tools("train", coll, "-o", probe, "--max-iter", 30)
    assert code == 0, out
    assert "ONNX check" in out
    code, out = tools("calibrate", coll, "-p", probe, "--draws", 50)
    assert code == 0, out
    return {"root": root, "data": data, "collection": coll, "probe": probe, "calibrate_output": out}


def test_collection_labels_cues_by_forced_exits(made_probe: dict[str, Path], tiny_r1_info) -> None:
    store = Collection(made_probe["collection"])
    traces = store.traces()
    assert len(traces) == N_PROBLEMS and len({t["id"] for t in traces}) == N_PROBLEMS
    for t in traces:
        assert [c["cue"] for c in t["cues"]] == ["wait", "hmm"]
        assert all(c["answer"] == "4" for c in t["cues"])
        assert all(c["correct"] == (t["gold"] == "4") for c in t["cues"])
        assert all(0.9 < c["mean_prob"] <= 1.0 for c in t["cues"])  # the trial confidence is kept
        assert t["correct"] == (t["gold"] == "4")
    assert sum("plain_seconds" in t for t in traces) == 3
    total = 0
    for split in ("train", "cal", "test"):
        events = store.load_split(split)
        ids = {t["id"] for t in traces if t["split"] == split}
        assert set(events.trace_ids) == ids  # a problem's events stay in its split
        assert events.features.shape == (len(events), tiny_r1_info.n_embd)
        assert events.features.dtype == np.float32
        total += len(events)
    assert total == 2 * N_PROBLEMS


def test_parallel_and_sequential_collection_agree(made_probe: dict[str, Path], tiny_r1: Path, tmp_path: Path) -> None:
    """Same seed: the same traces, labels and features one problem at a time as three at once."""
    one = tmp_path / "one"
    code, out = collect(tiny_r1, made_probe["data"], one, "--parallel", 1, "--limit", 12)
    assert code == 0, out
    many = {t["id"]: t for t in Collection(made_probe["collection"]).traces()}
    for t in Collection(one).traces():
        other = many[t["id"]]
        assert (t["seed"], t["answer"], t["tokens"], t["cues"]) == (
            other["seed"],
            other["answer"],
            other["tokens"],
            other["cues"],
        )
    for split in ("train", "cal", "test"):
        a, b = Collection(one).load_split(split), Collection(made_probe["collection"]).load_split(split)
        for trace_id in set(a.trace_ids):
            np.testing.assert_allclose(
                a.features[a.trace_ids == trace_id], b.features[b.trace_ids == trace_id], atol=1e-4
            )


def test_shards_merge_into_the_whole(made_probe: dict[str, Path], tiny_r1: Path, tmp_path: Path) -> None:
    """Two shards (1/2, 2/2) hold every problem once; merged they equal an unsharded run."""
    for i in (1, 2):
        code, out = collect(tiny_r1, made_probe["data"], tmp_path / f"s{i}", "--shard", f"{i}/2", "--limit", 10)
        assert code == 0 and f"(shard {i}/2)" in out
    ids = [{t["id"] for t in Collection(tmp_path / f"s{i}").traces()} for i in (1, 2)]
    assert len(ids[0]) == len(ids[1]) == 5 and not ids[0] & ids[1]
    code, out = tools("merge", tmp_path / "s1", tmp_path / "s2", "-o", tmp_path / "all")
    assert code == 0, out
    merged = Collection(tmp_path / "all")
    assert {t["id"] for t in merged.traces()} == ids[0] | ids[1]
    assert sum(len(merged.load_split(s)) for s in ("train", "cal", "test")) == 20
    code, out = collect(tiny_r1, made_probe["data"], tmp_path / "odd", "--shard", "1/2", "--limit", 10, max_tokens=32)
    code, out = tools("merge", tmp_path / "s1", tmp_path / "odd", "-o", tmp_path / "bad")
    assert code == 1 and "collected with other settings" in out


def test_bad_shard_is_refused(made_probe: dict[str, Path], tiny_r1: Path, tmp_path: Path) -> None:
    code, out = collect(tiny_r1, made_probe["data"], tmp_path / "x", "--shard", "3/2")
    assert code == 2 and "I must lie in 1..N" in out


def test_card_is_complete_and_loads_in_the_runtime(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    card = ProbeCard.load(made_probe["probe"])
    assert card.promises == ["agreement", "harm"]  # agreement, which needs no gold, is the default
    assert card.probes == {"agreement": "agreement.onnx", "harm": "probe.onnx"}
    group = f"{made_probe['data'].parent.name}/corpus.jsonl"  # the kind of problem: its data file
    for part in card.calibration.values():
        assert [e["delta"] for e in part["per_cue"]] == [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3]
        assert {e["promise"] for e in part["per_cue"]} == {"pac"}
        assert [e["alpha"] for e in part["per_answer"]] == [0.005, 0.01, 0.02, 0.03, 0.05, 0.1]
        assert all(set(e["groups"]) <= {group} for e in part["per_answer"])
    m = card.metrics
    assert m["traces_without_cues"] == 0 and sum(m["traces"].values()) == N_PROBLEMS
    assert m["protocol"] == {
        "planned_problems": N_PROBLEMS,
        "collected_problems": N_PROBLEMS,
        "split_fractions": [0.6, 0.2],
    }
    assert {(r["promise"], r["mode"]) for r in m["test"]["rules"]} == {
        (p, mode) for p in ("agreement", "harm") for mode in ("per-cue", "per-answer")
    }
    check = m["promise_check"]
    assert check["draws"] == 50 and set(m["test"]["auc"]) == {"agreement", "harm"}
    for promise, groups in check["promises"].items():
        assert set(groups) == {group, "all"}
        for levels in groups.values():
            assert set(levels) == {f"{r['mode']} {r['level']:g}" for r in m["test"]["rules"] if r["promise"] == promise}
            for cell in levels.values():
                if cell["status"] == "checked":
                    low, high = cell["interval_95"]
                    assert low <= cell["violation_frequency"] <= high
    assert card.conditions == {
        "temperature": 0.6,
        "top_p": 0.95,
        "exit_style": "conclude",
        "exit_text": "</think>\n\n",
        "system_prompt": None,
        "user_suffix": "",
        "top_k": 100,
    }
    # 40 problems leave too few calibration traces to certify α = 0.05 at confidence 0.9: named
    entry = card.calibration["harm"]["per_answer"][4]
    assert entry["alpha"] == 0.05 and entry["threshold"] is None and entry["uncertified"] == [group]
    assert "harm α=0.05: never exits" in made_probe["calibrate_output"]
    engine = Engine(tiny_r1, probe=made_probe["probe"], n_ctx=512)
    assert engine.cues == ("wait", "hmm", "alternatively")
    engine.close()


def test_runtime_scores_the_features_the_toolkit_recorded(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    """Same problem, same seed: the runtime's cue scores equal the probe on collected features."""
    store = Collection(made_probe["collection"])
    trace = store.traces()[0]
    events = store.load_split(trace["split"])
    rows = events.trace_ids == trace["id"]
    card = ProbeCard.load(made_probe["probe"])
    offline = OnnxProbe(card.onnx_path_for("harm"), card.feature_dim).score_batch(events.features[rows])
    problem = next(p for p in load_problems(made_probe["data"]).problems if p.id == trace["id"])
    engine = Engine(tiny_r1, probe=made_probe["probe"], n_ctx=512)
    run = list(
        engine.generate(
            problem.question, max_tokens=64, seed=trace_seed(0, problem.id), alpha=0.3, mode="per-cue", promise="harm"
        )
    )
    cues = [e for e in run if isinstance(e, CueScored)]
    rule = engine.rule_for(0.3, "per-cue", promise="harm")
    engine.close()
    assert cues[0].score == pytest.approx(offline[0], abs=1e-5)
    assert cues[0].decision == ("exit" if rule.exits(offline[0]) else "continue")


def test_trial_confidence_calibrates_without_a_probe(
    made_probe: dict[str, Path], tiny_r1: Path, tmp_path: Path
) -> None:
    """`calibrate --score trial` writes a card with no ONNX that thresholds DEER's confidence;
    the runtime then runs the trial policy with that stated risk level."""
    code, out = tools("calibrate", made_probe["collection"], "-p", tmp_path / "trial", "--score", "trial", "--draws", 5)
    assert code == 0, out
    card = ProbeCard.load(tmp_path / "trial")
    assert card.score == "trial" and card.onnx is None and card.metrics["score"] == "trial"
    engine = Engine(tiny_r1, probe=tmp_path / "trial", n_ctx=512)
    assert engine.probe is None
    policy = engine.policy_for(GenerationOptions(alpha=0.3, mode="per-cue"))
    assert policy.kind == "deer" and policy.guarantee and "calibrated" in policy.describe()
    engine.close()


def test_resume_with_other_settings_is_refused(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    code, out = tools(
        "collect", "--model", tiny_r1, "-d", made_probe["data"], "-o", made_probe["collection"], "--max-tokens", 32
    )
    assert code == 1
    assert "collected with other settings" in out and "another --out" in out


def test_calibrate_refuses_a_probe_trained_for_another_model(made_probe: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("probe.onnx", "agreement.onnx"):
        (other / name).write_bytes((made_probe["probe"] / name).read_bytes())
    training = json.loads((made_probe["probe"] / "training.json").read_text())
    training["fingerprint"] = {**training["fingerprint"], "name": "Another Model", "n_embd": 4096}
    (other / "training.json").write_text(json.dumps(training))
    code, out = tools("calibrate", made_probe["collection"], "-p", other, "--draws", 0)
    assert code == 1 and "trained for Another Model" in out


def test_make_probe_runs_the_whole_path(tiny_r1: Path, tmp_path: Path) -> None:
    """One command: collect, train, calibrate, and the card printed."""
    data = corpus(tmp_path / "c.jsonl", 24)
    code, out = tools(
        "make",
        "--model",
        tiny_r1,
        "-d",
        data,
        "-o",
        tmp_path / "probe",
        "--work",
        tmp_path / "work",
        "--max-tokens",
        64,
        "--parallel",
        4,
    )
    assert code == 0, out
    assert (tmp_path / "probe" / "probe.onnx").is_file() and "per-answer α=0.01" in out and "test split:" in out
    assert ProbeCard.load(tmp_path / "probe").metrics["promise_check"]["draws"] == 2000


def test_committed_cards_name_no_machine_paths(made_probe: dict[str, Path]) -> None:
    """Cards and training reports store file names, never absolute paths of this machine."""
    card = (made_probe["probe"] / "card.json").read_text()
    training = (made_probe["probe"] / "training.json").read_text()
    root = str(made_probe["root"])
    assert root not in card and root not in training


def test_bad_corpus_lines_are_reported_not_fatal(tiny_r1: Path, tmp_path: Path) -> None:
    data = corpus(tmp_path / "c.jsonl", 3)
    data.write_text(data.read_text() + '{"answer": "#### 4"}\n')
    code, out = tools("collect", "--model", tiny_r1, "-d", data, "-o", tmp_path / "c", "--max-tokens", 64)
    assert code == 0
    assert "skipped 1 line(s) (line 4:" in out


def test_questions_alone_make_an_agreement_probe(tiny_r1: Path, tmp_path: Path) -> None:
    """Questions without answers — JSONL with only `prompt`/`question`, or plain text one per
    line — are labelled by agreement alone and give a card with the agreement promise only."""
    asked = tmp_path / "asked.jsonl"
    asked.write_text("".join(json.dumps({"prompt": f"Tom has {i} apples. How many?"}) + "\n" for i in range(12)))
    typed = tmp_path / "typed.txt"
    typed.write_text("".join(f"Ann has {i} pears. How many?\n" for i in range(12)))
    fractions = ("--train-frac", 0.4, "--cal-frac", 0.4)
    code, out = tools("collect", "--model", tiny_r1, "-d", asked, "-d", typed, "-o", tmp_path / "c", *fractions)
    assert code == 0, out
    traces = Collection(tmp_path / "c").traces()
    assert len(traces) == 24 and {t["group"] for t in traces} == {
        f"{tmp_path.name}/asked.jsonl",
        f"{tmp_path.name}/typed.txt",
    }
    assert all(t["gold"] is None and t["correct"] is None for t in traces)
    assert all(c["answer"] == "4" and c["changes"] is False and c["harm"] is None for t in traces for c in t["cues"])
    code, out = tools("train", tmp_path / "c", "-o", tmp_path / "p")
    assert code == 0 and "agreement probe" in out and "harm probe" not in out, out
    code, out = tools("calibrate", tmp_path / "c", "-p", tmp_path / "p", "--draws", 10)
    assert code == 0, out
    card = ProbeCard.load(tmp_path / "p")
    assert card.promises == ["agreement"] and card.onnx == "agreement.onnx"
    engine = Engine(tiny_r1, probe=tmp_path / "p", n_ctx=512)
    try:
        with pytest.raises(SettingError, match="no harm calibration"):
            engine.plan("Tom has 3 apples. How many?", GenerationOptions(promise="harm"))
    finally:
        engine.close()


def test_train_needs_both_kinds_of_exit(tiny_r1: Path, tmp_path: Path) -> None:
    data = tmp_path / "all-wrong.jsonl"
    data.write_text("".join(json.dumps({"input": f"q{i}", "target": 9}) + "\n" for i in range(4)))
    tools(
        "collect",
        "--model",
        tiny_r1,
        "-d",
        data,
        "-o",
        tmp_path / "c",
        "--max-tokens",
        64,
        "--train-frac",
        0.9,
        "--cal-frac",
        0.05,
    )
    code, out = tools("train", tmp_path / "c", "-o", tmp_path / "p")
    assert code == 0 and "harm probe (the exit's answer is right): constant (the train split holds one label)" in out


def test_auto_picks_the_probe_that_cross_validates_better(tmp_path: Path) -> None:
    """Few events, many features, one informative direction: the linear probe generalises
    and `auto` picks it by cross-validation on the train split alone; its ONNX file agrees."""
    from lynx_edge.lab.collection import SplitEvents
    from lynx_edge.lab.train import export, train_probe

    rng = np.random.default_rng(0)
    n, d = 300, 400
    labels = (rng.random(n) < 0.85).astype(np.uint8)
    features = rng.normal(size=(n, d)).astype(np.float32)
    features[:, 0] += 1.5 * labels
    events = SplitEvents(features, labels, labels, np.array([f"t{i // 2}" for i in range(n)]), np.zeros(n), np.zeros(n))
    probe, cv = train_probe(events, "auto", max_iter=50)
    assert set(cv) == {"mlp 256/64", "linear C=0.003", "linear C=0.01", "linear C=0.03"}
    assert probe.kind == "linear" and cv[probe.label] == max(v for v in cv.values() if v is not None)
    assert export(probe, tmp_path / "probe.onnx", features[:50]) < 1e-5


def test_the_card_is_rederived_bit_for_bit_from_its_events(made_probe: dict[str, Path], tmp_path: Path) -> None:
    """events.json beside the card holds every held-out score, label and token count: calibrate
    without the collection writes the same card."""
    copy = tmp_path / "probe"
    copy.mkdir()
    for name in ("events.json", "training.json", "probe.onnx", "agreement.onnx"):
        (copy / name).write_bytes((made_probe["probe"] / name).read_bytes())
    code, out = tools("calibrate", "-p", copy, "--draws", 50)
    assert code == 0, out
    assert (copy / "card.json").read_text() == (made_probe["probe"] / "card.json").read_text()


def test_the_shipped_card_is_rederived_bit_for_bit_from_the_repository(tmp_path: Path) -> None:
    """The embedded reasoner's card: its events, training record and probe in the repository
    are enough for calibrate to write the same card (thresholds, metrics, the 2000-draw check)."""
    shipped = Path(__file__).resolve().parents[2] / "probes/smollm2-135m-reasoner"
    card = json.loads((shipped / "card.json").read_text())
    copy = tmp_path / "probe"
    copy.mkdir()
    for name in ("events.json", "training.json", "probe.onnx", "agreement.onnx"):
        (copy / name).write_bytes((shipped / name).read_bytes())
    code, out = tools("calibrate", "-p", copy, "--default-alpha", card["default_alpha"])
    assert code == 0, out
    assert (copy / "card.json").read_text() == (shipped / "card.json").read_text()


def test_guarantee_only_inside_the_calibrated_conditions(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    """The card was calibrated at T 0.6 / top-p 0.95 with conclude exits: a request there carries
    the guarantee; another temperature or exit style gets an estimate that names the difference."""
    engine = Engine(tiny_r1, probe=made_probe["probe"], n_ctx=512)
    question = "Tom has 3 apples and finds 1 more. How many?"

    def result(**options: object):  # noqa: ANN202
        return Reply.of(engine.generate(question, max_tokens=48, seed=1, alpha=0.3, mode="per-cue", **options)).result

    try:
        inside = result()
        warmer = result(temperature=0.9)
        boxed = result(exit_style="boxed")
        own_system = Reply.of(
            engine.generate(
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
                max_tokens=48,
                seed=1,
                alpha=0.3,
                mode="per-cue",
            )
        ).result
    finally:
        engine.close()
    assert inside.guarantee and inside.estimate_because == ()
    assert not warmer.guarantee and warmer.estimate_because == ("temperature 0.9 (calibrated at 0.6)",)
    assert not boxed.guarantee and boxed.estimate_because == ("exit style boxed (calibrated with conclude)",)
    assert not own_system.guarantee and "system prompt" in own_system.estimate_because[0]
    assert "not guaranteed here: temperature 0.9" in stats_line(warmer)
    assert inside.risk == "δ 0.3 at 90 % confidence (agreement)" and inside.risk in stats_line(inside)
    assert warmer.to_dict()["estimate_because"] == ["temperature 0.9 (calibrated at 0.6)"]


def test_a_card_holds_a_promise_for_each_condition_set(
    made_probe: dict[str, Path], tiny_r1: Path, tmp_path: Path
) -> None:
    """A second collection sampled over T 0.8–1.0 calibrates the same probe apart: a request at
    T 0.9 is inside that set (guarantee, that set's thresholds); T 0.7 is in neither."""
    warm = tmp_path / "warm"
    code, out = collect(tiny_r1, made_probe["data"], warm, "--temperature", "0.8:1.0", "--parallel", 3)
    assert code == 0, out
    probe = tmp_path / "probe"
    probe.mkdir()
    for name in ("training.json", "probe.onnx", "agreement.onnx"):
        (probe / name).write_bytes((made_probe["probe"] / name).read_bytes())
    code, out = tools("calibrate", made_probe["collection"], warm, "-p", probe, "--draws", 20)
    assert code == 0, out
    assert "conditions: temperature 0.6, top-p 0.95, conclude exit" in out
    assert "conditions: temperature 0.8–1, top-p 0.95, conclude exit" in out
    card = ProbeCard.load(probe)
    assert len(card.condition_sets) == 1 and card.condition_sets[0]["conditions"]["temperature_max"] == 1.0
    engine = Engine(tiny_r1, probe=probe, n_ctx=512)
    question = "Tom has 3 apples and finds 1 more. How many?"
    try:
        risk = {"alpha": 0.3, "mode": "per-cue"}
        warm_plan = engine.plan(question, GenerationOptions(temperature=0.9, **risk))
        between = Reply.of(engine.generate(question, max_tokens=48, seed=1, temperature=0.7, **risk)).result
        warm_result = Reply.of(engine.generate(question, max_tokens=48, seed=1, temperature=0.9, **risk)).result
    finally:
        engine.close()
    assert warm_plan.departures == ()
    assert warm_plan.policy.rule == select_rule(card.condition_sets[0]["calibration"], 0.3, "per-cue")
    assert warm_result.guarantee
    assert not between.guarantee and between.estimate_because == ("temperature 0.7 (calibrated at 0.6)",)


def test_temperature_ranges_are_checked_at_the_edge(tiny_r1: Path, tmp_path: Path) -> None:
    code, out = collect(tiny_r1, corpus(tmp_path / "c.jsonl", 3), tmp_path / "x", "--temperature", "0.9:0.6")
    assert code == 2 and "neither a temperature nor a range LOW:HIGH" in out


def test_calibrate_refuses_two_collections_in_the_same_conditions(made_probe: dict[str, Path], tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    for name in ("training.json", "probe.onnx", "agreement.onnx"):
        (probe / name).write_bytes((made_probe["probe"] / name).read_bytes())
    code, out = tools("calibrate", made_probe["collection"], made_probe["collection"], "-p", probe, "--draws", 0)
    assert code == 1 and "same conditions" in out


def test_probe_device_reaches_the_probe(made_probe: dict[str, Path], tiny_r1: Path) -> None:
    """--probe-device goes through the engine to onnxruntime: CoreML on a machine without it is
    a one-line error; cpu runs the probe on the CPU provider."""
    with pytest.raises(ProbeError, match="CoreML is not available"):
        Engine(tiny_r1, probe=made_probe["probe"], probe_device="coreml", n_ctx=256)
    engine = Engine(tiny_r1, probe=made_probe["probe"], probe_device="cpu", n_ctx=256)
    try:
        assert engine.probe is not None and engine.probe.providers == ["CPUExecutionProvider"]
    finally:
        engine.close()
