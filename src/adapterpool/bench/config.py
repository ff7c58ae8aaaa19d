"""What a benchmark run is: pool members, targets, budgets, loop settings — one JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass
class BenchConfig:
    """A benchmark run. ``discover`` folders add every sub-folder with a meta.json as a task that
    is both a pool member and a target (leave-one-out); ``extra_sources`` are pool members only."""

    discover: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    extra_sources: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: [
        "logme", "leep", "nce", "h-score", "regularized-h-score", "nleep", "transrate", "gbc",
        "knn", "linear-probe"])
    ensemble_members: list[str] = field(default_factory=lambda: ["logme", "leep", "knn"])
    max_train: int = 400
    max_eval: int = 250
    max_length: int = 64
    source_epochs: int = 2
    transfer_epochs: int = 2
    baseline_max_epochs: int = 10
    scoring_samples: int = 400
    subset: int = 3
    max_tries: int = 2
    threshold_fraction: float = 0.97
    loop_seeds: list[int] = field(default_factory=lambda: list(range(20)))
    seed: int = 0
    base_model: str | None = None
    run_dir: str = ".bench-cache/run"
    out_dir: str = "benchmarks/results"

    @classmethod
    def from_file(cls, path: str | Path) -> BenchConfig:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"bench config {path} does not exist")
        data = json.loads(path.read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise UsageError(f"{path}: unknown bench settings {sorted(unknown)}")
        return cls(**data)

    def discovered(self) -> list[str]:
        """Task folders found under ``discover`` (sorted; the set may grow over time)."""
        found = []
        for root in self.discover:
            root_path = Path(root)
            if not root_path.is_dir():
                raise UsageError(f"bench: discover folder {root} does not exist")
            found += sorted(str(p.parent) for p in root_path.glob("*/meta.json"))
        return found

    def all_targets(self) -> list[str]:
        return self.discovered() + [t for t in self.targets if t not in self.discovered()]

    def all_sources(self) -> list[str]:
        return self.discovered() + [s for s in self.extra_sources if s not in self.discovered()]

    def as_dict(self) -> dict:
        return asdict(self)
