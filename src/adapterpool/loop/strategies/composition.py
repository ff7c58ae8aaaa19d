"""``composition``: the first try warm-starts from a merge of the top candidates' LoRA weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import UsageError
from .base import Strategy, option, overrides

if TYPE_CHECKING:
    from ...config import AdaptConfig
    from ..attempts import Attempt, LoopRun


@dataclass
class CompositionOptions:
    composition_size: int = option(
        3, "composition: top candidates whose LoRA weights are merged", "--composition-size")


class Composition(Strategy):
    name = "composition"
    help = ("the first try warm-starts from a merge of the top composition_size candidates' LoRA "
            "weights (weighted by their scores; peft's SVD merge)")
    options = CompositionOptions
    report_key = "composition"  # merged members and weights (or why no merge)

    def __init__(self, config: AdaptConfig) -> None:
        super().__init__(config)
        self.record: dict | None = None

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if config.composition_size < 2:
            return f"composition_size must be >= 2, got {config.composition_size}"
        return None

    def check_combination(self, others: Sequence[Strategy]) -> str | None:
        rival = next((o.name for o in others if overrides(o, "transfer")), None)
        if rival is not None:
            return f"composition and {rival} both decide the first tries; choose one"
        return None

    def first_try(self, run: LoopRun, scores: Sequence[Any]) -> Attempt | None:
        """The best-ranked candidate warm-started (its pooler, a fresh head) with its LoRA weights
        replaced by the score-weighted merge of the top ``composition_size``. ``None`` (recorded
        in the report) when fewer than two candidates or peft cannot merge them; the tries then
        go on one candidate at a time."""
        from ...models.composition import compose_lora, score_weights
        from ...models.warm_start import adapter_state

        c = self.config
        top = scores[: c.composition_size]
        if len(top) < 2:
            return None
        weights = score_weights([s.scores[c.metric] for s in top])
        self.record = {"members": [s.adapter_id for s in top],
                       "weights": [float(w) for w in weights]}
        folders = run.adapter_dirs([s.adapter_id for s in top])
        try:
            merged = compose_lora(run.pool.base_model, run.task.label_names, folders, weights,
                                  kind=run.task.kind)
        except UsageError as exc:
            self.record["error"] = str(exc)
            return None
        # the best candidate's tensors but its head are what its warm start loads
        lora_keys = {k for k in adapter_state(folders[0], with_head=False) if "lora_" in k}
        if lora_keys != set(merged):  # tensors the merge does not produce: no composition
            self.record["error"] = ("the merge lacks tensors the model has: "
                                    f"{sorted(lora_keys ^ set(merged))[:2]}")
            return None
        start = run.candidate(top[0].adapter_id).with_tensors(merged)
        return run.attempt("composition", start, run.transfer_config())

    def report(self) -> dict | None:
        return self.record
