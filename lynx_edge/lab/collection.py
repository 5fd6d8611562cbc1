"""A collection directory: what ``collect`` writes and ``train``/``calibrate`` read.

Layout (everything appended, so an interrupted run resumes where it stopped)::

    manifest.json       model fingerprint, layers, cues, exit text, scaffold, settings
    traces.jsonl        one line per finished problem (answer, grade, cue events, timings)
    shards/NNNNN.npz    cue features of the problems in a batch of lines of traces.jsonl
    runs.jsonl          one line per collect run: problems, wall seconds, tokens, parallel
    timings.jsonl       plain sequential generation of some traces (the throughput baseline)
    train.npz cal.npz test.npz   per split: features, labels, agreement, trace ids, positions, cuts

A shard is written (atomically) before its problems' lines, and a line names its shard, so
a crash between the two leaves rows that no line claims; they are ignored and redone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lynx_edge.lab.run_dir import RunDir, RunDirError

SPLITS = ("train", "cal", "test")
TRACES = "traces.jsonl"
RUNS = "runs.jsonl"
TIMINGS = "timings.jsonl"
UNKNOWN = 255  # a correctness label where the problem has no gold answer


class CollectionError(RunDirError):
    """A collection directory that is missing, partial, or made with other settings."""


@dataclass
class SplitEvents:
    """The cue events of one split, row-aligned."""

    features: np.ndarray  # float32 [n, D]
    labels: np.ndarray  # uint8 [n]: 1 = the forced answer at this cue is right (UNKNOWN: no gold)
    agrees: np.ndarray  # uint8 [n]: 1 = the forced answer at this cue is the full-thinking answer
    trace_ids: np.ndarray  # str [n]
    positions: np.ndarray  # int32 [n]: generated-token index of the cue's last token
    cuts: np.ndarray  # int32 [n]: generated-token index where the cue begins

    def __len__(self) -> int:
        return len(self.labels)


class Collection(RunDir):
    """Read and append to one collection directory."""

    what = "collection"
    made = "collected"

    @property
    def make_hint(self) -> str:  # type: ignore[override]
        return f"run `lynx-edge probe collect --out {self.root}` first"

    def start(self, manifest: dict[str, Any], *, may_change=("data",)) -> None:
        super().start(manifest, may_change=may_change)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)

    def traces(self) -> list[dict[str, Any]]:
        """Finished problems, in the order they were collected (a torn last line is dropped),
        with their plain-generation timing where one was taken."""
        timings = {t["id"]: t for t in self.read(TIMINGS)}
        return [{**t, **timings.get(t["id"], {})} for t in self.read(TRACES)]

    def runs(self) -> list[dict[str, Any]]:
        return self.read(RUNS)

    def log_run(self, run: dict[str, Any]) -> None:
        if run["problems"]:
            super().append(RUNS, [run])

    def add_timings(self, timings: list[dict[str, Any]]) -> None:
        super().append(TIMINGS, timings)

    def append(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:  # type: ignore[override]
        """Write one shard with ``rows`` (cue events) and then the ``records`` naming it."""
        self.append_arrays(records, self._arrays(rows))

    def append_arrays(self, records: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
        """``append`` for rows already in shard form."""
        shard_dir = self.root / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        name = f"{len(list(shard_dir.glob('*.npz'))):05d}.npz"
        tmp = shard_dir / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, shard_dir / name)
        super().append(TRACES, ({**record, "shard": name} for record in records))

    def shards(self) -> Iterator[tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
        """Each shard's records and the arrays of its cue events that those records claim."""
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for t in self.read(TRACES):
            by_shard.setdefault(t["shard"], []).append(t)
        for name, records in sorted(by_shard.items()):
            with np.load(self.root / "shards" / name) as data:
                arrays = {k: data[k] for k in data.files}
            keep = np.isin(arrays["trace_ids"], [t["id"] for t in records])
            yield records, {k: v[keep] for k, v in arrays.items()}

    def write_splits(self) -> dict[str, int]:
        """Gather the shards into one compressed file per split; returns events per split."""
        claimed = {(t["id"], t["shard"]): t["split"] for t in self.traces()}
        parts: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SPLITS}
        for shard in sorted((self.root / "shards").glob("[0-9]*.npz")):
            with np.load(shard) as data:
                arrays = {k: data[k] for k in data.files}
            split_of = np.array([claimed.get((t, shard.name), "") for t in arrays["trace_ids"]])
            for split in SPLITS:
                keep = split_of == split
                if keep.any():
                    parts[split].append({k: v[keep] for k, v in arrays.items()})
        counts = {}
        for split in SPLITS:
            if parts[split]:
                merged = {k: np.concatenate([p[k] for p in parts[split]]) for k in parts[split][0]}
            else:
                merged = self._arrays([])
            np.savez_compressed(self.root / f"{split}.npz", **merged)
            counts[split] = len(merged["labels"])
        return counts

    @property
    def feature_dim(self) -> int:
        """Width of one cue's features: n_embd per captured layer plus the final norm."""
        m = self.manifest()
        return int(m["model"]["n_embd"]) * (len(m["layers"]) + int(m["final_norm"]))

    def _arrays(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Cue-event rows as the row-aligned arrays of a shard or split file."""
        return {
            "features": np.stack([r["features"] for r in rows])
            if rows
            else np.zeros((0, self.feature_dim), np.float32),
            "labels": np.array([r["label"] for r in rows], dtype=np.uint8),
            "agrees": np.array([r["agrees"] for r in rows], dtype=np.uint8),
            "trace_ids": np.array([r["trace_id"] for r in rows], dtype=str),
            "positions": np.array([r["position"] for r in rows], dtype=np.int32),
            "cuts": np.array([r["cut"] for r in rows], dtype=np.int32),
        }

    def load_split(self, split: str) -> SplitEvents:
        path = self.root / f"{split}.npz"
        if not path.is_file():
            raise CollectionError(f"{path} is missing: finish `lynx-edge probe collect --out {self.root}` first")
        with np.load(path) as data:
            return SplitEvents(**{k: data[k] for k in data.files})

    def traces_by_split(self) -> dict[str, list[dict[str, Any]]]:
        by: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for t in self.traces():
            by[t["split"]].append(t)
        return by


def done_ids(traces: Iterable[dict[str, Any]]) -> set[str]:
    return {t["id"] for t in traces}


def merge(sources: Sequence[Path], out: Path) -> dict[str, int]:
    """Join the collections of several shards (or machines) into ``out``; they must come
    from one model with the same settings and seed. A problem collected twice is kept once.
    Returns cue events per split."""
    if not sources:
        raise CollectionError("name at least one collection to merge")
    manifests = [Collection(src).manifest() for src in sources]
    first = manifests[0]
    for src, manifest in zip(sources[1:], manifests[1:]):
        differ = [k for k in first if k != "data" and first[k] != manifest.get(k)]
        if differ:
            raise CollectionError(
                f"{src} was collected with other {', '.join(differ)} than {sources[0]}: "
                "only shards of one collect command (same model, settings and seed) merge"
            )
    target = Collection(out)
    data = sorted({name for m in manifests for name in m["data"]})
    target.start({**first, "data": data})
    seen = done_ids(target.traces())
    for src in sources:
        store = Collection(src)
        for records, arrays in store.shards():
            fresh = [t for t in records if t["id"] not in seen]
            if not fresh:
                continue
            keep = np.isin(arrays["trace_ids"], [t["id"] for t in fresh])
            target.append_arrays(
                [{k: v for k, v in t.items() if k != "shard"} for t in fresh], {k: v[keep] for k, v in arrays.items()}
            )
            seen |= done_ids(fresh)
        for run in store.runs():
            target.log_run(run)
        timings = store.read(TIMINGS)
        if timings:
            target.add_timings(timings)
    return target.write_splits()
