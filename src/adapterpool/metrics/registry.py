"""Metric names as the command line knows them, what each one reads, and the task kinds it
applies to (a metric that reads class labels does not apply to text2text targets)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import MetricInputError, UnknownMetricError, UsageError, did_you_mean
from ..task_kinds import LABELLED_KINDS
from .ensemble import ensemble
from .gbc import gbc
from .hscore import h_score, regularized_h_score
from .leep import leep
from .logme import logme
from .logme_targets import logme_targets
from .nce import nce
from .nleep import nleep
from .probes import knn_accuracy, linear_probe_accuracy
from .target_loglik import target_loglik
from .transrate import transrate


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., float]
    needs: Literal["features", "layer_features", "source_probs", "source_labels", "candidates",
                   "target_loglik", "target_features"]
    description: str
    seeded: bool = False
    kinds: tuple[str, ...] = LABELLED_KINDS  # task kinds it applies to


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("nce", nce, "source_labels", "negative conditional entropy (Tran et al. 2019)"),
        MetricSpec("h-score", h_score, "features", "H-score (Bao et al. 2019)"),
        MetricSpec("regularized-h-score", regularized_h_score, "features",
                   "H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)"),
        MetricSpec("leep", leep, "source_probs", "LEEP (Nguyen et al. 2020)"),
        MetricSpec("logme", logme, "features", "LogME evidence (You et al. 2021)"),
        MetricSpec("nleep", nleep, "features", "NLEEP, GMM + LEEP (Li et al. 2021)", seeded=True),
        MetricSpec("transrate", transrate, "features", "TransRate coding rate (Huang et al. 2022)"),
        MetricSpec("gbc", gbc, "features", "Bhattacharyya class separability (Pandy et al. 2022)"),
        MetricSpec("knn", knn_accuracy, "features", "leave-one-out 5-NN accuracy"),
        MetricSpec("linear-probe", linear_probe_accuracy, "features",
                   "5-fold logistic-regression accuracy", seeded=True),
        # TransformerRanker (Garbas et al. 2024): features averaged over every layer's
        # mean-pooled token states estimate transferability better than the last layer alone
        MetricSpec("logme-layers", logme, "layer_features",
                   "LogME on features averaged over layers (Garbas et al. 2024)"),
        MetricSpec("knn-layers", knn_accuracy, "layer_features",
                   "leave-one-out 5-NN accuracy on features averaged over layers"),
        MetricSpec("target-loglik", target_loglik, "target_loglik",
                   "zero-shot mean token log-likelihood of the target texts (minus the NLL "
                   "loss; higher is better)", kinds=("text2text",)),
        MetricSpec("logme-targets", logme_targets, "target_features",
                   "LogME evidence of the targets' mean-pooled encoder states from the inputs'",
                   kinds=("text2text",)),
    )
}


# Scored across the candidates of one ranking (ranks are relative), not per candidate.
ENSEMBLE = "ensemble"
ENSEMBLE_MEMBERS = ("logme", "leep", "knn")
ENSEMBLE_SPEC = MetricSpec(ENSEMBLE, ensemble, "candidates",
                           f"rank average of {', '.join(ENSEMBLE_MEMBERS)}")


def get_metric(name: str) -> MetricSpec:
    if name in METRICS:
        return METRICS[name]
    if name == ENSEMBLE:
        return ENSEMBLE_SPEC
    names = [*METRICS, ENSEMBLE]
    raise UnknownMetricError(
        f"unknown metric {name!r}{did_you_mean(name, names)}; choose from: {', '.join(names)}"
    )


def check_metric_kind(name: str, kind: str) -> None:
    """Refuse metric ``name`` on a ``kind`` task it does not apply to, saying which do."""
    spec = get_metric(name)
    if kind in spec.kinds:
        return
    usable = [m for m, s in METRICS.items() if kind in s.kinds]
    if kind in ENSEMBLE_SPEC.kinds:
        usable.append(ENSEMBLE)
    why = ("it reads class labels, and text2text targets are texts" if kind == "text2text"
           else "it reads the target texts' likelihood, which only text2text tasks have")
    raise UsageError(f"metric {name!r} does not apply to {kind} tasks: {why}; "
                     f"use {', '.join(usable)}")


def per_candidate_metrics(metrics: list[str]) -> list[str]:
    """The metrics computed on each candidate: the named ones, the ensemble's members instead
    of it."""
    expanded: list[str] = []
    for name in metrics:
        get_metric(name)
        for member in (ENSEMBLE_MEMBERS if name == ENSEMBLE else (name,)):
            if member not in expanded:
                expanded.append(member)
    return expanded


def compute_metric(
    name: str, *, features, source_probs, labels, seed: int = 0, layer_features=None,
    target_loglik=None, target_features=None,
) -> float:
    """Route the right input of one forward pass to metric ``name``.

    ``layer_features``: the layer-averaged features that ``*-layers`` metrics read
    (``scoring.candidate_outputs(..., layer_mean=True)``); ``target_loglik``: per-example mean
    token log-likelihoods of text2text targets and ``target_features``, the mean-pooled encoder
    states of the target texts (both from ``scoring.seq2seq_outputs``).
    """
    spec = get_metric(name)
    if spec.needs == "candidates":
        raise ValueError(f"{name!r} ranks a set of candidates; use ensemble({{metric: scores}})")
    if spec.needs == "target_features":
        if target_features is None:
            raise MetricInputError(f"{name!r} reads the targets' encoder states (text2text tasks)")
        return float(spec.fn(features, target_features))
    if spec.needs == "target_loglik":
        if target_loglik is None:
            raise MetricInputError(f"{name!r} reads target log-likelihoods (text2text tasks)")
        inputs = target_loglik
    elif spec.needs == "layer_features":
        if layer_features is None:
            raise MetricInputError(
                f"{name!r} reads features averaged over layers: pass layer_features "
                "(scoring.candidate_outputs(..., layer_mean=True) computes them)")
        inputs = layer_features
    elif spec.needs == "features":
        inputs = features
    elif spec.needs == "source_probs":
        inputs = source_probs
    else:
        inputs = np.asarray(source_probs).argmax(axis=1)
    return float(spec.fn(inputs, labels, seed=seed) if spec.seeded else spec.fn(inputs, labels))
