"""``early-pass``: evaluate more often and stop an attempt as soon as it meets the threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Strategy, option

if TYPE_CHECKING:
    from ...config import AdaptConfig, TrainConfig
    from ...training.stopping import StopRule


@dataclass
class EarlyPassOptions:
    pass_evals_per_epoch: int = option(
        4, "early-pass: validation evaluations per epoch of a transfer", "--pass-evals-per-epoch")
    pass_fallback: bool = option(
        True, "early-pass/settle: stop the fallback too once it passes", "--pass-fallback")


@dataclass(frozen=True)
class PassRule:
    """Stop with ``"passed"`` once the latest evaluation meets the threshold.

    ``at_start_only`` limits the check to the evaluation before any step (step 0): how
    ``same-labels`` accepts a candidate as it is without turning on early passing in general.
    """

    threshold: float
    metric: str
    at_start_only: bool = False

    def __call__(self, history: Sequence[Mapping[str, float]], config: TrainConfig) -> str | None:
        last = history[-1]
        if self.at_start_only and last["step"] != 0:
            return None
        return "passed" if last[self.metric] >= self.threshold else None


class EarlyPass(Strategy):
    name = "early-pass"
    help = ("evaluate pass_evals_per_epoch times an epoch; stop an attempt as soon as validation "
            "meets the threshold")
    options = EarlyPassOptions

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if config.pass_evals_per_epoch < 1:
            return f"pass_evals_per_epoch must be >= 1, got {config.pass_evals_per_epoch}"
        return None

    def evals_per_epoch(self) -> int | None:
        return self.config.pass_evals_per_epoch

    def pass_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        if fallback and not self.config.pass_fallback:
            return None
        return PassRule(self.config.threshold, self.config.threshold_metric)
