"""What a benchmark run is: pool members, targets, budgets, loop settings — one JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..task_kinds import DEFAULT_METRIC


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
    reported for the same replay). ``only_targets`` keeps the bench's cost in hand on a large
    pool: every discovered task is a pool member, only those are targets.

    Strategies (``strategies``, each a comma-separated combination as ``adapt --strategy`` takes)
    change when attempts stop or which weights they start from, so each runs the real loop
    (:func:`adapterpool.adapt`) on every target in ``strategy_targets`` (default: every target),
    leave-one-out, once per seed in ``strategy_seeds``, with the same threshold, ranking metric
    ``strategy_metric``, transfer budget and a fallback that trains like the baseline; the loop
    draws its ``subset`` as ``strategy_subset`` says (``adapt --subset-strategy``).
    ``source_max_train`` / ``source_max_epochs`` (with early stopping, ``source_patience``
    evaluations, one a epoch) size the pool members as a user would contribute them."""

    discover: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    only_targets: list[str] | None = None
    extra_sources: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: [
        "logme", "leep", "nce", "h-score", "regularized-h-score", "nleep", "transrate", "gbc",
        "knn", "linear-probe"])
    ensemble_members: list[str] = field(default_factory=lambda: ["logme", "leep", "knn"])
    max_train: int = 400
    max_eval: int = 250
    max_length: int = 64
    source_epochs: int = 2
    source_max_train: int | None = None
    source_max_epochs: int | None = None
    source_patience: int = 3
    transfer_epochs: int = 2
    baseline_max_epochs: int = 10
    scoring_samples: int = 400
    subset: int = 3
    max_tries: int = 2
    threshold_fraction: float = 0.97
    threshold_sweep: list[float] = field(default_factory=lambda: [0.9, 0.95, 0.97, 1.0])
    loop_seeds: list[int] = field(default_factory=lambda: list(range(20)))
    strategies: list[str] = field(default_factory=list)
    strategy_seeds: list[int] = field(default_factory=lambda: [0])
    strategy_targets: list[str] | None = None
    # The PEFT method of every training unit (sources, baselines, fallbacks): a method name or
    # the dict of a peft config; None is the product's default (LoRA on peft's per-model
    # targets). A resumed run must keep it, or its units stop being comparable.
    peft: str | dict | None = None
    strategy_metric: str = DEFAULT_METRIC  # the loop's ranking metric: the product's by default
    strategy_subset: str = "random"
    # Target examples the loop scores each candidate on (None: scoring_samples, which the
    # ground truth's scores use): scoring is a forward pass per candidate, so on small targets
    # its sample decides whether the loop can cost as little as standard LoRA.
    strategy_scoring_samples: int | None = None
    # The peer (a name of bench/ground_truth.PEERS) whose recipe the loop runs' fallback trains
    # with; None: the run's own method (standard LoRA).
    strategy_fallback: str | None = None
    # What every time ratio divides: "wall" seconds (timed units need a quiet machine, and run
    # alone on a node on Ray) or "cpu" seconds of the unit's process (single-threaded units
    # measure the same beside other work, so timed units run side by side like the others;
    # adapterpool.training.energy). A resumed run must keep it.
    time_measure: str = "wall"
    # Ground truth that can rank (see bench/ground_truth.py): when ground_truth_max_epochs is
    # set, every baseline, warm start and peer trains until early stopping
    # (ground_truth_patience epochs without gain), once per seed of ground_truth_seeds, and the
    # test split keeps up to max_test examples (validation: max_eval).
    ground_truth_max_epochs: int | None = None
    ground_truth_seeds: list[int] = field(default_factory=lambda: [0])
    ground_truth_patience: int = 3
    ground_truth_evals_per_epoch: int = 2
    # {"prefilter_top": M, "random": M}: fine-tune only those candidates; None: all of them
    ground_truth_candidates: dict | None = None
    peers: list[str] = field(default_factory=list)
    max_test: int | None = None
    seed: int = 0
    # "text2text": sources and targets are text2text tasks, measured in threshold_metric (None:
    # the kind's default, rouge_l), evaluations generating at most max_new_tokens tokens
    # (None: the product's default); see bench/text2text.py
    kind: str = "classification"
    threshold_metric: str | None = None
    max_new_tokens: int | None = None
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
        from .text2text import check_config

        check_config(self)
        missing = [m for m in self.ensemble_members if m not in self.metrics]
        if missing:
            raise UsageError(f"bench: ensemble members {missing} are not among the metrics")
        for name, value in (("max_train", self.max_train), ("max_eval", self.max_eval),
                            ("max_length", self.max_length), ("subset", self.subset),
                            ("transfer_epochs", self.transfer_epochs),
                            ("source_epochs", self.source_epochs),
                            ("baseline_max_epochs", self.baseline_max_epochs),
                            ("strategy_scoring_samples", self.strategy_scoring_samples)):
            if value is not None and value < 1:
                raise UsageError(f"bench: {name} must be >= 1, got {value}")
        from .ground_truth import check_peers

        if self.strategy_fallback is not None:
            check_peers([self.strategy_fallback])
        if self.ground_truth_max_epochs is not None:
            check_peers(self.peers)
            if not self.ground_truth_seeds:
                raise UsageError("bench: ground_truth_seeds must not be empty")
            plan = self.ground_truth_candidates
            if plan is not None and not ({"prefilter_top", "random"} <= set(plan)
                                         <= {"prefilter_top", "random", "score_top"}):
                raise UsageError("bench: ground_truth_candidates takes prefilter_top, random and "
                                 f"optionally score_top (counts), got {sorted(plan)}")
        elif self.peers:
            raise UsageError("bench: peers are trained with the ground truth: set "
                             "ground_truth_max_epochs")
        if self.time_measure not in ("wall", "cpu"):
            raise UsageError(f"bench: time_measure must be 'wall' or 'cpu', got "
                             f"{self.time_measure!r}")
        if not self.loop_seeds:
            raise UsageError("bench: loop_seeds must not be empty")
        from ..loop.strategies import parse_strategies

        for spec in self.strategies:
            parse_strategies(spec)  # an unknown strategy fails before any work
        if self.strategies and not self.strategy_seeds:
            raise UsageError("bench: strategy_seeds must not be empty")
        from ..config import SUBSET_STRATEGIES

        if self.strategy_subset not in SUBSET_STRATEGIES:
            raise UsageError(f"bench: strategy_subset must be one of {SUBSET_STRATEGIES}, got "
                             f"{self.strategy_subset!r}")

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
        """Discovered tasks and ``targets``; with ``only_targets`` (specs or short keys), only
        those, picked among every task of the run (an extra source too, leave-one-out) — the
        others stay pool members."""
        from .harness import task_key

        found = self.discovered() + [t for t in self.targets if t not in self.discovered()]
        if self.only_targets is None:
            return found
        wanted = set(self.only_targets)
        every = found + [s for s in self.extra_sources if s not in found]
        return [t for t in every if t in wanted or task_key(t) in wanted]

    def strategy_target_specs(self) -> list[str]:
        """Targets the strategies run on: ``strategy_targets`` (spec or short key), or all."""
        from .harness import task_key

        if self.strategy_targets is None:
            return self.all_targets()
        wanted = set(self.strategy_targets)
        return [t for t in self.all_targets() if t in wanted or task_key(t) in wanted]

    def all_sources(self) -> list[str]:
        return self.discovered() + [s for s in self.extra_sources if s not in self.discovered()]

    def as_dict(self) -> dict:
        return asdict(self)
