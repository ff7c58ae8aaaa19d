"""How the trainer can be told to stop early: a *stop rule*, asked after every validation
evaluation with the history so far, returns a reason from :data:`STOP_REASONS` or ``None`` to go
on. Rules are plain callables on the history (no torch), so they are cheap to test and combine;
the loop's strategies (:mod:`adapterpool.loop.strategies`) supply them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import TrainConfig

# why a run ended: "passed" / "cutoff" (a stop rule), "budget" (all epochs), "early_stopping"
STOP_REASONS = ("passed", "cutoff", "budget", "early_stopping")

StopRule = Callable[[Sequence[Mapping[str, float]], "TrainConfig"], "str | None"]


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
