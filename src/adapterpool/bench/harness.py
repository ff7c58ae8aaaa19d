"""The benchmark run: build the pool, then for every target score every candidate with every
metric, fine-tune from every candidate (ground truth), train the standard-LoRA baseline.

Every finished unit is written to ``state.json`` at once (temp file + rename), so an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from accelerate.utils import set_seed
from rich.console import Console

from ..loop import adapter_metadata, train_standard
from ..modeling import load_tokenizer, save_adapter, warm_start_model
from ..pool import AdapterPool
from ..scoring import score_candidates
from ..tasks import Task, load_task
from ..training import TrainConfig, train
from .config import BenchConfig

console = Console()


class BenchState:
    """Completed units, persisted atomically after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}
        self.trained = 0  # units computed (not reused) in this process

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
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.data, handle, indent=1)
        os.replace(tmp, self.path)


def _result_record(result) -> dict:
    return {
        "validation": result.validation,
        "test": result.test,
        "train_seconds": result.train_seconds,
        "epochs": result.epochs_run,
        "kwh": result.energy.kwh,
        "co2_kg": result.energy.co2_kg,
    }


def task_key(spec: str) -> str:
    return spec.rstrip("/").split("/")[-1].replace("builtin:", "builtin-").replace(":", "-")


class BenchRun:
    def __init__(self, config: BenchConfig, *, show_progress: bool = True,
                 measure_energy: bool = True) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = BenchState(self.run_dir / "state.json")
        self.show_progress = show_progress
        self.measure_energy = measure_energy
        self.state.put(config.as_dict(), "config")

    def _task(self, spec: str) -> Task:
        return load_task(spec, seed=self.config.seed, max_train=self.config.max_train,
                         max_eval=self.config.max_eval)

    def _train_config(self, epochs: int, *, evals_per_epoch: int = 2) -> TrainConfig:
        return TrainConfig(epochs=epochs, max_length=self.config.max_length, seed=self.config.seed,
                           evals_per_epoch=evals_per_epoch)

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
            task = self._task(spec)
            console.print(f"[bold]source[/bold] {key}: {len(task.train)} train")
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
            self.state.put({"adapter_id": record.id, **_result_record(result)}, "sources", key)
        return pool

    def run_target(self, pool: AdapterPool, spec: str) -> None:
        key = task_key(spec)
        task = self._task(spec)
        candidates = [r for r in pool.list() if r.task_name != key]
        tokenizer = load_tokenizer(pool.base_model)
        if self.state.get("targets", key, "scores") is None:
            console.print(f"[bold]target[/bold] {key}: scoring {len(candidates)} candidates")
            scores = score_candidates(
                pool, candidates, task, tokenizer, self.config.metrics,
                max_samples=self.config.scoring_samples, max_length=self.config.max_length,
                seed=self.config.seed, show_progress=self.show_progress,
            )
            self.state.put(
                {s.adapter_id: {"scores": s.scores, "seconds": s.seconds,
                                "metric_seconds": s.metric_seconds, "source_task": s.source_task}
                 for s in scores},
                "targets", key, "scores",
            )
        for record in candidates:
            if self.state.get("targets", key, "finetune", record.id):
                continue
            set_seed(self.config.seed)
            model = warm_start_model(pool.base_model, task.label_names, pool.adapter_dir(record.id))
            result = train(model, task, tokenizer, self._train_config(self.config.transfer_epochs),
                           description=f"{key} <- {record.task_name}",
                           show_progress=self.show_progress, measure_energy=self.measure_energy)
            self.state.trained += 1
            self.state.put(_result_record(result), "targets", key, "finetune", record.id)
        if self.state.get("targets", key, "baseline") is None:
            config = self._train_config(self.config.baseline_max_epochs, evals_per_epoch=1)
            result = train_standard(task, pool.base_model, config, description=f"{key} standard LoRA",
                                    show_progress=self.show_progress,
                                    measure_energy=self.measure_energy)
            self.state.trained += 1
            self.state.put(_result_record(result), "targets", key, "baseline")
        self.state.put(task.describe(), "targets", key, "task")

    def run(self) -> dict:
        pool = self.build_pool()
        for spec in self.config.all_targets():
            self.run_target(pool, spec)
        return self.state.data
