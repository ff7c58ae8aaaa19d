"""Transferability metrics: numpy arrays in, a float out (higher = transfers better), float64.
The registry says which task kinds each applies to.

Labels may be any values (they are mapped to 0..C-1). Registry names are the command line's.
"""

from .ensemble import ensemble
from .gbc import gbc
from .hscore import h_score, regularized_h_score
from .leep import leep
from .logme import logme
from .logme_targets import logme_targets
from .nce import nce
from .nleep import nleep
from .probes import knn_accuracy, linear_probe_accuracy
from .registry import (
    ENSEMBLE,
    ENSEMBLE_MEMBERS,
    METRICS,
    MetricSpec,
    UnknownMetricError,
    check_metric_kind,
    compute_metric,
    get_metric,
    per_candidate_metrics,
)
from .target_loglik import target_loglik
from .transrate import transrate
from .validation import MetricInputError

__all__ = [
    "ENSEMBLE", "ENSEMBLE_MEMBERS", "per_candidate_metrics", "METRICS", "MetricInputError",
    "MetricSpec", "UnknownMetricError", "check_metric_kind", "compute_metric",
    "ensemble", "gbc", "get_metric", "h_score", "knn_accuracy", "leep", "linear_probe_accuracy",
    "logme", "logme_targets", "nce", "nleep", "regularized_h_score", "target_loglik", "transrate",
]
