"""What a benchmark run is: pool members, targets, budgets, loop settings — one JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass
class BenchConfig:
    """A benchmark run. ``discover`` folders add every sub-folder with a meta.json as a task that
    is both a pool member and a target (leave-one-out); ``extra_sources`` are pool members only,
    ``targets`` targets only (any spec ``load_task`` takes: folder, ``hf:...``, ``builtin:...``).

    Budgets: every task is loaded with ``max_train`` / ``max_eval`` examples and ``max_length``
    tokens; source adapters train ``source_epochs``, transfers ``transfer_epochs`` (the loop's
    budget), the standard-LoRA baseline at most ``baseline_max_epochs`` with early stopping on
    validation. The loop replay draws ``subset`` candidates per seed in ``loop_seeds``, tries at
    most ``max_tries`` of them, and passes when validation accuracy reaches ``threshold_fraction``
    x the standard-LoRA validation accuracy of that target (``threshold_sweep``: other fractions
    reported for the same replay)."""

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
    threshold_sweep: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.97, 1.0])
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
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        missing = [m for m in self.ensemble_members if m not in self.metrics]
        if missing:
            raise UsageError(f"bench: ensemble members {missing} are not among the metrics")
        for name, value in (("max_train", self.max_train), ("max_eval", self.max_eval),
                            ("max_length", self.max_length), ("subset", self.subset),
                            ("transfer_epochs", self.transfer_epochs),
                            ("source_epochs", self.source_epochs),
                            ("baseline_max_epochs", self.baseline_max_epochs)):
            if value is not None and value < 1:
                raise UsageError(f"bench: {name} must be >= 1, got {value}")
        if not self.loop_seeds:
            raise UsageError("bench: loop_seeds must not be empty")

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
