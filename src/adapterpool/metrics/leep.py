"""LEEP, log expected empirical prediction (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate
Transferability of Learned Representations")."""

from __future__ import annotations

import numpy as np

from .validation import check_probs, encode_labels


def leep(source_probs, labels) -> float:
    """(1/n) sum_i log sum_z P(y_i|z) theta(x_i)_z with the empirical P(y, z)."""
    probs = check_probs(source_probs)
    y, n_classes = encode_labels(labels, probs.shape[0])
    joint = np.zeros((n_classes, probs.shape[1]))
    np.add.at(joint, y, probs)
    joint /= len(y)
    p_z = joint.sum(axis=0, keepdims=True)
    conditional = joint / np.where(p_z > 0, p_z, 1.0)  # P(y | z)
    expected = np.einsum("nz,nz->n", probs, conditional[y])
    # a convex combination of probabilities: <= 1 but for rounding, so LEEP <= 0 exactly
    return float(np.mean(np.log(np.clip(expected, np.finfo(np.float64).tiny, 1.0))))
