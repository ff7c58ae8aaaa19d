"""Zero-shot target log-likelihood: how well a candidate already predicts the target texts.

For text2text tasks labels are texts, not classes, so the label-based metrics do not apply; the
candidate's own language-model loss on the target sample does. Each example contributes the mean
log-probability of its target tokens (teacher-forced, as training computes its loss); the score
is the mean over examples, i.e. minus the mean token negative log-likelihood: higher is better,
as for every other metric.
"""

from __future__ import annotations

import numpy as np

from ..errors import MetricInputError


def target_loglik(loglik, labels=None) -> float:
    """Mean of the per-example mean token log-likelihoods (``labels`` is unused)."""
    values = np.asarray(loglik, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise MetricInputError(f"target log-likelihoods must be a non-empty 1-D array, got "
                               f"shape {values.shape}")
    if not np.isfinite(values).all():
        raise MetricInputError("target log-likelihoods contain NaN or infinite values")
    return float(values.mean())
