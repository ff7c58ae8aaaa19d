"""NCE, negative conditional entropy (Tran et al. 2019, "Transferability and hardness of
supervised classification tasks"): -H(Y|Z) of target labels Y given source-predicted labels Z."""

from __future__ import annotations

import numpy as np

from .validation import encode_labels


def nce(source_labels, labels) -> float:
    """-H(Y|Z) from the empirical joint of (Z, Y); <= 0, and 0 when Z determines Y."""
    y, n_classes = encode_labels(labels)
    z_raw = np.asarray(source_labels)
    if z_raw.shape != y.shape:
        raise ValueError(f"{len(z_raw)} source labels for {len(y)} target labels")
    _, z = np.unique(z_raw, return_inverse=True)
    joint = np.zeros((z.max() + 1, n_classes))
    np.add.at(joint, (z, y), 1.0)
    joint /= len(y)
    p_z = joint.sum(axis=1, keepdims=True)
    nonzero = joint > 0
    conditional = np.where(nonzero, joint / np.where(p_z > 0, p_z, 1.0), 1.0)
    return float(np.sum(joint[nonzero] * np.log(conditional[nonzero])))
