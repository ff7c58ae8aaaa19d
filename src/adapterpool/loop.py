"""The transferability-guided loop: rank a random subset, warm-start from the best, check the
threshold, try the next, fall back to standard LoRA, contribute what passes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from accelerate.utils import set_seed
from peft import PeftModel

from . import DEFAULT_METRIC, __version__
from .energy import EnergyMeter, EnergyReading
from .errors import UsageError
from .metrics import get_metric
from .modeling import LoraSettings, load_tokenizer, new_model, save_adapter, warm_start_model
from .pool import AdapterPool
from .scoring import CandidateScore, score_candidates
from .tasks import Task
from .training import SELECTION_METRICS, TrainConfig, TrainResult, train


@dataclass
class RankResult:
    metrics: list[str]
    seed: int
    subset: list[str]
    scores: list[CandidateScore]
    seconds: float
    energy: EnergyReading
    n_samples: int

    def as_json(self) -> dict:
        return {
            "seed": self.seed,
            "metrics": self.metrics,
            "subset": self.subset,
            "n_samples": self.n_samples,
            "seconds": self.seconds,
            "scores": [
                {
                    "adapter_id": s.adapter_id,
                    "source_task": s.source_task,
                    "scores": s.scores,
                    "seconds": s.seconds,
                }
                for s in self.scores
            ],
        }


def rank(
    task: Task,
    pool: AdapterPool,
    metrics: list[str] | str = DEFAULT_METRIC,
    *,
    subset: int = 5,
    seed: int = 0,
    max_samples: int | None = 1000,
    max_length: int = 128,
    show_progress: bool = True,
    measure_energy: bool = True,
) -> RankResult:
    """Score a seeded random subset of ``subset`` pool adapters on ``task``, best first."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in metrics:
        get_metric(name)  # an unknown name fails before any work
    candidates = pool.sample(subset, seed) if pool.list() else []
    tokenizer = load_tokenizer(pool.base_model)
    with EnergyMeter(enabled=measure_energy and bool(candidates)) as meter:
        scores = score_candidates(
            pool, candidates, task, tokenizer, metrics,
            max_samples=max_samples, max_length=max_length, seed=seed, show_progress=show_progress,
        ) if candidates else []
    n_samples = min(len(task.train), max_samples or len(task.train))
    return RankResult(
        metrics, seed, [c.id for c in candidates], scores, meter.reading.seconds, meter.reading, n_samples
    )


@dataclass
class Attempt:
    kind: str  # "transfer" | "standard_lora"
    adapter_id: str | None
    result: TrainResult
    passed: bool

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "adapter_id": self.adapter_id,
            "epochs": round(self.result.epochs_run, 3),
            "train_seconds": self.result.train_seconds,
            "validation": self.result.validation,
            "test": self.result.test,
            "passed": self.passed,
            "energy": self.result.energy.as_report(),
            "history": self.result.history,
        }


@dataclass
class AdaptResult:
    report: dict
    model: PeftModel | None
    adapter_dir: Path | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.report["outcome"]


def adapter_metadata(task: Task, result: TrainResult, *, parent_id: str | None, seed: int) -> dict:
    """What travels with a trained adapter into ``adapterpool.json`` and the pool's catalog."""
    return {
        "adapterpool_version": __version__,
        "task": task.describe() | {"source": task.source},
        "metrics": {"validation": result.validation, "test": result.test},
        "parent_id": parent_id,
        "train_seconds": result.train_seconds,
        "energy_kwh": result.energy.kwh,
        "co2_kg": result.energy.co2_kg,
        "seed": seed,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def train_standard(
    task: Task,
    base_model: str | None,
    config: TrainConfig,
    *,
    lora: LoraSettings | None = None,
    description: str = "standard LoRA",
    show_progress: bool = True,
    measure_energy: bool = True,
) -> TrainResult:
    """Standard LoRA from scratch on ``task``: the baseline and the fallback."""
    set_seed(config.seed)
    model = new_model(base_model, task.label_names, (lora or LoraSettings()).to_peft())
    return train(
        model, task, load_tokenizer(base_model), config,
        description=description, show_progress=show_progress, measure_energy=measure_energy,
    )


def adapt(
    task: Task,
    pool: AdapterPool,
    *,
    metric: str = DEFAULT_METRIC,
    subset: int = 5,
    max_tries: int = 2,
    threshold: float = 0.0,
    threshold_metric: str = "accuracy",
    epochs: int = 2,
    train_config: TrainConfig | None = None,
    lora: LoraSettings | None = None,
    contribute: bool = False,
    out_dir: str | Path | None = None,
    seed: int = 0,
    max_samples: int | None = 1000,
    show_progress: bool = True,
    measure_energy: bool = True,
) -> AdaptResult:
    """Run the whole loop on ``task``; writes ``out_dir/report.json`` and ``out_dir/adapter/``."""
    if threshold_metric not in SELECTION_METRICS:
        raise UsageError(f"threshold metric {threshold_metric!r} unknown; use one of {SELECTION_METRICS}")
    if max_tries < 0:
        raise UsageError(f"max_tries must be >= 0, got {max_tries}")
    start = time.perf_counter()
    base_config = replace(train_config or TrainConfig(), seed=seed, selection_metric=threshold_metric)
    if max_tries > 0:
        ranking = rank(
            task, pool, [metric], subset=subset, seed=seed, max_samples=max_samples,
            max_length=base_config.max_length, show_progress=show_progress,
            measure_energy=measure_energy,
        )
    else:  # standard LoRA only (`adapterpool train`): nothing to rank
        ranking = RankResult([metric], seed, [], [], 0.0, EnergyReading(), 0)
    tokenizer = load_tokenizer(pool.base_model)
    attempts: list[Attempt] = []
    best: tuple[float, Attempt] | None = None

    def run(kind: str, adapter_id: str | None, model: PeftModel, config: TrainConfig) -> Attempt:
        nonlocal best
        label = f"{kind} {adapter_id or ''}".strip()
        result = train(
            model, task, tokenizer, config,
            description=label, show_progress=show_progress, measure_energy=measure_energy,
        )
        attempt = Attempt(kind, adapter_id, result, result.validation[threshold_metric] >= threshold)
        attempts.append(attempt)
        value = result.validation[threshold_metric]
        if best is None or value > best[0]:
            best = (value, attempt)
        return attempt

    passed: Attempt | None = None
    for candidate in ranking.scores[:max_tries]:
        set_seed(seed)
        model = warm_start_model(pool.base_model, task.label_names, pool.adapter_dir(candidate.adapter_id))
        attempt = run("transfer", candidate.adapter_id, model, replace(base_config, epochs=epochs))
        if attempt.passed:
            passed = attempt
            break
    if passed is None:
        set_seed(seed)
        model = new_model(pool.base_model, task.label_names, (lora or LoraSettings()).to_peft())
        attempt = run("standard_lora", None, model, base_config)
        passed = attempt if attempt.passed else None

    final = passed or (best[1] if best else None)
    out = Path(out_dir) if out_dir else default_run_dir(task.name)
    out.mkdir(parents=True, exist_ok=True)
    adapter_dir = None
    contributed = None
    if final is not None:
        meta = adapter_metadata(task, final.result, parent_id=final.adapter_id, seed=seed)
        adapter_dir = save_adapter(final.result.model, out / "adapter", meta)
        if contribute and passed is not None:
            contributed = pool.add(adapter_dir, parent_id=final.adapter_id).id
    energy = ranking.energy
    for attempt in attempts:
        energy = energy + attempt.result.energy
    report = {
        "adapterpool_version": __version__,
        "seed": seed,
        "base_model": pool.base_model,
        "task": task.describe() | {"source": task.source, "notes": task.notes},
        "metric": metric,
        "threshold": {"metric": threshold_metric, "value": threshold},
        "subset": ranking.subset,
        "scores": [
            {
                "adapter_id": s.adapter_id,
                "source_task": s.source_task,
                "score": s.scores[metric],
                "seconds": s.seconds,
            }
            for s in ranking.scores
        ],
        "attempts": [a.as_json() for a in attempts],
        "outcome": (
            "failed" if passed is None else ("transfer" if passed.kind == "transfer" else "standard_lora")
        ),
        "contributed_adapter_id": contributed,
        "timing": {
            "scoring_seconds": ranking.seconds,
            "training_seconds": sum(a.result.train_seconds for a in attempts),
            "total_seconds": time.perf_counter() - start,
        },
        "energy": energy.as_report(),
        "settings": {
            "subset": subset,
            "max_tries": max_tries,
            "epochs": epochs,
            "max_samples": max_samples,
            "train": base_config.as_dict(),
        },
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return AdaptResult(report, final.result.model if final else None, adapter_dir, attempts)


def default_run_dir(task_name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("adapterpool-runs") / f"{task_name}-{stamp}"
