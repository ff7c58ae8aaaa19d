"""The benchmark run: build the pool (or reuse it), then for every target score every candidate
with every metric (one forward pass per candidate), fine-tune from every candidate (the ground
truth of transfer), and train the standard-LoRA baseline (early stopping, at most
``baseline_max_epochs``).

Every finished unit — a source adapter, a target's score set, one fine-tune, a baseline — is
written to ``state.json`` at once (temp file + ``os.replace``), so an interrupted run resumes
where it stopped and a finished one is not recomputed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed
from rich.console import Console

from ..cli.display import final_attempt
from ..config import AdaptConfig
from ..contributing import contribute
from ..errors import PoolError, UsageError
from ..loop.adapt import adapt
from ..metrics import get_metric
from ..models.build import load_tokenizer
from ..models.peft_methods import peft_config
from ..models.warm_start import warm_start_model
from ..pool import AdapterPool, AdapterRecord
from ..pool.store import seeded_sample
from ..ranking.scoring import reference_scores, score_candidates
from ..tasks import Task, load_task
from ..tasks.task import subsample_records
from ..training.energy import EnergyMeter
from ..training.standard import train_standard
from ..training.trainer import TrainConfig, TrainResult, train
from .config import BenchConfig
from .payoff import validation_level
from .state import BenchState
from .text2text import check_task, is_text2text, train_settings, trivial_target

console = Console(stderr=True)


def result_record(result: TrainResult) -> dict:
    return {
        "validation": result.validation,
        "test": result.test,
        "train_seconds": result.train_seconds,
        "cpu_seconds": result.cpu_seconds,
        "epochs": result.epochs_run,
        "kwh": result.energy.kwh,
        "co2_kg": result.energy.co2_kg,
        "history": result.history,  # every evaluation: step, epoch, seconds, scores (for replays)
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


def _strategy_record(report: dict) -> dict:
    """What the summary needs of one loop run: outcome, cost, accuracy, every attempt, and what
    a replay needs (threshold, ranking, each selected strategy's report field)."""
    from ..loop.strategies import STRATEGIES

    attempts = report["attempts"]
    final = final_attempt(report) if attempts else None
    fields = {cls.report_key for cls in STRATEGIES.values() if cls.report_key}
    return {
        "outcome": report["outcome"],
        "strategy": report.get("strategy"),
        "threshold": (report.get("threshold") or {}).get("value"),
        "subset_strategy": report.get("subset_strategy"),
        "ranking": [{k: s.get(k) for k in ("adapter_id", "source_task", "score")}
                    for s in report.get("scores") or []],
        **{k: report[k] for k in sorted(fields) if report.get(k) is not None},
        "seconds": report["timing"]["total_seconds"],
        "cpu_seconds": report["timing"].get("total_cpu_seconds"),
        "scoring_seconds": report["timing"]["scoring_seconds"],
        "scoring_cpu_seconds": report["timing"].get("scoring_cpu_seconds"),
        "kwh": (report.get("energy") or {}).get("kwh"),
        "co2_kg": (report.get("energy") or {}).get("co2_kg"),
        "test": final["test"] if final else None,
        "validation": final["validation"] if final else None,
        "skipped": report.get("skipped"),
        "attempts": [
            {k: a.get(k) for k in ("kind", "adapter_id", "epochs", "train_seconds", "validation",
                                   "test", "passed", "stop_reason", "history")}
            for a in attempts
        ],
    }


class PoolView:
    """A pool seen without some adapters (leave-one-out): what :func:`adapt` reads of a pool."""

    def __init__(self, pool: AdapterPool, keep: set[str]) -> None:
        self.pool, self.keep = pool, keep
        self.base_model = pool.base_model

    def list(self) -> list[AdapterRecord]:
        return [r for r in self.pool.list() if r.id in self.keep]

    def sample(self, n: int, seed: int) -> list[AdapterRecord]:
        return seeded_sample(self.list(), n, seed)

    def get(self, adapter_id: str) -> AdapterRecord:
        if adapter_id not in self.keep:
            raise PoolError(f"adapter {adapter_id} is left out of this view")
        return self.pool.get(adapter_id)

    def adapter_dir(self, adapter_id: str) -> Path:
        self.get(adapter_id)
        return self.pool.adapter_dir(adapter_id)

    def task_summaries(self, adapter_ids: list[str]):
        """The kept adapters' task summaries: without them the loop's prefilter would fall back
        to a seeded random draw (it did, in the first family strategy runs)."""
        for adapter_id in adapter_ids:
            self.get(adapter_id)
        return self.pool.task_summaries(adapter_ids)

    def add(self, *args, **kwargs) -> AdapterRecord:
        raise PoolError("the benchmark never contributes")


def task_key(spec: str) -> str:
    """A stable short name for a task spec: folder name, ``builtin-NAME``, ``hf-NAME-CONFIG``."""
    return spec.rstrip("/").split("/")[-1].replace("builtin:", "builtin-").replace(":", "-")


class BenchRun:
    def __init__(self, config: BenchConfig, *, show_progress: bool = True,
                 measure_energy: bool = True, state_path: Path | None = None) -> None:
        for name in config.metrics:
            get_metric(name)  # an unknown metric fails before any work
        self.config = config
        self.run_dir = Path(config.run_dir).expanduser()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state = BenchState(state_path or self.run_dir / "state.json")
        self.show_progress = show_progress
        self.measure_energy = measure_energy
        self.state.put(config.as_dict(), "config")
        self.units_done = 0
        self.units_total = 0

    def _task(self, spec: str, *, max_train: int | None = None,
              max_test: int | None = None) -> Task:
        """``spec`` at the run's sizes; ``max_test``: a test split larger than validation."""
        c = self.config
        test_size = max(max_test or 0, c.max_eval)
        task = load_task(spec, seed=c.seed, max_train=max_train or c.max_train, max_eval=test_size)
        if len(task.validation) > c.max_eval:
            task.validation = subsample_records(task.validation, c.max_eval, c.seed)
        check_task(self.config, task, spec)  # one family a run: accuracy, or text2text's metric
        return task

    def _train_config(self, epochs: int, *, evals_per_epoch: int = 2, **more) -> TrainConfig:
        return TrainConfig(epochs=epochs, max_length=self.config.max_length, seed=self.config.seed,
                           evals_per_epoch=evals_per_epoch, **train_settings(self.config), **more)

    def _source_config(self) -> TrainConfig:
        """As a user would contribute: until early stopping when ``source_max_epochs`` is set."""
        if self.config.source_max_epochs:
            return self._train_config(self.config.source_max_epochs, evals_per_epoch=1,
                                      patience=self.config.source_patience)
        return self._train_config(self.config.source_epochs)

    def peft(self):
        """A fresh config of the run's PEFT method (peft's builders change what they are given)."""
        return peft_config(self.config.peft)

    def _baseline_config(self) -> TrainConfig:
        return self._train_config(self.config.baseline_max_epochs, evals_per_epoch=1)

    def announce(self, what: str) -> None:
        self.units_done += 1
        count = f"{self.units_done}/{self.units_total}" if self.units_total else "+"
        console.print(f"[dim]\\[{count}][/dim] {what}")

    def _count_units(self, sources: list[str], targets: list[str]) -> None:
        """How many units this run still has to compute (for the progress lines)."""
        todo = sum(1 for s in sources if not self.state.get("sources", task_key(s)))
        n_sources = len(sources)
        for spec in targets:
            key = task_key(spec)
            others = n_sources - (1 if key in {task_key(s) for s in sources} else 0)
            todo += self.state.get("targets", key, "scores") is None
            if self.config.ground_truth_max_epochs:
                from .ground_truth import units_left

                todo += units_left(self, key, others)
                continue
            todo += max(0, others - len(self.state.get("targets", key, "finetune") or {}))
            todo += self.state.get("targets", key, "baseline") is None
        for spec in self.config.strategy_target_specs():
            done = self.state.get("targets", task_key(spec), "strategies") or {}
            todo += sum(str(seed) not in done.get(strategy, {})
                        for strategy in self.config.strategies
                        for seed in self.config.strategy_seeds)
        self.units_total = todo

    def open_pool(self) -> AdapterPool:
        path = self.run_dir / "pool"
        if (path / "pool.json").is_file():
            return AdapterPool(path)
        return AdapterPool.init(path, base_model=self.config.base_model)

    def build_pool(self, sources: list[str] | None = None) -> AdapterPool:
        """Train and contribute every source (or only ``sources``) not recorded yet."""
        pool = self.open_pool()
        for spec in self.config.all_sources() if sources is None else sources:
            key = task_key(spec)
            if self.state.get("sources", key):
                continue
            existing = [r for r in pool.list() if r.task_name == key]
            if existing:  # added to the pool, then interrupted before the state was written
                self.state.put(_record_from_pool(existing[0]), "sources", key)
                continue
            task = self._task(spec, max_train=self.config.source_max_train)
            config = self._source_config()
            self.announce(f"[bold]source[/bold] {key}: standard LoRA on {len(task.train)} "
                           f"examples, {config.epochs:g} epochs at most")
            result = train_standard(
                task, pool.base_model, config, peft=self.peft(),
                description=f"source {key}", show_progress=self.show_progress,
                measure_energy=self.measure_energy,
            )
            record = contribute(pool, task, result, seed=self.config.seed, task_name=key)
            self.state.trained += 1
            self.state.computed["source"] += 1
            self.state.put({"adapter_id": record.id, **result_record(result)}, "sources", key)
        return pool

    def candidates_for(self, pool: AdapterPool, key: str) -> list[AdapterRecord]:
        """Leave-one-out: every configured source's adapter except the target's own task's."""
        wanted = {
            entry["adapter_id"] for name, entry in (self.state.get("sources") or {}).items()
            if name != key and name in {task_key(s) for s in self.config.all_sources()}
        }
        return sorted((r for r in pool.list() if r.id in wanted), key=lambda r: r.id)

    def run_target(self, pool: AdapterPool, spec: str) -> None:
        """Every unit of one target: scores, the ground-truth fine-tunes, the baseline(s)."""
        self.untimed_target(pool, spec)
        self.timed_references(pool, spec)

    def untimed_target(self, pool: AdapterPool, spec: str, stop_at: float = math.inf) -> None:
        """A target's units whose seconds feed no time ratio: scores, the reference scores, the
        warm-start fine-tunes (what :mod:`adapterpool.bench.executor` spreads over a cluster);
        no converged warm start starts after ``stop_at`` (``time.time()``)."""
        self.score_target(pool, spec)
        self.reference_target(pool, spec)
        if is_text2text(self.config):
            trivial_target(self, pool, spec)
        if self.config.ground_truth_max_epochs:
            from .ground_truth import run_ground_truth

            run_ground_truth(self, pool, spec, units=("gt_finetune",), stop_at=stop_at)
            return
        self.finetune_target(pool, spec)

    def timed_references(self, pool: AdapterPool, spec: str, stop_at: float = math.inf) -> None:
        """The units every time ratio divides by: standard LoRA (each ground-truth seed) and the
        peers; a parallel run computes them alone on a node, beside the target's strategy runs.
        With a converged ground truth no unit starts after ``stop_at`` (``time.time()``)."""
        if self.config.ground_truth_max_epochs:
            from .ground_truth import TIMED_UNITS, run_ground_truth

            run_ground_truth(self, pool, spec, units=TIMED_UNITS, stop_at=stop_at)
            return
        self.baseline_target(pool, spec)

    def target_task(self, spec: str) -> Task:
        """The target's task, its description recorded (the report's setup reads it) with the
        share of its most frequent test label (what predicting one class scores: the payoff
        report's floor for "standard LoRA learns this target at all")."""
        task = self._task(spec, max_test=self.config.max_test)
        described = task.describe()
        split = task.test if task.test is not None and len(task.test) else task.validation
        labels = getattr(split, "label", None)
        if labels is not None and len(labels) and isinstance(labels[0], int | np.integer):
            described["majority_test"] = float(np.bincount(np.asarray(labels)).max() / len(labels))
        self.state.put(described, "targets", task_key(spec), "task")
        return task

    def score_target(self, pool: AdapterPool, spec: str) -> None:
        key = task_key(spec)
        if self.state.get("targets", key, "scores") is not None:
            return
        task = self.target_task(spec)
        candidates = self.candidates_for(pool, key)
        self.announce(f"[bold]target[/bold] {key}: scoring {len(candidates)} candidates with "
                       f"{len(self.config.metrics)} metrics")
        with EnergyMeter(enabled=self.measure_energy) as meter:
            scores = score_candidates(
                pool, candidates, task, load_tokenizer(pool.base_model), self.config.metrics,
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

    def reference_target(self, pool: AdapterPool, spec: str) -> None:
        """The bare base model's scores on the same sample: what "is any candidate related"
        measures a candidate's score against (feature metrics only)."""
        key = task_key(spec)
        if self.state.get("targets", key, "reference") is not None:
            return
        task = self.target_task(spec)
        start = time.perf_counter()
        scores = reference_scores(pool.base_model, task, load_tokenizer(pool.base_model),
                                  self.config.metrics, max_samples=self.config.scoring_samples,
                                  max_length=self.config.max_length, seed=self.config.seed)
        self.state.computed["reference"] += 1
        self.state.put({"scores": scores, "seconds": time.perf_counter() - start},
                       "targets", key, "reference")

    def finetune_target(self, pool: AdapterPool, spec: str) -> None:
        """The ground truth: ``transfer_epochs`` of fine-tuning from every candidate."""
        key = task_key(spec)
        todo = [r for r in self.candidates_for(pool, key)
                if not self.state.get("targets", key, "finetune", r.id)]
        if not todo:
            return
        task = self.target_task(spec)
        tokenizer = load_tokenizer(pool.base_model)
        for record in todo:
            self.announce(f"[bold]{key}[/bold] <- {record.task_name}: fine-tune "
                           f"{self.config.transfer_epochs} epochs from the adapter")
            set_seed(self.config.seed)
            model = warm_start_model(pool.base_model, task.label_names, pool.adapter_dir(record.id),
                                     kind=task.kind)
            result = train(model, task, tokenizer, self._train_config(self.config.transfer_epochs),
                           description=f"{key} <- {record.task_name}",
                           show_progress=self.show_progress, measure_energy=self.measure_energy)
            self.state.trained += 1
            self.state.computed["finetune"] += 1
            self.state.put(result_record(result), "targets", key, "finetune", record.id)

    def baseline_target(self, pool: AdapterPool, spec: str) -> None:
        key = task_key(spec)
        if self.state.get("targets", key, "baseline") is not None:
            return
        task = self.target_task(spec)
        self.announce(f"[bold]{key}[/bold]: standard LoRA baseline, early stopping, at most "
                       f"{self.config.baseline_max_epochs} epochs")
        result = train_standard(task, pool.base_model, self._baseline_config(), peft=self.peft(),
                                description=f"{key} standard LoRA",
                                show_progress=self.show_progress,
                                measure_energy=self.measure_energy)
        self.state.trained += 1
        self.state.computed["baseline"] += 1
        self.state.put(result_record(result), "targets", key, "baseline")

    def strategy_config(self, spec: str, seed: int, threshold: float) -> AdaptConfig:
        """The loop as a user would run it with ``--strategy spec``, sized like the bench; its
        fallback trains like the reference it is divided by (with a converged ground truth, like
        ``gt_baseline``: same evaluations an epoch and patience)."""
        if self.config.ground_truth_max_epochs:
            from .ground_truth import ground_truth_config

            fallback = ground_truth_config(self, seed, self.config.baseline_max_epochs)
        else:
            fallback = self._baseline_config()
        return AdaptConfig(
            metric=self.config.strategy_metric, subset=self.config.subset,
            subset_strategy=self.config.strategy_subset,
            max_tries=self.config.max_tries, threshold=threshold,
            transfer_epochs=self.config.transfer_epochs,
            max_samples=self.config.strategy_scoring_samples or self.config.scoring_samples,
            fallback=fallback, strategy=spec, seed=seed,
        )

    def fallback_peft(self):
        """The loop runs' fallback method: the run's own (standard LoRA), or the recipe of the
        peer ``strategy_fallback`` names (issue 23: the fallback takes a peer's recipe when that
        peer reaches standard LoRA's accuracy fastest)."""
        if self.config.strategy_fallback is None:
            return self.peft()
        from .ground_truth import peer_config

        return peer_config(self, self.config.strategy_fallback)

    def reference_validation(self, key: str) -> float | None:
        """Standard LoRA's validation accuracy on target ``key``, of which the strategies'
        threshold is ``threshold_fraction``: the baseline's, or with a converged ground truth the
        mean over every seed of ``gt_baseline`` (None until they are all recorded)."""
        if not self.config.ground_truth_max_epochs:
            baseline = self.state.get("targets", key, "baseline")
            return None if baseline is None else baseline["validation"]["accuracy"]
        runs = {s: self.state.get("targets", key, "gt_baseline", str(s))
                for s in self.config.ground_truth_seeds}
        if any(r is None for r in runs.values()):
            return None
        return validation_level(runs)

    def run_strategies(self, pool: AdapterPool, spec: str,
                       seeds: list[int] | None = None) -> None:
        """Each strategy x seed (``strategy_seeds``, or ``seeds``): the real ``adapt`` on the
        leave-one-out pool, one unit each."""
        key = task_key(spec)
        if not self.config.strategies:
            return
        reference = self.reference_validation(key)
        if reference is None:
            return
        task = None
        view = PoolView(pool, {r.id for r in self.candidates_for(pool, key)})
        threshold = self.config.threshold_fraction * reference
        for strategy in self.config.strategies:
            for seed in self.config.strategy_seeds if seeds is None else seeds:
                if self.state.get("targets", key, "strategies", strategy, str(seed)):
                    continue
                task = task or self._task(spec, max_test=self.config.max_test)
                self.announce(f"[bold]{key}[/bold]: loop with strategy {strategy}, seed {seed}")
                result = adapt(task, view, self.strategy_config(strategy, seed, threshold),
                               peft=self.fallback_peft(), show_progress=self.show_progress,
                               measure_energy=self.measure_energy)
                self.state.trained += 1
                self.state.computed["strategy"] += 1
                self.state.put(_strategy_record(result.report), "targets", key, "strategies",
                               strategy, str(seed))

    def run(self) -> dict:
        sources, targets = self.config.all_sources(), self.config.all_targets()
        if not targets:
            raise UsageError("bench: no targets (set `discover` or `targets`)")
        self._count_units(sources, targets)
        console.print(f"bench: {len(sources)} pool members, {len(targets)} targets, "
                      f"{self.units_total} units to compute; state in {self.state.path}")
        pool = self.build_pool()
        for spec in targets:
            self.run_target(pool, spec)
        for spec in self.config.strategy_target_specs():
            self.run_strategies(pool, spec)
        return self.state.data
