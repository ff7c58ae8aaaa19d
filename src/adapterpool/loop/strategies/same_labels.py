"""``same-labels``: a candidate trained on the target's very label names keeps its head, and is
evaluated as it is before any step (it passes with 0 epochs if it meets the threshold)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...task_kinds import get_kind
from .base import Strategy
from .early_pass import PassRule

if TYPE_CHECKING:
    from ...training.stopping import StopRule
    from ..attempts import LoopRun


class SameLabels(Strategy):
    name = "same-labels"
    help = ("a candidate with the target's label names (same order) is evaluated as it is first "
            "and warm-started with its own head")

    def keeps_head(self, run: LoopRun, adapter_id: str) -> bool:
        return get_kind(run.task.kind).labelled and (
            list(run.pool.get(adapter_id).label_names) == list(run.task.label_names))

    def pass_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        # Accept the source as it is, before any step; asked after early-pass and settle (the
        # registry's order), whose rules accept it at step 0 too.
        if not head_kept:
            return None
        return PassRule(self.config.threshold, self.config.threshold_metric, at_start_only=True)
