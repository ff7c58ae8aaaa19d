"""The loop's time-saving strategies: their names, and the stop rules that end an attempt early.

A *stop rule* is consulted by :func:`adapterpool.training.trainer.train` after every validation
evaluation with the history so far; it returns a stop reason or ``None`` to go on. Rules are plain
callables on the history (no torch), so they are cheap to test and to combine.

This module imports nothing heavy: the command line reads the strategy names from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from ..config import TrainConfig

PLAIN = "plain"

# name -> what it does (the command line's --strategy help and the report's vocabulary).
STRATEGIES: dict[str, str] = {
    PLAIN: "fixed-budget transfer tries, then standard LoRA from scratch (the original loop)",
    "early-pass": "evaluate pass_evals_per_epoch times an epoch; stop an attempt as soon as "
    "validation meets the threshold",
    "settle": "like early-pass, but once validation meets the threshold go on while it still "
    "improves; stop after settle_patience epochs without a new best",
    "cutoff": "stop a transfer attempt that cannot plausibly reach the threshold in its remaining "
    "budget; skip transfer when the top score is below min_score",
    "warm-fallback": "when no transfer passes, continue the best attempt's model with the "
    "standard-LoRA budget instead of starting from scratch (when it is within "
    "warm_fallback_max_shortfall of the threshold)",
    "same-labels": "a candidate with the target's label names (same order) is evaluated as it "
    "is first and warm-started with its own head",
    "racing": "probe the top race_size candidates for probe_epochs each; continue only the best "
    "by validation",
    "composition": "the first try warm-starts from a merge of the top composition_size "
    "candidates' LoRA weights (weighted by their scores; peft's SVD merge)",
}

STOP_REASONS = ("passed", "cutoff", "budget", "early_stopping")


def parse_strategies(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``"early-pass,cutoff"`` or ``["cutoff", "early_pass"]`` to canonical order.

    Canonical order (that of :data:`STRATEGIES`) makes equal selections compare equal and read the
    same in every report. ``plain`` means "none of them", so it combines with nothing.
    """
    if value is None:
        return (PLAIN,)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip().lower().replace("_", "-") for item in items} - {""}
    for name in sorted(names):
        if name not in STRATEGIES:
            raise UsageError(
                f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)}; "
                f"choose from {', '.join(STRATEGIES)}"
            )
    if PLAIN in names and len(names) > 1:
        raise UsageError(f"strategy 'plain' combines with nothing; got {sorted(names)}")
    return tuple(name for name in STRATEGIES if name in names) or (PLAIN,)


StopRule = Callable[[Sequence[Mapping[str, float]], "TrainConfig"], "str | None"]


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


def first_reason(*rules: StopRule | None) -> StopRule | None:
    """One rule that asks ``rules`` in order and returns the first reason (None if no rules)."""
    active = [rule for rule in rules if rule is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def combined(history: Sequence[Mapping[str, float]], config: TrainConfig) -> str | None:
        for rule in active:
            reason = rule(history, config)
            if reason is not None:
                return reason
        return None

    return combined
