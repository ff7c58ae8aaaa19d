"""The attempts of one ``adapt`` call: transfer tries, racing probes, the composed start, the
fallback, and the strategies (:mod:`adapterpool.loop.strategies`) that shape them.

Memory does not grow with the number of attempts: an attempt keeps what training changed (its
trainable tensors, on the CPU: :func:`~adapterpool.training.trainer.trained_state`) and how its
model was built (:class:`Start`), not the model. The runner holds at most one model: the latest
attempt's, until the next attempt is built (or goes on from it), and a model an attempt goes on
from, or the final adapter's, is built again from its start and trained state when it is not
that one. On a 7B base model that is one base model whatever the tries, probes or merge size.

The runner knows no strategy by name: it asks every selected strategy's hooks, in the registry's
order, at each decision (how an attempt trains, which candidates are tried, where the fallback
starts, what goes in the report).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from accelerate.utils import set_seed
from peft import PeftConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from ..config import AdaptConfig
from ..models.build import load_preprocessor
from ..models.warm_start import warm_start_model
from ..pool import Pool
from ..ranking.scoring import CandidateScore
from ..tasks import Task
from ..training.standard import standard_lora_model
from ..training.stopping import StopRule, first_reason
from ..training.trainer import (
    Resume,
    TrainConfig,
    TrainResult,
    restore_state,
    train,
    trained_state,
)
from .processes import process_state
from .strategies import STRATEGIES, Strategy
from .strategies.base import overrides

Outcome = Literal["transfer", "standard_lora", "warm_fallback", "failed"]
AttemptKind = Literal["transfer", "probe", "composition", "standard_lora", "warm_fallback"]

OUTCOMES: dict[str, Outcome] = {
    "transfer": "transfer", "probe": "transfer", "composition": "transfer",
    "standard_lora": "standard_lora", "warm_fallback": "warm_fallback",
}


@dataclass(frozen=True)
class Start:
    """Where an attempt's model starts: ``build()`` makes it (the base model with the starting
    adapter: a candidate's warm start, a merge, a fresh adapter); when the attempt goes on from
    an earlier one (``continues``), that one's trained state is loaded on top.
    """

    adapter_id: str | None  # the pool adapter it started from (None: from scratch)
    build: Callable[[], PeftModel]
    head_kept: bool = False  # same-labels: the source adapter's own head
    continues: Attempt | None = None  # the earlier attempt it goes on from

    def with_tensors(self, tensors: dict) -> Start:
        """The same start with some adapter tensors replaced (composition's merged LoRA)."""
        def build() -> PeftModel:
            model = self.build()
            state = get_peft_model_state_dict(model, save_embedding_layers=False)
            set_peft_model_state_dict(model, state | tensors)
            return model

        return replace(self, build=build)


@dataclass
class Attempt:
    """One training run of the loop: its numbers (``result``, whose ``model`` is None), how its
    model was built (``start``) and what training changed in it (``state``: the trainable tensors
    at the best evaluation, on the CPU), from which the runner rebuilds the model when needed.
    """

    kind: AttemptKind
    adapter_id: str | None  # the pool adapter it started from (None: from scratch)
    result: TrainResult
    passed: bool
    head_kept: bool = False  # same-labels: started with the source adapter's own head
    start: Start | None = field(default=None, repr=False)
    state: dict | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "adapter_id": self.adapter_id,
            "epochs": round(self.result.epochs_run, 3),
            "train_seconds": self.result.train_seconds,
            "validation": self.result.validation,
            "test": self.result.test,
            "passed": self.passed,
            "stop_reason": self.result.stop_reason,
            "head_kept": self.head_kept,
            "learning_rate": self.result.learning_rate,
            "energy": self.result.energy.as_report(),
            "history": self.result.history,
        }


class LoopRun:
    """The attempts of one ``adapt`` call and the strategies that shape them."""

    def __init__(self, task: Task, pool: Pool, config: AdaptConfig,
                 peft: PeftConfig, show_progress: bool, measure_energy: bool) -> None:
        self.task, self.pool, self.config, self.peft = task, pool, config, peft
        self.show_progress, self.measure_energy = show_progress, measure_energy
        self.strategies: list[Strategy] = [STRATEGIES[name](config) for name in config.strategy]
        self.tokenizer = load_preprocessor(pool.base_model, task.kind)
        self.attempts: list[Attempt] = []
        # attempts no later attempt went on from: their numbers describe what they hold
        self._own: list[Attempt] = []
        self.best: Attempt | None = None  # of those, the highest validation (threshold metric)
        # the latest attempt and its model: the one model the runner holds between attempts
        self._latest: tuple[Attempt, PeftModel] | None = None

    # -- what strategies read and call -----------------------------------------------------------
    def value(self, attempt: Attempt) -> float:
        return attempt.result.validation[self.config.threshold_metric]

    def transfer_config(self) -> TrainConfig:
        return self.config.transfer_config()

    def adapter_dirs(self, adapter_ids: Sequence[str]) -> list[Path]:
        # A remote pool downloads into a cache that the processes of one machine share: the
        # local main process fetches it first, the others then find it there, verified.
        with process_state().local_main_process_first():
            return [self.pool.adapter_dir(adapter_id) for adapter_id in adapter_ids]

    def candidate(self, adapter_id: str) -> Start:
        """A warm start from the candidate: its adapter with a fresh head, or its own head when a
        strategy keeps it (same-labels)."""
        keep = any(s.keeps_head(self, adapter_id) for s in self.strategies)
        folder = self.adapter_dirs([adapter_id])[0]
        seed, base, labels, kind = (self.config.seed, self.pool.base_model,
                                    self.task.label_names, self.task.kind)

        def build() -> PeftModel:
            set_seed(seed)
            return warm_start_model(base, labels, folder, keep_head=keep, kind=kind)

        return Start(adapter_id, build, keep)

    def continued(self, attempt: Attempt, *, head_kept: bool | None = None) -> Start:
        """Going on from ``attempt``'s trained model (its best weights, restored by ``train``)."""
        return Start(attempt.adapter_id, attempt.start.build,
                     attempt.head_kept if head_kept is None else head_kept, continues=attempt)

    def model_of(self, attempt: Attempt) -> PeftModel:
        """``attempt``'s trained model: the one held when it is the latest, else rebuilt from its
        start and state (any other model held is let go first, so one is alive at a time)."""
        return self._model(Start(attempt.adapter_id, attempt.start.build, attempt.head_kept,
                                 continues=attempt))

    def _model(self, start: Start) -> PeftModel:
        latest, self._latest = self._latest, None
        if latest is not None and start.continues is latest[0]:
            return latest[1]  # going on from the model just trained: nothing to rebuild
        del latest
        gc.collect()  # peft and accelerate hold the old model in reference cycles
        model = start.build()
        if start.continues is not None:
            restore_state(model, start.continues.state)
        return model

    def attempt(self, kind: AttemptKind, start: Start, train_config: TrainConfig, *,
                eval_at_start: bool = False, resume: Resume | None = None,
                keep_optimizer: bool = False) -> Attempt:
        """Train one attempt from ``start``; every attempt of the run goes through here.
        ``resume``/``keep_optimizer``: see :func:`adapterpool.training.trainer.train`."""
        fallback = kind in ("standard_lora", "warm_fallback")
        result = train(
            self._model(start), self.task, self.tokenizer, train_config,
            description=f"{kind} {start.adapter_id or ''}".strip(),
            show_progress=self.show_progress, measure_energy=self.measure_energy,
            stop_rule=self.stop_rule(fallback=fallback, head_kept=start.head_kept),
            eval_at_start=eval_at_start or start.head_kept,
            resume=resume, keep_optimizer=keep_optimizer,
        )
        threshold = self.config.threshold  # None: no threshold, the attempt is kept as it is
        passed = threshold is None or result.validation[self.config.threshold_metric] >= threshold
        # the model leaves the result: the attempt keeps its trained state, the runner the model
        model, result.model = result.model, None
        attempt = Attempt(kind, start.adapter_id, result, passed, start.head_kept, start,
                          trained_state(model))
        self._latest = (attempt, model)
        del model
        self.attempts.append(attempt)
        # An attempt that went on from an earlier one replaces it among the candidates for the
        # best: only the latest of a line of continued attempts may be the final adapter.
        self._own = [a for a in self._own if a is not start.continues] + [attempt]
        self.best = max(self._own, key=self.value)  # the earliest on ties
        return attempt

    # -- the loop's phases -------------------------------------------------------------------------
    def stop_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        """The first strategy's pass rule (registry order), then every other early stop; with no
        threshold neither applies (nothing to pass or to fall short of): early stopping only."""
        if self.config.threshold is None:
            return None
        passing = next((r for s in self.strategies
                        if (r := s.pass_rule(fallback=fallback, head_kept=head_kept))), None)
        return first_reason(passing, *(s.stop_rule(fallback=fallback) for s in self.strategies))

    def skip_reason(self, scores: list[CandidateScore]) -> dict | None:
        return next((r for s in self.strategies if (r := s.skip_transfer(self, scores))), None)

    def transfer(self, scores: list[CandidateScore]) -> Attempt | None:
        """The transfer phase: the strategy that runs it (racing), else the tries."""
        chooser = next((s for s in self.strategies if overrides(s, "transfer")), None)
        return chooser.transfer(self, scores) if chooser is not None else self.tries(scores)

    def tries(self, scores: list[CandidateScore]) -> Attempt | None:
        """Best-ranked first, up to ``max_tries``, until one passes; a strategy's first try
        (composition's merge), when it makes one, takes the first of them."""
        made = 0
        for strategy in self.strategies:
            first = strategy.first_try(self, scores)
            if first is not None:
                if first.passed:
                    return first
                made += 1
        for candidate in scores[: max(0, self.config.max_tries - made)]:
            attempt = self.attempt("transfer", self.candidate(candidate.adapter_id),
                                   self.transfer_config())
            if attempt.passed:
                return attempt
            if any(s.last_try(self, attempt) for s in self.strategies):
                break
        return None

    def fallback(self) -> Attempt | None:
        """Standard LoRA from scratch, or the attempt a strategy continues (warm-fallback) with
        the same standard-LoRA budget."""
        config = self.config.resolved_fallback()
        source = next((a for s in self.strategies if (a := s.fallback_start(self))), None)
        if source is not None:
            attempt = self.attempt("warm_fallback", self.continued(source, head_kept=False),
                                   config, eval_at_start=True)
        else:
            base, task, peft, seed = self.pool.base_model, self.task, self.peft, self.config.seed
            start = Start(None, lambda: standard_lora_model(
                base, task.label_names, peft, seed=seed, kind=task.kind, task=task,
                max_length=config.max_length))
            attempt = self.attempt("standard_lora", start, config)
        return attempt if attempt.passed else None

    def report(self) -> dict:
        """Every registered strategy's report field: its record when selected, else None."""
        fields = {cls.report_key: None for cls in STRATEGIES.values() if cls.report_key}
        for strategy in self.strategies:
            if strategy.report_key:
                fields[strategy.report_key] = strategy.report()
        return fields
