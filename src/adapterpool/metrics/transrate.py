"""TransRate (Huang et al. 2022, "Frustratingly Easy Transferability Estimation"): the coding
rate of all features minus the class-weighted coding rates within each class."""

from __future__ import annotations

import numpy as np

from .validation import feature_inputs


def coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z, eps) = 1/2 logdet(I + Z^T Z / (n eps)), as in the authors' code."""
    n, d = z.shape
    _, logdet = np.linalg.slogdet(np.eye(d) + (z.T @ z) / (n * eps))
    return 0.5 * float(logdet)


def transrate(features, labels, *, eps: float = 1e-4) -> float:
    """R(Z) - sum_k n_k/n R(Z_k) on centred features (the paper's definition)."""
    f, y, n_classes = feature_inputs(features, labels)
    f = f - f.mean(axis=0)
    within = sum(
        np.mean(y == k) * coding_rate(f[y == k], eps) for k in range(n_classes)
    )
    return coding_rate(f, eps) - within
