"""How good a ranking is, against the accuracies that fine-tuning from each candidate reached;
and what the loop would have cost and achieved, replayed from those recorded fine-tunes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr, weightedtau


def ranking_quality(scores: list[float], accuracies: list[float]) -> dict:
    """Weighted Kendall tau, Pearson, top-1 hit, regret@1 and regret@3 (accuracy points)."""
    scores_arr = np.asarray(scores, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    filled = np.where(np.isnan(scores_arr), -np.inf, scores_arr)
    order = np.argsort(-filled, kind="stable")
    best = acc.max()
    finite = np.isfinite(scores_arr)
    tau = weightedtau(filled if finite.all() else np.where(finite, scores_arr, -1e300), acc)[0]
    pearson = (
        pearsonr(scores_arr[finite], acc[finite])[0]
        if finite.sum() > 2 and np.ptp(scores_arr[finite]) > 0 and np.ptp(acc[finite]) > 0
        else math.nan
    )
    return {
        "weighted_tau": float(tau),
        "pearson": float(pearson),
        "top1_hit": float(acc[order[0]] == best),
        "regret_at_1": float(100 * (best - acc[order[0]])),
        "regret_at_3": float(100 * (best - acc[order[:3]].max())),
    }


@dataclass
class Candidate:
    """One recorded fine-tune from a pool adapter on a target."""

    adapter_id: str
    score: float
    score_seconds: float
    validation_accuracy: float
    test_accuracy: float
    train_seconds: float
    kwh: float


@dataclass
class Baseline:
    validation_accuracy: float
    test_accuracy: float
    train_seconds: float
    kwh: float


def simulate_loop(
    candidates: list[Candidate], baseline: Baseline, *, subset: int, max_tries: int,
    threshold: float, seed: int,
) -> dict:
    """Replay adapt: seeded subset of N, best-first K tries against the threshold, then fallback."""
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), min(subset, len(candidates)),
                                                       replace=False))]
    ranked = sorted(chosen, key=lambda c: (math.isnan(c.score), -c.score if not math.isnan(c.score) else 0))
    seconds = sum(c.score_seconds for c in chosen)
    kwh = 0.0
    for tries, candidate in enumerate(ranked[:max_tries], 1):
        seconds += candidate.train_seconds
        kwh += candidate.kwh
        if candidate.validation_accuracy >= threshold:
            return {"outcome": "transfer", "tries": tries, "test_accuracy": candidate.test_accuracy,
                    "seconds": seconds, "kwh": kwh, "adapter_id": candidate.adapter_id}
    return {"outcome": "standard_lora", "tries": min(max_tries, len(ranked)),
            "test_accuracy": baseline.test_accuracy, "seconds": seconds + baseline.train_seconds,
            "kwh": kwh + baseline.kwh, "adapter_id": None}


def loop_versus_standard(runs: list[dict], baseline: Baseline) -> dict:
    """Mean ratios of the loop's accuracy, wall time and energy to standard LoRA's."""
    return {
        "accuracy_ratio": float(np.mean([r["test_accuracy"] for r in runs]) / baseline.test_accuracy),
        "time_ratio": float(np.mean([r["seconds"] for r in runs]) / baseline.train_seconds),
        "energy_ratio": (
            float(np.mean([r["kwh"] for r in runs]) / baseline.kwh) if baseline.kwh else math.nan
        ),
        "transfer_rate": float(np.mean([r["outcome"] == "transfer" for r in runs])),
        "mean_tries": float(np.mean([r["tries"] for r in runs])),
    }
