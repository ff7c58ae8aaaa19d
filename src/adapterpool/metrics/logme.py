"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning"): the maximum evidence of Bayesian linear regression from features to each one-hot
label column, divided by N, averaged over classes. alpha and beta are found by the paper's
fixed-point updates, iterated to convergence."""

from __future__ import annotations

import numpy as np

from ._validation import feature_inputs

MAX_ITERATIONS = 1000
TOLERANCE = 1e-7


def _evidence(alpha, beta, s2, z, y_sq_norm, n, d) -> tuple[float, float, float]:
    """Log evidence and the two quantities the updates need, in the SVD basis of F.

    F = U S V^T (economy), z = U^T y, s2 = S^2 (k = min(n, d) values).
    """
    k = len(s2)
    denom = alpha + beta * s2
    m_sq = np.sum((beta * np.sqrt(s2) * z / denom) ** 2)  # ||m||^2
    residual = np.sum((alpha * z / denom) ** 2) + max(y_sq_norm - np.sum(z**2), 0.0)  # ||Fm - y||^2
    logdet = np.sum(np.log(denom)) + (d - k) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * residual - 0.5 * alpha * m_sq - 0.5 * logdet
    )
    return float(evidence), float(m_sq), float(residual)


def logme_single(s2: np.ndarray, z: np.ndarray, y_sq_norm: float, n: int, d: int) -> tuple[float, float, float]:
    """Maximised log evidence / n for one target column; returns (evidence/n, alpha, beta)."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        gamma = float(np.sum(beta * s2 / (alpha + beta * s2)))
        _, m_sq, residual = _evidence(alpha, beta, s2, z, y_sq_norm, n, d)
        new_alpha = gamma / max(m_sq, 1e-300)
        new_beta = (n - gamma) / max(residual, 1e-300)
        converged = (
            abs(new_alpha - alpha) / alpha < TOLERANCE and abs(new_beta - beta) / beta < TOLERANCE
        )
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    evidence, _, _ = _evidence(alpha, beta, s2, z, y_sq_norm, n, d)
    return evidence / n, alpha, beta


def logme(features, labels) -> float:
    """Mean over classes of the maximum log evidence per sample; higher transfers better."""
    f, y, n_classes = feature_inputs(features, labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s**2
    onehot = np.eye(n_classes)[y]
    z_all = u.T @ onehot  # (k, C)
    return float(np.mean([
        logme_single(s2, z_all[:, c], float(onehot[:, c] @ onehot[:, c]), n, d)[0]
        for c in range(n_classes)
    ]))
