"""Input checks shared by every metric: clear errors, float64 arrays, labels mapped to 0..C-1."""

from __future__ import annotations

import numpy as np

from ..errors import MetricInputError


def encode_labels(labels, n: int | None = None) -> tuple[np.ndarray, int]:
    """Any label values (ints, strings) -> 0..C-1, and C; at least two classes."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise MetricInputError(f"labels must be 1-D, got shape {labels.shape}")
    if n is not None and len(labels) != n:
        raise MetricInputError(f"{len(labels)} labels for {n} samples")
    if len(labels) < 2:
        raise MetricInputError(f"need at least 2 samples, got {len(labels)}")
    classes, encoded = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise MetricInputError(f"need at least 2 distinct classes, got {len(classes)}")
    return encoded.astype(np.int64), len(classes)


def check_features(features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise MetricInputError(f"features must be 2-D (samples x dims), got shape {features.shape}")
    if features.shape[0] < 2:
        raise MetricInputError(f"need at least 2 samples, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise MetricInputError("features contain NaN or infinite values")
    return features


def check_probs(probs) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise MetricInputError(f"source probabilities must be 2-D, got shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise MetricInputError("source probabilities contain NaN or infinite values")
    if (probs < 0).any():
        raise MetricInputError("source probabilities contain negative values")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
        raise MetricInputError(
            "source probabilities must sum to 1 in every row (pass softmax outputs)"
        )
    return probs


def feature_inputs(features, labels) -> tuple[np.ndarray, np.ndarray, int]:
    features = check_features(features)
    encoded, n_classes = encode_labels(labels, features.shape[0])
    return features, encoded, n_classes
