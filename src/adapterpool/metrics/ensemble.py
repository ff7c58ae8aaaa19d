"""Rank-average ensemble of several metrics: robust to their very different scales."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata


def ensemble(scores_by_metric: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Mean over metrics of each candidate's rank normalised to [0, 1] (best = 1; NaN = 0)."""
    if not scores_by_metric:
        raise ValueError("ensemble needs at least one metric")
    lengths = {len(v) for v in scores_by_metric.values()}
    if len(lengths) != 1:
        raise ValueError(f"every metric must score the same candidates, got lengths {lengths}")
    n = lengths.pop()
    if n == 0:
        return np.zeros(0)
    normalised = []
    for values in scores_by_metric.values():
        values = np.asarray(values, dtype=np.float64)
        filled = np.where(np.isnan(values), -np.inf, values)
        ranks = rankdata(filled, method="average")
        normalised.append((ranks - 1) / (n - 1) if n > 1 else np.ones(1))
    return np.mean(normalised, axis=0)
