"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning"): the maximum evidence of Bayesian linear regression from features to each one-hot
label column, divided by N, averaged over classes. alpha and beta are found by the paper's
fixed-point updates, iterated to convergence.

Only the squared singular values of F and the projections of the labels on its left singular
vectors enter the evidence, so — as in the authors' fast version — they come from the
eigendecomposition of the smaller Gram matrix (F^T F when N > D, F F^T otherwise) instead of an
SVD of the N x D features: several times cheaper at N = 10,000, D = 768.
"""

from __future__ import annotations

import numpy as np

from .validation import feature_inputs

MAX_ITERATIONS = 1000
TOLERANCE = 1e-7
# Gram eigenvalues below this fraction of the largest (times the size) are rounding noise of a
# rank-deficient F; they are treated as exact zeros, which contribute nothing to the evidence.
RANK_TOLERANCE = 8 * np.finfo(np.float64).eps


def _evidence(
    alpha: np.ndarray, beta: np.ndarray, s2: np.ndarray, z: np.ndarray, y_sq_norm: np.ndarray,
    n: int, d: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log evidence and the two quantities the updates need, in the SVD basis of F.

    F = U S V^T (economy), z = U^T y, s2 = S^2 (k = min(n, d) values). ``z`` is (k, C): one
    column per target; alpha, beta and y_sq_norm have one value per column.
    """
    k = s2.shape[0]
    s2 = s2[:, None]
    denom = alpha + beta * s2  # (k, C)
    m_sq = np.sum((beta * np.sqrt(s2) * z / denom) ** 2, axis=0)  # ||m||^2
    # ||Fm - y||^2: inside the column space, plus what lies outside it
    outside = np.maximum(y_sq_norm - np.sum(z**2, axis=0), 0.0)
    residual = np.sum((alpha * z / denom) ** 2, axis=0) + outside
    logdet = np.sum(np.log(denom), axis=0) + (d - k) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * residual - 0.5 * alpha * m_sq - 0.5 * logdet
    )
    return evidence, m_sq, residual


def logme_columns(
    s2: np.ndarray, z: np.ndarray, y_sq_norm: np.ndarray, n: int, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`logme_single` for every column of ``z`` (k, C) at once: one numpy call per step for
    all classes rather than per class. A column stops updating once it has converged, so each
    follows exactly its own fixed-point sequence. Returns (evidence/n, alpha, beta), each (C,).
    """
    s2 = np.asarray(s2, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    y_sq_norm = np.asarray(y_sq_norm, dtype=np.float64)
    columns = z.shape[1]
    alpha, beta = np.ones(columns), np.ones(columns)
    active = np.arange(columns)
    for _ in range(MAX_ITERATIONS):
        a, b, za = alpha[active], beta[active], z[:, active]
        gamma = np.sum(b * s2[:, None] / (a + b * s2[:, None]), axis=0)
        _, m_sq, residual = _evidence(a, b, s2, za, y_sq_norm[active], n, d)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            new_a = gamma / np.maximum(m_sq, 1e-300)
            new_b = (n - gamma) / np.maximum(residual, 1e-300)
        # When F can fit a column exactly (N <= D), the evidence rises towards beta = infinity
        # and n - gamma rounds to 0 on the way: such a column stops at its last usable iterate,
        # within rounding of the supremum, instead of breaking down to alpha or beta = 0.
        usable = np.isfinite(new_a) & np.isfinite(new_b) & (new_a > 0) & (new_b > 0)
        new_a, new_b = np.where(usable, new_a, a), np.where(usable, new_b, b)
        converged = (np.abs(new_a - a) / a < TOLERANCE) & (np.abs(new_b - b) / b < TOLERANCE)
        alpha[active], beta[active] = new_a, new_b
        active = active[~(converged | ~usable)]
        if active.size == 0:
            break
    evidence, _, _ = _evidence(alpha, beta, s2, z, y_sq_norm, n, d)
    return evidence / n, alpha, beta


def logme_single(
    s2: np.ndarray, z: np.ndarray, y_sq_norm: float, n: int, d: int
) -> tuple[float, float, float]:
    """Maximised log evidence / n for one target column; returns (evidence/n, alpha, beta)."""
    value, alpha, beta = logme_columns(s2, np.asarray(z)[:, None], np.array([y_sq_norm]), n, d)
    return float(value[0]), float(alpha[0]), float(beta[0])


def spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared singular values of ``f`` (k = min(N, D)) and ``U^T targets`` (k, C), from the
    eigendecomposition of the smaller Gram matrix rather than an SVD of ``f``.

    N >= D: F^T F = V S^2 V^T and U^T Y = S^-1 V^T (F^T Y). N < D: F F^T = U S^2 U^T. Directions
    with (numerically) zero singular value get s2 = 0 and z = 0: with s2 = 0 a direction adds
    nothing to the evidence whatever its z, the label mass there is counted as outside the
    column space (``y_sq_norm - sum z^2``), exactly as the SVD's arbitrary basis of it would.
    """
    n, d = f.shape
    if n >= d:
        s2, v = np.linalg.eigh(f.T @ f)
        kept = s2 > RANK_TOLERANCE * d * max(s2[-1], 0.0)
        s2 = np.where(kept, s2, 0.0)
        projected = v.T @ (f.T @ targets)  # = S U^T Y
        z = np.where(kept[:, None], projected / np.sqrt(np.where(kept, s2, 1.0))[:, None], 0.0)
    else:
        s2, u = np.linalg.eigh(f @ f.T)
        kept = s2 > RANK_TOLERANCE * n * max(s2[-1], 0.0)
        s2 = np.where(kept, s2, 0.0)
        z = u.T @ targets
    return s2, z


def logme(features, labels) -> float:
    """Mean over classes of the maximum log evidence per sample; higher transfers better."""
    f, y, n_classes = feature_inputs(features, labels)
    n, d = f.shape
    onehot = np.eye(n_classes)[y]
    s2, z_all = spectrum(f, onehot)  # (k,), (k, C)
    values, _, _ = logme_columns(s2, z_all, onehot.sum(axis=0), n, d)
    return float(np.mean(values))
