"""Cheap empirical probes of the features: leave-one-out kNN accuracy and cross-validated
linear-probe accuracy. Slower than the closed-form metrics, but they measure separability
directly."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .validation import feature_inputs

CHUNK = 1024


def knn_accuracy(features, labels, *, k: int = 5) -> float:
    """Leave-one-out accuracy of a Euclidean k-NN majority vote (ties: the smaller class index)."""
    f, y, n_classes = feature_inputs(features, labels)
    k = min(k, len(f) - 1)
    sq_norms = np.einsum("nd,nd->n", f, f)
    correct = 0
    for start in range(0, len(f), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(f)))
        distances = sq_norms[rows, None] + sq_norms[None, :] - 2.0 * (f[rows] @ f.T)
        distances[np.arange(len(rows)), rows] = np.inf  # leave the point itself out
        neighbours = np.argpartition(distances, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(rows), n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), k), y[neighbours].ravel()), 1.0)
        correct += int(np.sum(votes.argmax(axis=1) == y[rows]))
    return correct / len(f)


def linear_probe_accuracy(features, labels, *, folds: int = 5, seed: int = 0) -> float:
    """Mean stratified k-fold accuracy of a standardised L2 logistic regression."""
    f, y, _ = feature_inputs(features, labels)
    folds = max(2, min(folds, int(np.bincount(y).min())))
    if np.bincount(y).min() < 2:
        raise ValueError("linear-probe accuracy needs at least 2 examples of every class")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=200))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(probe, f, y, cv=splitter)))
