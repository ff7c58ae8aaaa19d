"""LogME for text2text targets: how well the candidate's input features predict its own
representation of the target texts, by the same Bayesian linear-regression evidence as LogME.

Class labels are one-hot columns in LogME (You et al. 2021); its evidence is defined for any real
target column, and the paper applies it to regression as is. Here the columns are the dimensions
of the mean-pooled encoder states of the target texts (centred, since the regression has no
intercept), and the score is the mean evidence per sample over those columns: a candidate whose
encoding of an input already determines (linearly) its encoding of the output scores higher.
"""

from __future__ import annotations

import numpy as np

from .logme import logme_columns, spectrum
from .validation import check_features


def logme_targets(features, target_features) -> float:
    """Mean over target dimensions of the maximum log evidence per sample; higher is better."""
    f = check_features(features)
    y = check_features(target_features)
    if y.shape[0] != f.shape[0]:
        from ..errors import MetricInputError

        raise MetricInputError(f"{y.shape[0]} target feature rows for {f.shape[0]} samples")
    y = y - y.mean(axis=0)
    n, d = f.shape
    s2, z = spectrum(f, y)
    values, _, _ = logme_columns(s2, z, (y**2).sum(axis=0), n, d)
    return float(np.mean(values))
