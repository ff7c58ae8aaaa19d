"""``report.json``: what one ``adapt`` run did, JSON-able (the same dict ``AdaptResult.report``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from peft import PeftConfig

from .. import __version__
from ..config import AdaptConfig
from ..models.peft_methods import config_json, method_name
from ..pool import Pool
from ..ranking.rank import RankResult, json_number
from ..tasks import Task
from .attempts import Attempt, Outcome


def build_report(task: Task, pool: Pool, config: AdaptConfig, ranking: RankResult,
                 attempts: list[Attempt], final: Attempt | None, outcome: Outcome,
                 skipped: dict | None, start: float, *, start_cpu: float | None = None,
                 scoring_cpu: float | None = None, processes: int = 1,
                 peft: PeftConfig | None = None, strategies: dict | None = None) -> dict:
    """report.json's content; ``strategies``: each registered strategy's field (LoopRun.report:
    composition's members and weights, warm-fallback's choice, ...), None where not selected."""
    energy = ranking.energy
    for attempt in attempts:
        energy = energy + attempt.result.energy
    return {
        "adapterpool_version": __version__,
        "seed": config.seed,
        "base_model": pool.base_model,
        "task": task.describe() | {"source": task.source, "notes": task.notes},
        "metric": config.metric,
        "threshold": {"metric": config.threshold_metric, "value": config.threshold},
        "strategy": list(config.strategy),
        "subset_strategy": config.subset_strategy,
        "prefilter": ranking.prefilter,
        "subset": ranking.subset,
        "scores": [
            {
                "adapter_id": s.adapter_id,
                "source_task": s.source_task,
                "score": json_number(s.scores[config.metric]),
                "seconds": s.seconds,
                "error": s.error,
            }
            for s in ranking.scores
        ],
        "warnings": ranking.warnings,
        "skipped": skipped,
        # pool adapters never drawn: another base model or PEFT type than the fallback's method
        "incompatible": ranking.incompatible,
        **(strategies or {}),
        # "final": the attempt whose adapter is the result (passing, else the best)
        "attempts": [a.as_json() | {"final": a is final} for a in attempts],
        "outcome": outcome,
        "contributed_adapter_id": None,
        "timing": {
            "scoring_seconds": ranking.seconds,
            # CPU time before any training: the ranking and a strategy's skip decision
            "scoring_cpu_seconds": scoring_cpu,
            "training_seconds": sum(a.result.train_seconds for a in attempts),
            "total_seconds": time.perf_counter() - start,
            # this process's CPU time over the same span (scoring included)
            "total_cpu_seconds": (None if start_cpu is None
                                  else time.process_time() - start_cpu),
        },
        "energy": energy.as_report(),
        "settings": {
            "subset": config.subset,
            "max_tries": config.max_tries,
            "epochs": config.transfer_epochs,
            "max_samples": config.max_samples,
            "train": config.resolved_fallback().as_dict(),
            "config": config.to_dict(),
            "processes": processes,  # under `accelerate launch`, data parallel over this many
            "peft": None if peft is None else {"method": method_name(peft),
                                               "config": config_json(peft)},
        },
        "adapter_dir": None,
    }


def default_run_dir(task_name: str) -> Path:
    """Where the command line puts a run's report when ``--out`` is not given."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("adapterpool-runs") / f"{task_name}-{stamp}"
