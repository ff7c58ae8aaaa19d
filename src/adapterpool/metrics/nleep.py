"""NLEEP (Li et al. 2021, "Ranking Neural Checkpoints"): LEEP where the source classifier is a
Gaussian mixture fitted on PCA-reduced features (80% of the variance, 5 components per target
class), so that it needs features only."""

from __future__ import annotations

from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from .leep import leep
from .validation import feature_inputs

COMPONENTS_PER_CLASS = 5


def nleep(features, labels, *, seed: int = 0) -> float:
    """LEEP over GMM posteriors. Diagonal covariances keep it stable and fast on 10k x 768."""
    f, y, n_classes = feature_inputs(features, labels)
    reduced = PCA(n_components=0.8, svd_solver="full").fit_transform(f)
    components = min(COMPONENTS_PER_CLASS * n_classes, len(f))
    mixture = GaussianMixture(
        n_components=components, covariance_type="diag", reg_covar=1e-4,
        random_state=seed, max_iter=200,
    ).fit(reduced)
    return leep(mixture.predict_proba(reduced), y)
