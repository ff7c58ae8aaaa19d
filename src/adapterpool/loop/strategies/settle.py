"""``settle``: like early-pass, but a passing attempt goes on while it still improves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Strategy, option

if TYPE_CHECKING:
    from ...config import AdaptConfig, TrainConfig
    from ...training.stopping import StopRule


@dataclass
class SettleOptions:
    settle_patience: float = option(
        0.5, "settle: once validation meets the threshold, epochs without a new best before the "
        "attempt stops", "--settle-patience")


@dataclass(frozen=True)
class SettleRule:
    """Stop with ``"passed"`` once the threshold has been met and validation has then gone
    ``patience`` epochs without a new best.

    Early passing stops at the first evaluation over the threshold, which is often still on the
    rise: the attempt is accepted, but below what a little more training gives. Settling keeps
    the attempt going while it improves (``train`` restores its best weights at the end), so an
    accepted transfer loses less against standard LoRA, at a fraction of an epoch's cost.
    Patience is in epochs, not evaluations: a transfer evaluates several times an epoch, the
    fallback once, and half an epoch of patience should cost the same half epoch in both.
    """

    threshold: float
    metric: str
    patience: float

    def __call__(self, history: Sequence[Mapping[str, float]], config: TrainConfig) -> str | None:
        values = [entry[self.metric] for entry in history]
        first = next((i for i, value in enumerate(values) if value >= self.threshold), None)
        if first is None:
            return None
        best = max(range(first, len(values)), key=lambda i: (values[i], -i))  # earliest best
        waited = history[-1]["epoch"] - history[best]["epoch"]
        return "passed" if waited >= self.patience - 1e-9 else None


class Settle(Strategy):
    name = "settle"
    help = ("like early-pass, but once validation meets the threshold go on while it still "
            "improves; stop after settle_patience epochs without a new best")
    options = SettleOptions
    continues_after_pass = True

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if not config.settle_patience > 0:
            return f"settle_patience must be > 0 epochs, got {config.settle_patience}"
        return None

    def check_combination(self, others: Sequence[Strategy]) -> str | None:
        # Both decide when a passing attempt stops; together, one would silently win.
        if any(o.name == "early-pass" for o in others):
            return ("settle and early-pass both decide when a passing attempt stops; choose one "
                    "(settle is early-pass that waits for the attempt to stop improving)")
        return None

    def evals_per_epoch(self) -> int | None:
        return self.config.pass_evals_per_epoch  # evaluated as often as early-pass

    def pass_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        c = self.config
        if fallback and not c.pass_fallback:
            return None
        return SettleRule(c.threshold, c.threshold_metric, c.settle_patience)
