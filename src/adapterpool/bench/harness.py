"""The benchmark run: build the pool (or reuse it), then for every target score every candidate
with every metric (one forward pass per candidate), fine-tune from every candidate (the ground
truth of transfer), and train the standard-LoRA baseline (early stopping, at most
``baseline_max_epochs``).

Every finished unit — a source adapter, a target's score set, one fine-tune, a baseline — is
written to ``state.json`` at once (temp file + ``os.replace``), so an interrupted run resumes
where it stopped and a finished one is not recomputed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from accelerate.utils import set_seed
from rich.console import Console

from ..energy import EnergyMeter
from ..loop import adapter_metadata, train_standard
from ..metrics import get_metric
from ..modeling import load_tokenizer, save_adapter, warm_start_model
from ..pool import AdapterPool, AdapterRecord
from ..scoring import score_candidates
from ..tasks import Task, load_task
from ..training import TrainConfig, TrainResult, train
from .config import BenchConfig

console = Console(stderr=True)


class BenchState:
    """Completed units, persisted atomically after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}
        self.trained = 0  # training units computed (not reused) in this process
        self.computed: Counter = Counter()  # every unit computed in this process, by kind

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


def _result_record(result: TrainResult) -> dict:
    return {
        "validation": result.validation,
        "test": result.test,
        "train_seconds": result.train_seconds,
        "epochs": result.epochs_run,
        "kwh": result.energy.kwh,
        "co2_kg": result.energy.co2_kg,
    }


def _record_from_pool(record: AdapterRecord) -> dict:
    """A source unit rebuilt from the catalog (trained and added, but not yet in the state)."""
    metrics = record.metrics or {}
    return {
        "adapter_id": record.id,
        "validation": metrics.get("validation"),
        "test": metrics.get("test"),
        "train_seconds": record.train_seconds,
        "epochs": None,
        "kwh": record.energy_kwh,
        "co2_kg": record.co2_kg,
        "recovered_from_pool": True,
    }


def task_key(spec: str) -> str:
    """A stable short name for a task spec: folder name, ``builtin-NAME``, ``hf-NAME-CONFIG``."""
    return spec.rstrip("/").split("/")[-1].replace("builtin:", "builtin-").replace(":", "-")


class BenchRun:
    def __init__(self, config: BenchConfig, *, show_progress: bool = True,
                 measure_energy: bool = True) -> None:
        for name in config.metrics:
            get_metric(name)  # an unknown metric fails before any work
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = BenchState(self.run_dir / "state.json")
        self.show_progress = show_progress
        self.measure_energy = measure_energy
        self.state.put(config.as_dict(), "config")
        self._units_done = 0
        self._units_total = 0

    def _task(self, spec: str) -> Task:
        return load_task(spec, seed=self.config.seed, max_train=self.config.max_train,
                         max_eval=self.config.max_eval)

    def _train_config(self, epochs: int, *, evals_per_epoch: int = 2) -> TrainConfig:
        return TrainConfig(epochs=epochs, max_length=self.config.max_length, seed=self.config.seed,
                           evals_per_epoch=evals_per_epoch)

    def _announce(self, what: str) -> None:
        self._units_done += 1
        console.print(f"[dim]\\[{self._units_done}/{self._units_total}][/dim] {what}")

    def _count_units(self, sources: list[str], targets: list[str]) -> None:
        """How many units this run still has to compute (for the progress lines)."""
        todo = sum(1 for s in sources if not self.state.get("sources", task_key(s)))
        n_sources = len(sources)
        for spec in targets:
            key = task_key(spec)
            others = n_sources - (1 if key in {task_key(s) for s in sources} else 0)
            todo += self.state.get("targets", key, "scores") is None
            todo += max(0, others - len(self.state.get("targets", key, "finetune") or {}))
            todo += self.state.get("targets", key, "baseline") is None
        self._units_total = todo

    def build_pool(self) -> AdapterPool:
        path = self.run_dir / "pool"
        pool = (
            AdapterPool(path) if (path / "pool.json").is_file()
            else AdapterPool.init(path, base_model=self.config.base_model)
        )
        for spec in self.config.all_sources():
            key = task_key(spec)
            if self.state.get("sources", key):
                continue
            existing = [r for r in pool.list() if r.task_name == key]
            if existing:  # added to the pool, then interrupted before the state was written
                self.state.put(_record_from_pool(existing[0]), "sources", key)
                continue
            task = self._task(spec)
            self._announce(f"[bold]source[/bold] {key}: standard LoRA on {len(task.train)} "
                           f"examples, {self.config.source_epochs} epochs")
            result = train_standard(
                task, pool.base_model, self._train_config(self.config.source_epochs),
                description=f"source {key}", show_progress=self.show_progress,
                measure_energy=self.measure_energy,
            )
            with tempfile.TemporaryDirectory() as tmp:
                meta = adapter_metadata(task, result, parent_id=None, seed=self.config.seed)
                meta["task"]["name"] = key
                record = pool.add(save_adapter(result.model, Path(tmp) / "a", meta))
            self.state.trained += 1
            self.state.computed["source"] += 1
            self.state.put({"adapter_id": record.id, **_result_record(result)}, "sources", key)
        return pool

    def candidates_for(self, pool: AdapterPool, key: str) -> list[AdapterRecord]:
        """Leave-one-out: every configured source's adapter except the target's own task's."""
        wanted = {
            entry["adapter_id"] for name, entry in (self.state.get("sources") or {}).items()
            if name != key and name in {task_key(s) for s in self.config.all_sources()}
        }
        return sorted((r for r in pool.list() if r.id in wanted), key=lambda r: r.id)

    def run_target(self, pool: AdapterPool, spec: str) -> None:
        key = task_key(spec)
        task = self._task(spec)
        self.state.put(task.describe(), "targets", key, "task")
        candidates = self.candidates_for(pool, key)
        tokenizer = load_tokenizer(pool.base_model)
        if self.state.get("targets", key, "scores") is None:
            self._announce(f"[bold]target[/bold] {key}: scoring {len(candidates)} candidates with "
                           f"{len(self.config.metrics)} metrics")
            with EnergyMeter(enabled=self.measure_energy) as meter:
                scores = score_candidates(
                    pool, candidates, task, tokenizer, self.config.metrics,
                    max_samples=self.config.scoring_samples, max_length=self.config.max_length,
                    seed=self.config.seed, show_progress=self.show_progress,
                )
            total_seconds = sum(s.seconds for s in scores) or 1.0
            reading = meter.reading
            entries = {}
            for s in scores:
                share = s.seconds / total_seconds  # energy split in proportion to time
                entries[s.adapter_id] = {
                    "scores": s.scores,
                    "seconds": s.seconds,
                    "forward_seconds": s.seconds - sum(s.metric_seconds.values()),
                    "metric_seconds": s.metric_seconds,
                    "source_task": s.source_task,
                    "kwh": None if reading.kwh is None else reading.kwh * share,
                    "co2_kg": None if reading.co2_kg is None else reading.co2_kg * share,
                }
            self.state.computed["scores"] += 1
            self.state.put(entries, "targets", key, "scores")
        for record in candidates:
            if self.state.get("targets", key, "finetune", record.id):
                continue
            self._announce(f"[bold]{key}[/bold] <- {record.task_name}: fine-tune "
                           f"{self.config.transfer_epochs} epochs from the adapter")
            set_seed(self.config.seed)
            model = warm_start_model(pool.base_model, task.label_names, pool.adapter_dir(record.id))
            result = train(model, task, tokenizer, self._train_config(self.config.transfer_epochs),
                           description=f"{key} <- {record.task_name}",
                           show_progress=self.show_progress, measure_energy=self.measure_energy)
            self.state.trained += 1
            self.state.computed["finetune"] += 1
            self.state.put(_result_record(result), "targets", key, "finetune", record.id)
        if self.state.get("targets", key, "baseline") is None:
            self._announce(f"[bold]{key}[/bold]: standard LoRA baseline, early stopping, at most "
                           f"{self.config.baseline_max_epochs} epochs")
            config = self._train_config(self.config.baseline_max_epochs, evals_per_epoch=1)
            result = train_standard(task, pool.base_model, config,
                                    description=f"{key} standard LoRA",
                                    show_progress=self.show_progress,
                                    measure_energy=self.measure_energy)
            self.state.trained += 1
            self.state.computed["baseline"] += 1
            self.state.put(_result_record(result), "targets", key, "baseline")

    def run(self) -> dict:
        sources, targets = self.config.all_sources(), self.config.all_targets()
        if not targets:
            from ..errors import UsageError

            raise UsageError("bench: no targets (set `discover` or `targets`)")
        self._count_units(sources, targets)
        console.print(f"bench: {len(sources)} pool members, {len(targets)} targets, "
                      f"{self._units_total} units to compute; state in {self.state.path}")
        pool = self.build_pool()
        for spec in targets:
            self.run_target(pool, spec)
        return self.state.data
