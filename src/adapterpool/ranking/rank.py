"""``rank``: score a subset of the pool's adapters on a target task, best first (no training)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import SIMILARITIES, SUBSET_STRATEGIES
from ..errors import UsageError
from ..metrics import check_metric_kind
from ..models.build import check_base_fits, load_preprocessor
from ..models.warm_start import warm_start_problem
from ..pool import Pool
from ..pool.store import seeded_sample
from ..task_kinds import DEFAULT_SCORING_SAMPLES, get_kind
from ..tasks import Task
from ..training.energy import EnergyMeter, EnergyReading
from .scoring import CandidateScore, ranking_warnings, score_candidates


@dataclass
class RankResult:
    metrics: list[str]
    seed: int
    subset: list[str]
    scores: list[CandidateScore]
    seconds: float
    energy: EnergyReading
    n_samples: int
    # pool adapters not drawn because they cannot warm-start the loop's method, by reason
    incompatible: dict[str, int] = field(default_factory=dict)
    subset_strategy: str = "random"
    prefilter: dict | None = None  # stage 1 (subset_strategy "prefilter"): Prefilter.as_json()

    @property
    def warnings(self) -> list[str]:
        """Stage 1's warnings (adapters without a usable summary), then failed candidates."""
        return [*(self.prefilter or {}).get("warnings", []), *ranking_warnings(self.scores)]

    def as_json(self) -> dict:
        return {
            "seed": self.seed,
            "metrics": self.metrics,
            "subset_strategy": self.subset_strategy,
            "prefilter": self.prefilter,
            "subset": self.subset,
            "incompatible": self.incompatible,
            "n_samples": self.n_samples,
            "seconds": self.seconds,
            "scores": [
                {
                    "adapter_id": s.adapter_id,
                    "source_task": s.source_task,
                    "scores": {k: json_number(v) for k, v in s.scores.items()},
                    "seconds": s.seconds,
                    "error": s.error,
                }
                for s in self.scores
            ],
            "warnings": self.warnings,
        }


def json_number(value: float) -> float | None:
    """NaN (a candidate that could not be scored) as JSON null, which every reader accepts."""
    return None if value is None or math.isnan(value) else value


def rank(
    task: Task,
    pool: Pool,
    metrics: list[str] | str | None = None,
    *,
    subset: int = 5,
    seed: int = 0,
    max_samples: int | None = DEFAULT_SCORING_SAMPLES,
    max_length: int = 128,
    show_progress: bool = True,
    measure_energy: bool = True,
    peft_type: str | None = None,
    subset_strategy: str = "random",
    prefilter_similarity: str = "cosine",
) -> RankResult:
    """Score ``subset`` pool adapters on ``task``, best first: a seeded random draw
    (``subset_strategy="random"``), or the ``subset`` adapters of the whole pool whose task
    summaries are most similar to the target's (``"prefilter"``,
    :mod:`adapterpool.ranking.prefilter`).

    With ``peft_type`` (the loop's method) only adapters that can warm-start it (same base model
    and PEFT type) are drawn or prefiltered; the others are counted by reason. Adapters trained
    on a task of another family than ``task``'s kind (text2text, image, text classification) are
    never drawn, whatever ``peft_type``. ``metrics`` defaults to the task kind's ranking metric
    (``logme`` for classification, ``target-loglik`` for text2text: the kinds table).
    """
    if not metrics:
        metrics = [get_kind(task.kind).default_metric]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in metrics:
        check_metric_kind(name, task.kind)  # an unknown or inapplicable name fails before work
    if subset_strategy not in SUBSET_STRATEGIES or prefilter_similarity not in SIMILARITIES:
        raise UsageError(f"subset_strategy {subset_strategy!r} / prefilter_similarity "
                         f"{prefilter_similarity!r}: choose from {SUBSET_STRATEGIES} / "
                         f"{SIMILARITIES}")
    if subset_strategy == "prefilter" and not get_kind(task.kind).task_summary:
        raise UsageError(f"the prefilter compares text-classification task summaries; "
                         f"{task.kind} tasks have none (use subset_strategy 'random')")
    check_base_fits(pool.base_model, task.kind)
    records, incompatible = pool.list(), {}
    problems = {r.id: warm_start_problem(r, base_model=pool.base_model, kind=task.kind,
                                         peft_type=peft_type or r.peft_type)
                for r in records}
    records = [r for r in records if problems[r.id] is None]
    for reason in problems.values():
        if reason is not None:
            incompatible[reason] = incompatible.get(reason, 0) + 1
    stage1 = None
    populated = bool(records)
    tokenizer = load_preprocessor(pool.base_model, task.kind)
    with EnergyMeter(enabled=measure_energy and populated) as meter:
        if subset_strategy == "prefilter" and populated:
            from .prefilter import prefilter

            stage1 = prefilter(task, pool, subset, similarity=prefilter_similarity, seed=seed,
                               records=records)
            candidates = stage1.chosen
        else:
            candidates = seeded_sample(records, subset, seed) if populated else []
        scores = score_candidates(
            pool, candidates, task, tokenizer, metrics,
            max_samples=max_samples, max_length=max_length, seed=seed, show_progress=show_progress,
        ) if candidates else []
    n_samples = min(len(task.train), max_samples or len(task.train))
    return RankResult(
        metrics, seed, [c.id for c in candidates], scores, meter.reading.seconds, meter.reading,
        n_samples, incompatible, subset_strategy, stage1.as_json() if stage1 else None,
    )
