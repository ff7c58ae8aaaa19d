"""Metrics against their papers' definitions: hand-computed cases, invariants, known limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from adapterpool import metrics as M
from adapterpool.metrics.logme import logme_columns, logme_single, spectrum

FEATURE_METRICS = ["h-score", "regularized-h-score", "logme", "nleep", "transrate", "gbc", "knn",
                   "linear-probe"]


def blobs(n=240, d=8, classes=3, separation=4.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * separation
    return centres[y] + rng.normal(size=(n, d)), y


def probs_from(features, classes=4, seed=1):
    w = np.random.default_rng(seed).normal(size=(features.shape[1], classes))
    logits = features @ w
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- NCE -----------------------------------------------------------------------------------------
def test_nce_hand_computed():
    # Z = [0,0,1,1], Y = [0,1,1,1]: H(Y|Z=0) = log 2 (half/half), H(Y|Z=1) = 0; P(Z=0) = 1/2
    # => NCE = -(1/2) log 2
    assert M.nce([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(-0.5 * math.log(2))


def test_nce_limits():
    y = np.array([0, 1, 2, 0, 1, 2, 2, 2])
    assert M.nce(y + 10, y) == pytest.approx(0.0)  # Z determines Y
    p = np.bincount(y) / len(y)
    assert M.nce(np.zeros(8), y) == pytest.approx(np.sum(p * np.log(p)))  # constant Z: -H(Y)
    assert M.nce(np.arange(8) % 3, y) <= 0


# -- LEEP ----------------------------------------------------------------------------------------
def test_leep_one_hot_source_equal_to_target_is_zero():
    y = np.array([0, 1, 1, 2, 0])
    assert M.leep(np.eye(3)[y], y) == pytest.approx(0.0)


def test_leep_uniform_source_is_minus_target_entropy():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.bincount(y) / len(y)
    assert M.leep(np.full((6, 4), 0.25), y) == pytest.approx(np.sum(p * np.log(p)))


def test_leep_hand_computed_two_samples():
    # theta = [[.8,.2],[.4,.6]], y = [0,1]. P(y,z) = 1/2 [[.8,.2],[.4,.6]] rows y; P(z) = [.6,.4]
    # P(y=0|z) = [.4/.6, .1/.4] = [2/3, 1/4]; P(y=1|z) = [1/3, 3/4]
    # sample 0: .8*2/3 + .2*1/4 = 0.58333; sample 1: .4*1/3 + .6*3/4 = 0.58333
    theta = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert M.leep(theta, ["a", "b"]) == pytest.approx(math.log(0.5833333333333334))


# -- H-score -------------------------------------------------------------------------------------
def test_h_score_one_dimensional_closed_form():
    # f = [0, 2, 4, 6], y = [0, 0, 1, 1]: var(f) = 5, class means 1 and 5 -> var(E[f|y]) = 4
    assert M.h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), [0, 0, 1, 1]) == pytest.approx(0.8)


def test_h_score_is_affine_invariant():
    x, y = blobs(d=5)
    a = np.random.default_rng(3).normal(size=(5, 5)) + 3 * np.eye(5)
    assert M.h_score(x @ a + 7.0, y) == pytest.approx(M.h_score(x, y), rel=1e-8)


def test_regularized_h_score_is_bounded_by_h_score_and_stable_when_wide():
    x, y = blobs(n=60, d=8)
    assert M.regularized_h_score(x, y) <= M.h_score(x, y) + 1e-9
    wide = np.random.default_rng(0).normal(size=(20, 100))  # dims > samples
    value = M.regularized_h_score(wide, np.arange(20) % 2)
    assert np.isfinite(value) and value < 1.0


# -- LogME ---------------------------------------------------------------------------------------
def _direct_log_evidence(f, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T / alpha): the marginal likelihood, computed directly."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    return multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y)


@pytest.mark.parametrize("n, d", [(12, 3), (5, 9)])
def test_logme_evidence_matches_direct_marginal_likelihood_at_its_optimum(n, d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = (rng.random(n) > 0.5).astype(float)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    value, alpha, beta = logme_single(s**2, u.T @ y, float(y @ y), n, d)
    assert value == pytest.approx(_direct_log_evidence(f, y, alpha, beta) / n, rel=1e-8)
    # and it is the maximum: a grid around (alpha, beta) never does better
    for da in (0.5, 0.9, 1.1, 2.0):
        for db in (0.5, 0.9, 1.1, 2.0):
            assert _direct_log_evidence(f, y, alpha * da, beta * db) / n <= value + 1e-9


def test_logme_mean_over_one_hot_columns():
    x, y = blobs(n=30, d=4, classes=3)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    onehot = np.eye(3)[y]
    expected = np.mean([logme_single(s**2, u.T @ onehot[:, c], float(onehot[:, c].sum()), 30, 4)[0]
                        for c in range(3)])
    assert M.logme(x, y) == pytest.approx(expected)


def _svd_logme_reference(f: np.ndarray, y: np.ndarray) -> float:
    """LogME as the paper writes it: SVD of the N x D features, one class at a time, in scalars.

    Independent of the library's Gram-matrix route, so that shortcut is checked against it.
    """
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2, k = s**2, len(s)

    def terms(alpha: float, beta: float, z: np.ndarray, y_sq: float) -> tuple[float, float, float]:
        denom = alpha + beta * s2
        m_sq = np.sum((beta * s * z / denom) ** 2)
        res = np.sum((alpha * z / denom) ** 2) + max(y_sq - np.sum(z**2), 0.0)
        ev = (0.5 * n * np.log(beta) + 0.5 * d * np.log(alpha) - 0.5 * n * np.log(2 * np.pi)
              - 0.5 * beta * res - 0.5 * alpha * m_sq
              - 0.5 * (np.sum(np.log(denom)) + (d - k) * np.log(alpha)))
        return ev, m_sq, res

    values = []
    for c in range(y.max() + 1):
        t = (y == c).astype(float)
        z, y_sq = u.T @ t, float(t @ t)
        alpha = beta = 1.0
        for _ in range(1000):
            gamma = np.sum(beta * s2 / (alpha + beta * s2))
            _, m_sq, res = terms(alpha, beta, z, y_sq)
            new_alpha, new_beta = gamma / m_sq, (n - gamma) / res
            done = abs(new_alpha - alpha) / alpha < 1e-7 and abs(new_beta - beta) / beta < 1e-7
            alpha, beta = new_alpha, new_beta
            if done:
                break
        values.append(terms(alpha, beta, z, y_sq)[0] / n)
    return float(np.mean(values))


@pytest.mark.parametrize("n, d, classes, rank", [
    (400, 30, 4, None),  # N > D: eigendecomposition of F^T F
    (25, 60, 3, None),  # N < D: eigendecomposition of F F^T
    (300, 24, 3, 12),  # N > D, rank-deficient F (half its columns are combinations of the rest)
    (20, 40, 2, 8),  # N < D, rank-deficient
])
def test_logme_gram_route_matches_svd_reference(n, d, classes, rank):
    rng = np.random.default_rng(n + d)
    y = np.arange(n) % classes
    f = rng.normal(size=(classes, d))[y] + 2.0 * rng.normal(size=(n, d))
    if rank is not None:
        f = f[:, :rank] @ rng.normal(size=(rank, d))
    assert M.logme(f, y) == pytest.approx(_svd_logme_reference(f, y), rel=1e-6)


def test_logme_stays_finite_when_features_fit_a_label_exactly():
    # N < D: F F^T is invertible, a column can be fitted exactly and the evidence rises towards
    # beta = infinity; the iteration must stop at a finite, correct evidence (the SVD route of
    # the reference breaks down to NaN on this very case)
    rng = np.random.default_rng(23)
    y = np.arange(16) % 3
    f = rng.normal(size=(3, 83))[y] * 2.0 + rng.normal(size=(16, 83))
    value = M.logme(f, y)
    assert np.isfinite(value)
    onehot = np.eye(3)[y]
    s2, z = spectrum(f, onehot)
    values, alphas, betas = logme_columns(s2, z, onehot.sum(axis=0), 16, 83)
    for c in range(3):
        direct = _direct_log_evidence(f, onehot[:, c], alphas[c], betas[c]) / 16
        assert values[c] == pytest.approx(direct, rel=1e-6)


# -- shared invariants ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FEATURE_METRICS)
def test_separable_features_score_higher_than_shuffled_labels(name):
    x, y = blobs()
    shuffled = np.random.default_rng(5).permutation(y)
    good = M.compute_metric(name, features=x, source_probs=None, labels=y)
    bad = M.compute_metric(name, features=x, source_probs=None, labels=shuffled)
    assert good > bad


@pytest.mark.parametrize("name", [n for n, s in M.METRICS.items() if "single" in s.kinds])
def test_relabelling_and_sample_order_do_not_matter(name):
    x, y = blobs(n=90)
    probs = probs_from(x)

    def score(features, source_probs, labels):  # *-layers metrics read the same features here
        return M.compute_metric(name, features=features, source_probs=source_probs,
                                labels=labels, layer_features=features)

    base = score(x, probs, y)
    renamed = np.array(["c", "a", "b"])[y]  # labels renamed and reordered
    assert score(x, probs, renamed) == pytest.approx(base, rel=1e-6, abs=1e-9)
    if name in ("nleep", "linear-probe"):
        return  # their seeded fits depend on sample order by design
    perm = np.random.default_rng(2).permutation(len(y))
    assert score(x[perm], probs[perm], y[perm]) == pytest.approx(base, rel=1e-6, abs=1e-9)


def test_nleep_is_deterministic_for_a_seed():
    x, y = blobs()
    assert M.nleep(x, y, seed=1) == M.nleep(x, y, seed=1)
    assert M.nleep(x, y) <= 0


def test_gbc_limits():
    x, y = blobs(d=4)
    assert M.gbc(x, y) <= 0
    assert M.gbc(x * 1000, y) == pytest.approx(M.gbc(x, y), rel=1e-4)  # D_B is scale-invariant
    far, y_far = blobs(d=4, separation=100.0)
    assert M.gbc(far, y_far) == pytest.approx(0.0, abs=1e-6)  # far-apart classes
    same = np.random.default_rng(0).normal(size=(400, 3))
    # identical distributions: every coefficient near 1, C(C-1) = 2 ordered pairs
    assert M.gbc(same, np.arange(400) % 2) == pytest.approx(-2.0, abs=0.05)


def test_transrate_hand_checked_and_nonnegative():
    x, y = blobs(d=4)
    eps = 1e-4

    def rate(z):
        return 0.5 * np.linalg.slogdet(np.eye(4) + z.T @ z / (len(z) * eps))[1]

    z = x - x.mean(axis=0)
    expected = rate(z) - sum(np.mean(y == k) * rate(z[y == k]) for k in range(3))
    assert M.transrate(x, y) == pytest.approx(expected)
    assert M.transrate(x, y) > 0


def test_knn_and_linear_probe_are_accuracies():
    x, y = blobs(separation=20.0)
    assert M.knn_accuracy(x, y) == 1.0
    assert M.linear_probe_accuracy(x, y) == 1.0
    # hand case: 1-NN on a line, each point's neighbour is its pair -> all right
    line = np.array([[0.0], [0.1], [5.0], [5.1]])
    assert M.knn_accuracy(line, [0, 0, 1, 1], k=1) == 1.0
    assert M.knn_accuracy(line, [0, 1, 0, 1], k=1) == 0.0


def test_ensemble_averages_normalised_ranks():
    result = M.ensemble({"a": [1.0, 2.0, 3.0], "b": [30.0, 10.0, 20.0], "c": [0.0, np.nan, 5.0]})
    # ranks/2: a [0, .5, 1], b [1, 0, .5], c [.5, 0, 1] (NaN lowest)
    np.testing.assert_allclose(result, [0.5, 1 / 6, 2.5 / 3])


# -- validation and registry ---------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: M.logme(np.ones(5), [0, 1, 0, 1, 0]), "2-D"),
    (lambda: M.logme(np.ones((5, 2)), [0, 1, 0]), "3 labels for 5 samples"),
    (lambda: M.h_score(np.ones((4, 2)), [1, 1, 1, 1]), "2 distinct classes"),
    (lambda: M.logme(np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1]), "NaN"),
    (lambda: M.leep(np.array([[0.5, 0.6], [0.5, 0.5]]), [0, 1]), "sum to 1"),
    (lambda: M.leep(np.array([[1.5, -0.5], [0.5, 0.5]]), [0, 1]), "negative"),
])
def test_bad_inputs_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_registry_names_and_routing():
    assert set(M.METRICS) >= {"nce", "h-score", "regularized-h-score", "leep", "logme", "nleep"}
    with pytest.raises(M.UnknownMetricError, match=r"did you mean 'logme'.*choose from: nce"):
        M.get_metric("logmee")
    x, y = blobs(n=60)
    probs = probs_from(x)
    assert M.compute_metric("leep", features=x, source_probs=probs, labels=y) == M.leep(probs, y)
    assert M.compute_metric("nce", features=x, source_probs=probs, labels=y) == \
        M.nce(probs.argmax(axis=1), y)
    assert M.compute_metric("logme", features=x, source_probs=probs, labels=y) == M.logme(x, y)
    # the *-layers metrics read the layer-averaged features, and say so when they are missing
    layers = x[:, ::-1].copy()
    assert M.compute_metric("logme-layers", features=x, source_probs=probs, labels=y,
                            layer_features=layers) == M.logme(layers, y)
    with pytest.raises(M.MetricInputError, match="averaged over layers"):
        M.compute_metric("knn-layers", features=x, source_probs=probs, labels=y)
