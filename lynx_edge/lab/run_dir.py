"""A resumable run directory: a manifest of settings plus append-only JSONL files.

The probe toolkit's collections and ``lynx-edge bench`` outputs are long runs that a user
stops and restarts. Lines are appended and synced one record at a time, so a crash loses at
most the line being written (a torn last line is dropped on reading), and a restart with
other settings is refused instead of mixing two experiments in one directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lynx_edge.errors import LynxError

MANIFEST = "manifest.json"


class RunDirError(LynxError):
    """A run directory that is missing or was made with other settings."""


class RunDir:
    """Read and append to one run directory; ``what`` names it in messages ("collection")."""

    what = "run directory"
    made = "made"
    make_hint = "run the command that writes it first"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise RunDirError(f"{self.root} is not a {self.what} (no {MANIFEST}): {self.make_hint}")
        return json.loads(self.manifest_path.read_text())

    def start(self, manifest: dict[str, Any], *, may_change: Sequence[str] = ()) -> None:
        """Create the directory, or check that a resumed run uses the same settings."""
        manifest = json.loads(json.dumps(manifest))  # compare as stored (tuples become lists)
        if self.manifest_path.is_file():
            old = self.manifest()
            changed = [k for k in manifest if k not in may_change and old.get(k) != manifest[k]]
            if changed:
                raise RunDirError(
                    f"{self.root} was {self.made} with other {', '.join(changed)}: "
                    "pass the same settings to resume, or another --out"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")

    def read(self, name: str) -> list[dict[str, Any]]:
        """The records of ``name`` in the order written (a torn last line is dropped)."""
        path = self.root / name
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        with (self.root / name).open("a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def rewrite(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        """Replace ``name`` atomically (a crash leaves the old file or the new one)."""
        tmp = self.root / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, self.root / name)
