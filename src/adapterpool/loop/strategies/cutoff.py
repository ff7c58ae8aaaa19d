"""``cutoff``: give up on an attempt that cannot plausibly reach the threshold, and skip transfer
when even the top candidate scores too low."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import Strategy, option

if TYPE_CHECKING:
    from ...config import AdaptConfig, TrainConfig
    from ...training.stopping import StopRule
    from ..attempts import LoopRun


@dataclass
class CutoffOptions:
    cutoff_min_epochs: float = option(
        0.5, "cutoff: epochs an attempt runs before it may be cut off", "--cutoff-min-epochs")
    cutoff_max_gain_per_epoch: float = option(
        0.2, "cutoff: most validation gain an epoch is assumed to bring; cut off when best + "
        "gain * remaining epochs < threshold (calibrated on the benchmark: 0.169 is the least "
        "that cuts no passing curve)", "--cutoff-max-gain")
    cutoff_fallback: bool = option(
        False, "cutoff: apply the cutoff to the fallback too", "--cutoff-fallback")
    min_score: float | None = option(
        None, "cutoff: skip transfer when the top candidate's score (metric units) is below this "
        "(None: never skip)", "--min-score")


@dataclass(frozen=True)
class CutoffRule:
    """Stop with ``"cutoff"`` when even an optimistic curve cannot reach the threshold.

    After at least ``min_epochs`` of the attempt: if ``best so far + max_gain_per_epoch *
    remaining epochs < threshold``, give up. ``max_gain_per_epoch`` is the most validation gain
    (in the threshold metric's units) one more epoch is assumed to bring; larger is more patient.
    """

    threshold: float
    metric: str
    min_epochs: float
    max_gain_per_epoch: float

    def __call__(self, history: Sequence[Mapping[str, float]], config: TrainConfig) -> str | None:
        last = history[-1]
        if last["epoch"] < self.min_epochs:
            return None
        best = max(entry[self.metric] for entry in history)
        remaining = max(0.0, config.epochs - last["epoch"])
        return "cutoff" if best + self.max_gain_per_epoch * remaining < self.threshold else None


class Cutoff(Strategy):
    name = "cutoff"
    help = ("stop a transfer attempt that cannot plausibly reach the threshold in its remaining "
            "budget; skip transfer when the top score is below min_score")
    options = CutoffOptions

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if config.cutoff_min_epochs < 0:
            return f"cutoff_min_epochs must be >= 0, got {config.cutoff_min_epochs}"
        if config.cutoff_max_gain_per_epoch < 0:
            return f"cutoff_max_gain_per_epoch must be >= 0, got {config.cutoff_max_gain_per_epoch}"
        if config.min_score is not None and not selected:
            return "min_score needs the 'cutoff' strategy"
        return None

    def stop_rule(self, *, fallback: bool) -> StopRule | None:
        c = self.config
        if fallback and not c.cutoff_fallback:
            return None
        return CutoffRule(c.threshold, c.threshold_metric, c.cutoff_min_epochs,
                          c.cutoff_max_gain_per_epoch)

    def skip_transfer(self, run: LoopRun, scores: Sequence[Any]) -> dict | None:
        c = self.config
        if c.min_score is None or not scores:
            return None
        top = scores[0]
        if top.scores[c.metric] >= c.min_score:
            return None
        return {"adapter_id": top.adapter_id, "score": top.scores[c.metric],
                "min_score": c.min_score, "metric": c.metric}
