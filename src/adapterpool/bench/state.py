"""The benchmark's recorded units: ``state.json``, written atomically after each unit, and the
part files of parallel workers merged into it."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path


def merge_units(into: dict, part: dict) -> None:
    """Deep-merge ``part`` into ``into``: units of both are kept, ``part``'s win on a clash."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_units(into[key], value)
        else:
            into[key] = value


class BenchState:
    """Completed units, persisted atomically after each one.

    Runs on Ray (:mod:`adapterpool.bench.executor`) write each unit's work to its own file in
    ``parts/`` beside ``state.json``; :meth:`fold_parts` merges them in, and :func:`read_state`
    shows the merged view without writing anything (safe while such a run is going on).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}
        self.trained = 0  # training units computed (not reused) in this process
        self.computed: Counter = Counter()  # every unit computed in this process, by kind

    @property
    def parts_dir(self) -> Path:
        return self.path.parent / "parts"

    def fold_parts(self, files: list[Path] | None = None) -> None:
        """Merge part files (default: all in ``parts/``) into the state, write it once
        atomically, then delete them: a crash in between leaves units in both places, never in
        neither."""
        files = sorted(self.parts_dir.glob("*.json")) if files is None else files
        files = [f for f in files if f.is_file()]
        if not files:
            return
        self.merge_parts(files)
        self._write()
        for part in files:
            part.unlink()

    def merge_parts(self, files: list[Path]) -> None:
        """Merge part files into the state in memory (their ``config`` is the worker's copy)."""
        for part in files:
            data = json.loads(part.read_text())
            data.pop("config", None)
            merge_units(self.data, data)

    def merge(self, part: dict) -> None:
        """Merge one finished unit's state (a worker's, its ``config`` left out) and write."""
        part = {k: v for k, v in part.items() if k != "config"}
        merge_units(self.data, part)
        self._write()

    def get(self, *keys: str):
        node = self.data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def put(self, value, *keys: str) -> None:
        node = self.data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        self._write()

    def _write(self) -> None:
        """The whole state to ``state.json``: temp file, fsync, ``os.replace``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def read_state(path: Path) -> dict:
    """``state.json`` with any part files merged in, read only (for reports)."""
    state = BenchState(path)
    state.merge_parts(sorted(state.parts_dir.glob("*.json")))
    return state.data


def compute_seconds(state: dict) -> dict:
    """Seconds the recorded units took, by kind (sources, scoring, fine-tunes, baselines)."""
    sources = sum(v.get("train_seconds") or 0.0 for v in (state.get("sources") or {}).values())
    scoring = finetune = baseline = 0.0
    for target in (state.get("targets") or {}).values():
        scoring += sum(e["seconds"] for e in (target.get("scores") or {}).values())
        finetune += sum(e["train_seconds"] for e in (target.get("finetune") or {}).values())
        baseline += (target.get("baseline") or {}).get("train_seconds") or 0.0
        baseline += sum(u["train_seconds"] for u in (target.get("gt_baseline") or {}).values())
        finetune += sum(u["train_seconds"] for seeds in (target.get("gt_finetune") or {}).values()
                        for u in seeds.values())
        baseline += sum(u["train_seconds"] for seeds in (target.get("peers") or {}).values()
                        for u in seeds.values())
    return {"sources": sources, "scoring": scoring, "finetune": finetune, "baseline": baseline,
            "total": sources + scoring + finetune + baseline}
