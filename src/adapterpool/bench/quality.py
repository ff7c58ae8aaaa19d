"""How good a ranking is, against the accuracies that fine-tuning from each candidate reached;
and what the loop would have cost and achieved, replayed from those recorded fine-tunes.

All accuracies are fractions in [0, 1]; regrets are reported in accuracy *points* (x 100).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import pearsonr, weightedtau

from ..pool.store import seeded_sample


def nanmean(values) -> float:
    """The mean of the values that are numbers (None and NaN left out); NaN when none is."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _ranked(scores: np.ndarray) -> np.ndarray:
    """Candidate indices best first; NaN scores last, ties kept in input order."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-filled, kind="stable")


def ranking_quality(scores: list[float], accuracies: list[float]) -> dict:
    """Weighted Kendall tau, Pearson, top-1 hit, regret@1 and regret@3 (accuracy points).

    Weighted tau is ``scipy.stats.weightedtau(scores, accuracies)`` (hyperbolic weights, so
    swaps among the top candidates cost most); a NaN score ranks below every finite one.
    Top-1 hit: the top-scored candidate reaches the best accuracy (ties count as hits).
    Regret@k: best accuracy minus the best accuracy among the k top-scored candidates.
    """
    scores_arr = np.asarray(scores, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    if scores_arr.shape != acc.shape or acc.size == 0:
        raise ValueError(f"need as many scores as accuracies, got {scores_arr.size} and {acc.size}")
    order = _ranked(scores_arr)
    best = acc.max()
    finite = np.isfinite(scores_arr)
    if finite.sum() >= 2 and np.ptp(scores_arr[finite]) > 0 and np.ptp(acc) > 0:
        low = scores_arr[finite].min() - 1.0 - abs(scores_arr[finite].min())
        tau = float(weightedtau(np.where(finite, scores_arr, low), acc)[0])
    else:
        tau = math.nan  # a constant ranking (or ground truth) says nothing
    pearson = (
        float(pearsonr(scores_arr[finite], acc[finite])[0])
        if finite.sum() > 2 and np.ptp(scores_arr[finite]) > 0 and np.ptp(acc[finite]) > 0
        else math.nan
    )
    return {
        "weighted_tau": tau,
        "pearson": pearson,
        "top1_hit": float(acc[order[0]] == best),
        "regret_at_1": float(100 * (best - acc[order[0]])),
        "regret_at_3": float(100 * (best - acc[order[:3]].max())),
    }


def random_ranking_quality(accuracies: list[float]) -> dict:
    """What a uniformly random ranking achieves in expectation (the reference row)."""
    acc = np.asarray(accuracies, dtype=np.float64)
    best = acc.max()
    k = min(3, acc.size)
    subsets = itertools.combinations(range(acc.size), k)
    regret3 = np.mean([best - max(acc[list(c)]) for c in subsets])
    return {
        "weighted_tau": 0.0,
        "pearson": 0.0,
        "top1_hit": float(np.mean(acc == best)),
        "regret_at_1": float(100 * np.mean(best - acc)),
        "regret_at_3": float(100 * regret3),
    }


@dataclass
class Candidate:
    """One recorded fine-tune from a pool adapter on a target, with the cost of scoring it."""

    adapter_id: str
    score: float
    score_seconds: float
    validation_accuracy: float
    test_accuracy: float
    train_seconds: float
    kwh: float
    co2_kg: float = 0.0
    score_kwh: float = 0.0
    score_co2_kg: float = 0.0


@dataclass
class Baseline:
    validation_accuracy: float
    test_accuracy: float
    train_seconds: float
    kwh: float
    co2_kg: float = 0.0


def seeded_subset(candidates: list[Candidate], subset: int, seed: int) -> list[Candidate]:
    """The pool's own draw (:func:`adapterpool.pool.store.seeded_sample`) over candidates."""
    return seeded_sample(candidates, subset, seed, key=lambda c: c.adapter_id)


def simulate_loop(
    candidates: list[Candidate], baseline: Baseline, *, subset: int, max_tries: int,
    threshold: float, seed: int,
) -> dict:
    """Replay ``adapt``: a seeded subset of N is scored (its cost counted), then best-first up to
    K warm-started fine-tunes, each checked against ``threshold`` on validation accuracy; if none
    passes, standard LoRA (its recorded cost and result) — exactly what ``adapt`` does.
    """
    chosen = seeded_subset(candidates, subset, seed)
    ranked = [chosen[i] for i in _ranked(np.array([c.score for c in chosen], dtype=np.float64))]
    seconds = sum(c.score_seconds for c in chosen)
    kwh = sum(c.score_kwh for c in chosen)
    co2 = sum(c.score_co2_kg for c in chosen)
    for tries, candidate in enumerate(ranked[:max_tries], 1):
        seconds += candidate.train_seconds
        kwh += candidate.kwh
        co2 += candidate.co2_kg
        if candidate.validation_accuracy >= threshold:
            return {"outcome": "transfer", "tries": tries, "test_accuracy": candidate.test_accuracy,
                    "seconds": seconds, "kwh": kwh, "co2_kg": co2,
                    "adapter_id": candidate.adapter_id}
    return {"outcome": "standard_lora", "tries": min(max_tries, len(ranked)),
            "test_accuracy": baseline.test_accuracy, "seconds": seconds + baseline.train_seconds,
            "kwh": kwh + baseline.kwh, "co2_kg": co2 + baseline.co2_kg, "adapter_id": None}


def _ratio(value: float, reference: float) -> float:
    return float(value / reference) if reference else math.nan


def loop_versus_standard(runs: list[dict], baseline: Baseline) -> dict:
    """Mean over subset seeds of the loop's accuracy, wall time, energy and CO2, each divided by
    standard LoRA's (ratio of means); plus how often a transfer passed and the tries it took."""
    return {
        "accuracy_ratio": _ratio(np.mean([r["test_accuracy"] for r in runs]),
                                 baseline.test_accuracy),
        "time_ratio": _ratio(np.mean([r["seconds"] for r in runs]), baseline.train_seconds),
        "energy_ratio": _ratio(np.mean([r["kwh"] for r in runs]), baseline.kwh),
        "co2_ratio": _ratio(np.mean([r.get("co2_kg", 0.0) for r in runs]), baseline.co2_kg),
        "transfer_rate": float(np.mean([r["outcome"] == "transfer" for r in runs])),
        "mean_tries": float(np.mean([r["tries"] for r in runs])),
        "accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
        "seconds": float(np.mean([r["seconds"] for r in runs])),
        "kwh": float(np.mean([r["kwh"] for r in runs])),
        "co2_kg": float(np.mean([r.get("co2_kg", 0.0) for r in runs])),
    }
