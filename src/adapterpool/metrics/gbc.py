"""GBC (Pandy et al. 2022, "Transferability Estimation using Bhattacharyya Class Separability"):
minus the summed Bhattacharyya coefficients between per-class diagonal Gaussians."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from .validation import feature_inputs

PCA_DIMS = 64
VARIANCE_FLOOR = 1e-6


def gbc(features, labels, *, pca_dims: int | None = PCA_DIMS) -> float:
    """-sum_{i != j} exp(-D_B(i, j)); <= 0, near 0 for well separated classes.

    Features are first reduced to ``pca_dims`` (64 in the paper) when wider.
    """
    f, y, n_classes = feature_inputs(features, labels)
    if pca_dims and f.shape[1] > pca_dims and f.shape[0] > pca_dims:
        f = PCA(n_components=pca_dims, svd_solver="full").fit_transform(f)
    means = np.stack([f[y == k].mean(axis=0) for k in range(n_classes)])
    variances = np.stack([f[y == k].var(axis=0) for k in range(n_classes)]) + VARIANCE_FLOOR
    avg = 0.5 * (variances[:, None, :] + variances[None, :, :])  # (C, C, d)
    diff = means[:, None, :] - means[None, :, :]
    log_var = np.log(variances)
    distance = 0.125 * np.sum(diff**2 / avg, axis=-1) + 0.5 * (
        np.sum(np.log(avg), axis=-1) - 0.5 * (log_var.sum(-1)[:, None] + log_var.sum(-1)[None, :])
    )
    coefficient = np.exp(-distance)
    np.fill_diagonal(coefficient, 0.0)
    return float(-coefficient.sum())
