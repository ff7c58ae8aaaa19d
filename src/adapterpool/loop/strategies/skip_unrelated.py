"""``skip-unrelated``: notice, before any training, that nothing in the subset is related to the
target, and go straight to the fallback.

A candidate is promising when its features separate the target's labels better than the bare
base model's do. So the top candidate's score is compared with the base model's own score on the
same scoring sample (:func:`adapterpool.ranking.scoring.reference_scores`, one more forward pass):
a gain below ``min_gain`` skips every transfer. Comparing with the base model also normalises
scores whose scale depends on the target (kNN accuracy on 2 classes vs on 77). The threshold is
calibrated leave-one-target-out on the benchmark's ground truth (``adapterpool bench``,
``nothing_related_rule`` in its summary).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import Strategy, option

if TYPE_CHECKING:
    from ...config import AdaptConfig
    from ..attempts import LoopRun

# Metrics that read only features: the bare base model has a score of those too.
REFERENCE_NEEDS = ("features", "layer_features")


@dataclass
class SkipUnrelatedOptions:
    min_gain: float = option(
        0.0, "skip-unrelated: skip transfer when the top candidate's score is less than this "
        "above the base model's own score on the target (metric units; kNN: accuracy)",
        "--min-gain")


def unrelated(top_score: float, reference: float, min_gain: float) -> bool:
    """The rule: the top candidate gains less than ``min_gain`` over the bare base model (a
    NaN reference or score decides nothing: not unrelated)."""
    if not (math.isfinite(top_score) and math.isfinite(reference)):
        return False
    return top_score - reference < min_gain


class SkipUnrelated(Strategy):
    name = "skip-unrelated"
    help = ("go straight to the fallback when the top candidate's score gains less than min_gain "
            "over the base model's own score on the target (nothing looks related)")
    options = SkipUnrelatedOptions
    report_key = "skip_unrelated"  # the top score, the base model's, the gain, the rule
    decision: dict | None = None

    def report(self) -> dict | None:
        return self.decision

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if not selected:
            return None
        from ...metrics import get_metric

        if get_metric(config.metric).needs not in REFERENCE_NEEDS:
            return (f"skip-unrelated compares the top score with the base model's own, which "
                    f"metric {config.metric!r} (it reads the source head) does not have; use a "
                    "feature metric such as knn or logme")
        return None

    def skip_transfer(self, run: LoopRun, scores: Sequence[Any]) -> dict | None:
        from ...ranking.scoring import reference_scores

        c = self.config
        if not scores:
            return None
        start = time.perf_counter()
        reference = reference_scores(run.pool.base_model, run.task, run.tokenizer, [c.metric],
                                     max_samples=c.max_samples, max_length=c.fallback.max_length,
                                     seed=c.seed)[c.metric]
        top = scores[0]
        score = top.scores[c.metric]
        self.decision = {"adapter_id": top.adapter_id, "score": score, "reference": reference,
                         "gain": score - reference, "min_gain": c.min_gain, "metric": c.metric,
                         "seconds": time.perf_counter() - start}
        if not unrelated(score, reference, c.min_gain):
            return None
        return self.decision | {"reason": "nothing related: the top candidate gains less than "
                                          "min_gain over the base model"}
