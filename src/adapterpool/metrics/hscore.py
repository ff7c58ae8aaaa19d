"""H-score (Bao et al. 2019, "An information-theoretic approach to transferability in task
transfer learning") and its shrinkage-regularised form (Ibrahim et al. 2022, "Newer is not always
better: rethinking transferability metrics, their peculiarities, stability and performance")."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from .validation import feature_inputs


def _class_mean_features(features: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """E[f | y] for every sample (each row replaced by its class mean)."""
    sums = np.zeros((n_classes, features.shape[1]))
    np.add.at(sums, y, features)
    means = sums / np.bincount(y, minlength=n_classes)[:, None]
    return means[y]


def h_score(features, labels) -> float:
    """tr(cov(f)^+ cov(E[f|y])); invariant to invertible affine maps of the features."""
    f, y, n_classes = feature_inputs(features, labels)
    f = f - f.mean(axis=0)
    cov_f = f.T @ f / len(f)
    g = _class_mean_features(f, y, n_classes)
    cov_g = g.T @ g / len(g)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def regularized_h_score(features, labels) -> float:
    """H-score with the Ledoit-Wolf shrunk feature covariance: tr(cov_LW^-1 (1 - a) cov(E[f|y]))."""
    f, y, n_classes = feature_inputs(features, labels)
    f = f - f.mean(axis=0)
    estimator = LedoitWolf(assume_centered=True).fit(f)
    g = _class_mean_features(f, y, n_classes)
    cov_g = g.T @ g / len(g)
    shrunk_inverse = np.linalg.pinv(estimator.covariance_, rcond=1e-15, hermitian=True)
    return float(np.trace(shrunk_inverse @ ((1.0 - estimator.shrinkage_) * cov_g)))
