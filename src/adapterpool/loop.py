"""The transferability-guided loop: rank a random subset, warm-start from the best, check the
threshold, try the next, fall back to standard LoRA, contribute what passes.
"""

from __future__ import annotations

import json
import math
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list, parse_flag_from_env, set_seed
from peft import PeftConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from . import __version__
from .composition import compose_lora, score_weights
from .config import SIMILARITIES, SUBSET_STRATEGIES, AdaptConfig
from .contributing import adapter_metadata, contribute
from .energy import EnergyMeter, EnergyReading
from .errors import AdapterPoolError, UsageError
from .metrics import check_metric_kind
from .modeling import (
    check_base_fits,
    check_method,
    load_preprocessor,
    new_model,
    save_adapter,
    warm_start_model,
    warm_start_problem,
)
from .peft_methods import config_json, method_name, peft_config
from .pool import Pool
from .pool.store import seeded_sample
from .scoring import CandidateScore, ranking_warnings, score_candidates
from .strategies import CutoffRule, PassRule, SettleRule, StopRule, first_reason
from .task_kinds import get_kind
from .tasks import Task
from .training import TrainConfig, TrainResult, train

T = TypeVar("T")


def process_state() -> PartialState:
    """This process's place in an ``accelerate launch`` run (one process: the main one).

    ``PartialState`` is cheap (no model), but it ignores ``ACCELERATE_USE_CPU``, which
    ``Accelerator`` honours: created without ``cpu=`` in a multi-CPU run it would settle on a
    single non-distributed process, and ``train``'s ``Accelerator`` would then inherit that shared
    state and train every process on all the data, unsynchronised. So the flag is passed on here.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    """Whether this process may write files and change the pool (always, without a launcher)."""
    return process_state().is_main_process


def _shareable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a stand-in of the same family with its message
    (an error on the main process is raised in every process, so all exit the same way).
    """
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to pickle: send the message instead
        kind = AdapterPoolError if isinstance(exc, AdapterPoolError) else RuntimeError
        return kind(f"{type(exc).__name__} on the main process: {exc}")


def on_main_process(state: PartialState, work: Callable[[], T]) -> T:
    """Run ``work`` on the main process only and hand its value to every process.

    Under ``accelerate launch`` the others wait in the broadcast until the main process is done,
    so this is also a barrier. An error on the main process is raised in every process rather
    than leaving the others waiting for a value that never comes. One process: ``work()``.
    """
    if state.num_processes == 1:
        return work()
    message: list[Any] = [None]
    error: Exception | None = None
    if state.is_main_process:
        try:
            message[0] = (True, work())
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are told
            error = exc
            message[0] = (False, _shareable(exc))
    broadcast_object_list(message, from_process=0)
    ok, value = message[0]
    if error is not None:
        raise error
    if not ok:
        raise value
    return value


@dataclass
class RankResult:
    metrics: list[str]
    seed: int
    subset: list[str]
    scores: list[CandidateScore]
    seconds: float
    energy: EnergyReading
    n_samples: int
    # pool adapters not drawn because they cannot warm-start the loop's method, by reason
    incompatible: dict[str, int] = field(default_factory=dict)
    subset_strategy: str = "random"
    prefilter: dict | None = None  # stage 1 (subset_strategy "prefilter"): Prefilter.as_json()

    @property
    def warnings(self) -> list[str]:
        """Stage 1's warnings (adapters without a usable summary), then failed candidates."""
        return [*(self.prefilter or {}).get("warnings", []), *ranking_warnings(self.scores)]

    def as_json(self) -> dict:
        return {
            "seed": self.seed,
            "metrics": self.metrics,
            "subset_strategy": self.subset_strategy,
            "prefilter": self.prefilter,
            "subset": self.subset,
            "incompatible": self.incompatible,
            "n_samples": self.n_samples,
            "seconds": self.seconds,
            "scores": [
                {
                    "adapter_id": s.adapter_id,
                    "source_task": s.source_task,
                    "scores": {k: _json_number(v) for k, v in s.scores.items()},
                    "seconds": s.seconds,
                    "error": s.error,
                }
                for s in self.scores
            ],
            "warnings": self.warnings,
        }


def _json_number(value: float) -> float | None:
    """NaN (a candidate that could not be scored) as JSON null, which every reader accepts."""
    return None if value is None or math.isnan(value) else value


def rank(
    task: Task,
    pool: Pool,
    metrics: list[str] | str | None = None,
    *,
    subset: int = 5,
    seed: int = 0,
    max_samples: int | None = 1000,
    max_length: int = 128,
    show_progress: bool = True,
    measure_energy: bool = True,
    peft_type: str | None = None,
    subset_strategy: str = "random",
    prefilter_similarity: str = "cosine",
) -> RankResult:
    """Score ``subset`` pool adapters on ``task``, best first: a seeded random draw
    (``subset_strategy="random"``), or the ``subset`` adapters of the whole pool whose task
    summaries are most similar to the target's (``"prefilter"``, :mod:`adapterpool.prefilter`).

    With ``peft_type`` (the loop's method) only adapters that can warm-start it (same base model
    and PEFT type) are drawn or prefiltered; the others are counted by reason. Adapters trained
    on a task of another family than ``task``'s kind (text2text, image, text classification) are
    never drawn, whatever ``peft_type``. ``metrics`` defaults to the task kind's ranking metric
    (``knn`` for classification, ``target-loglik`` for text2text: the kinds table).
    """
    if not metrics:
        metrics = [get_kind(task.kind).default_metric]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in metrics:
        check_metric_kind(name, task.kind)  # an unknown or inapplicable name fails before work
    if subset_strategy not in SUBSET_STRATEGIES or prefilter_similarity not in SIMILARITIES:
        raise UsageError(f"subset_strategy {subset_strategy!r} / prefilter_similarity "
                         f"{prefilter_similarity!r}: choose from {SUBSET_STRATEGIES} / "
                         f"{SIMILARITIES}")
    if subset_strategy == "prefilter" and not get_kind(task.kind).task_summary:
        raise UsageError(f"the prefilter compares text-classification task summaries; "
                         f"{task.kind} tasks have none (use subset_strategy 'random')")
    check_base_fits(pool.base_model, task.kind)
    records, incompatible = pool.list(), {}
    problems = {r.id: warm_start_problem(r, base_model=pool.base_model, kind=task.kind,
                                         peft_type=peft_type or r.peft_type)
                for r in records}
    records = [r for r in records if problems[r.id] is None]
    for reason in problems.values():
        if reason is not None:
            incompatible[reason] = incompatible.get(reason, 0) + 1
    stage1 = None
    populated = bool(records)
    tokenizer = load_preprocessor(pool.base_model, task.kind)
    with EnergyMeter(enabled=measure_energy and populated) as meter:
        if subset_strategy == "prefilter" and populated:
            from .prefilter import prefilter

            stage1 = prefilter(task, pool, subset, similarity=prefilter_similarity, seed=seed,
                               records=records)
            candidates = stage1.chosen
        else:
            candidates = seeded_sample(records, subset, seed) if populated else []
        scores = score_candidates(
            pool, candidates, task, tokenizer, metrics,
            max_samples=max_samples, max_length=max_length, seed=seed, show_progress=show_progress,
        ) if candidates else []
    n_samples = min(len(task.train), max_samples or len(task.train))
    return RankResult(
        metrics, seed, [c.id for c in candidates], scores, meter.reading.seconds, meter.reading,
        n_samples, incompatible, subset_strategy, stage1.as_json() if stage1 else None,
    )


Outcome = Literal["transfer", "standard_lora", "warm_fallback", "failed"]
AttemptKind = Literal["transfer", "probe", "composition", "standard_lora", "warm_fallback"]


@dataclass
class Attempt:
    """One training run of the loop.

    ``result.model`` is the live model; a racing winner's continuation and the warm fallback keep
    training the model object of the attempt they start from, so that object ends up holding the
    later attempt's weights (the numbers in ``result`` stay this attempt's).
    """

    kind: AttemptKind
    adapter_id: str | None  # the pool adapter it started from (None: from scratch)
    result: TrainResult
    passed: bool
    head_kept: bool = False  # same-labels: started with the source adapter's own head

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


@dataclass
class AdaptResult:
    """What :func:`adapt` returns; nothing is on disk until ``save_pretrained`` (or ``out_dir``)."""

    outcome: Outcome
    attempts: list[Attempt]
    scores: list[CandidateScore]
    model: PeftModel | None  # the final adapter: the passing attempt's, else the best one's
    report: dict  # JSON-able; what report.json holds
    adapter_dir: Path | None = None  # where the final adapter was last saved
    adapter_meta: dict | None = field(default=None, repr=False)  # its adapterpool.json

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.report))

    def save_adapter(self, directory: str | Path) -> Path | None:
        """The final adapter alone, in PEFT format (plus adapterpool.json), to ``directory``.

        Under ``accelerate launch`` only the main process writes (every process holds the same
        adapter; several writing one folder would collide); the others record the same path, so
        that their reports stay the main process's.
        """
        if self.model is None or self.adapter_meta is None:
            return None
        if not is_main_process():
            self.adapter_dir = Path(directory)
            self.report["adapter_dir"] = str(self.adapter_dir)
            return self.adapter_dir
        self.adapter_dir = save_adapter(self.model, directory, self.adapter_meta)
        self.report["adapter_dir"] = str(self.adapter_dir)
        return self.adapter_dir

    def save_pretrained(self, directory: str | Path) -> Path:
        """``directory/report.json`` and the final adapter in ``directory/adapter/``, which
        ``PeftModel.from_pretrained(base, directory / "adapter")`` loads directly.

        Writes on the main process only (see :meth:`save_adapter`); no barrier, so it may be
        called from every process or from the main one alone.
        """
        directory = Path(directory)
        self.save_adapter(directory / "adapter")
        self.write_report(directory)
        return directory

    def write_report(self, directory: str | Path) -> Path:
        """``directory/report.json``; on the main process only (see :meth:`save_adapter`)."""
        path = Path(directory) / "report.json"
        if is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.report, indent=2))
        return path


def standard_lora_model(base_model: str | None, label_names,
                        peft: PeftConfig | str | None = None, *, seed: int,
                        kind: str = "single") -> PeftModel:
    """A fresh adapter of method ``peft`` (default LoRA; a name of
    :data:`~adapterpool.peft_methods.PEFT_METHODS` or any PeftConfig) for a ``kind`` task,
    seeded: where standard LoRA and the fallback start."""
    set_seed(seed)
    return new_model(base_model, label_names, peft, kind=kind)


def train_standard(
    task: Task,
    base_model: str | None,
    config: TrainConfig,
    *,
    peft: PeftConfig | str | None = None,
    description: str = "standard LoRA",
    show_progress: bool = True,
    measure_energy: bool = True,
) -> TrainResult:
    """Standard LoRA (or method ``peft``) from scratch on ``task``: the baseline and fallback."""
    model = standard_lora_model(base_model, task.label_names, peft, seed=config.seed,
                                kind=task.kind)
    return train(
        model, task, load_preprocessor(base_model, task.kind), config,
        description=description, show_progress=show_progress, measure_energy=measure_energy,
    )


def adapt(
    task: Task,
    pool: Pool,
    config: AdaptConfig | None = None,
    *,
    peft: PeftConfig | str | None = None,
    show_progress: bool = True,
    measure_energy: bool = True,
    out_dir: str | Path | None = None,
    **overrides: Any,
) -> AdaptResult:
    """Run the whole loop on ``task`` as ``config`` says (default: ``AdaptConfig()``).

    ``peft`` is the fallback's method (default LoRA): a name of
    :data:`~adapterpool.peft_methods.PEFT_METHODS` or any PeftConfig. Candidates are drawn among
    the pool's adapters of its PEFT type; each warm start uses the candidate's own saved config.

    Writes nothing unless ``out_dir`` is given (then ``out_dir/report.json`` and
    ``out_dir/adapter/``); ``contribute`` adds a passing adapter to the pool either way.
    ``overrides`` (deprecated, for one release) are the old keyword arguments (``metric=``,
    ``epochs=``, ``train_config=``, ...) applied on top of ``config``.
    """
    config = (config or AdaptConfig()).with_overrides(overrides)  # unknown names fail here
    config = config.for_kind(task.kind)  # the kind's metric defaults; inapplicable ones fail
    if overrides:
        warnings.warn(
            f"adapt(..., {', '.join(sorted(overrides))}=...) is deprecated; "
            "pass adapt(task, pool, AdaptConfig(...)) instead",
            DeprecationWarning,
            stacklevel=2,
        )
    peft = peft_config(peft)
    check_method(pool.base_model, peft, len(task.label_names),  # before any work
                 max_length=config.fallback.max_length, kind=task.kind)
    start = time.perf_counter()
    # Under `accelerate launch` every process trains (data parallel) and must take the same
    # decisions; those follow from the ranking and from validation scores, which `train` gathers
    # from all processes. Ranking is a forward pass per candidate, not worth sharding: the main
    # process ranks and hands the very same result to the others (no float noise between
    # devices can reorder close candidates), which wait for it.
    state = process_state()
    if config.max_tries > 0:
        ranking = on_main_process(state, lambda: rank(
            task, pool, [config.metric], subset=config.subset, seed=config.seed,
            max_samples=config.max_samples, max_length=config.fallback.max_length,
            show_progress=show_progress, measure_energy=measure_energy,
            peft_type=str(peft.peft_type.value),
            subset_strategy=config.subset_strategy,
            prefilter_similarity=config.prefilter_similarity,
        ))
    else:  # standard LoRA only (`adapterpool train`): nothing to rank
        ranking = RankResult([config.metric], config.seed, [], [], 0.0, EnergyReading(), 0)
    run = _LoopRun(task, pool, config, peft, show_progress, measure_energy)
    # A candidate that could not be scored (NaN, with an error) is never warm-started from.
    usable = [s for s in ranking.scores if math.isfinite(s.scores[config.metric])]
    skipped = run.skip_reason(usable)
    passed: Attempt | None = None
    if skipped is None and config.max_tries > 0 and usable:
        passed = run.race(usable) if config.uses("racing") else run.tries(usable)
    if passed is None:
        passed = run.fallback()

    final = passed or run.best
    outcome: Outcome = "failed" if passed is None else _OUTCOMES[passed.kind]
    meta = None
    if final is not None:
        meta = adapter_metadata(task, final.result, parent_id=final.adapter_id, seed=config.seed)
    report = _report(task, pool, config, ranking, run.attempts, final, outcome, skipped, start,
                     processes=state.num_processes, peft=peft,
                     fallback_choice=run.fallback_choice, composition=run.composition)
    result = AdaptResult(
        outcome, run.attempts, ranking.scores, final.result.model if final else None, report,
        adapter_meta=meta,
    )
    out = Path(out_dir) if out_dir is not None else None

    def publish() -> dict:
        """Save, contribute, write the report: once, whatever the number of processes."""
        if out is not None:
            result.save_adapter(out / "adapter")
        if config.contribute and passed is not None:
            report["contributed_adapter_id"] = contribute(
                pool, task, final.result, parent_id=final.adapter_id, seed=config.seed).id
        if out is not None:
            result.write_report(out)
        return report

    # The main process publishes; the others wait for it and take its report (the same outcome
    # and attempts, plus where it saved and what it contributed), so every process returns the
    # same result and the command ends together.
    shared = on_main_process(state, publish)
    if not state.is_main_process:
        result.report = shared
        result.adapter_dir = Path(shared["adapter_dir"]) if shared["adapter_dir"] else None
    return result


_OUTCOMES: dict[str, Outcome] = {
    "transfer": "transfer", "probe": "transfer", "composition": "transfer",
    "standard_lora": "standard_lora", "warm_fallback": "warm_fallback",
}


class _LoopRun:
    """The attempts of one ``adapt`` call and the strategies that shape them."""

    def __init__(self, task: Task, pool: Pool, config: AdaptConfig,
                 peft: PeftConfig, show_progress: bool, measure_energy: bool) -> None:
        self.task, self.pool, self.config, self.peft = task, pool, config, peft
        self.show_progress, self.measure_energy = show_progress, measure_energy
        self.tokenizer = load_preprocessor(pool.base_model, task.kind)
        self.attempts: list[Attempt] = []
        self._live: list[Attempt] = []  # attempts whose model still holds their own weights
        self.best: Attempt | None = None  # of those, the highest validation (threshold metric)
        self.fallback_choice: dict | None = None  # warm-fallback: what it continued, or why not
        self.composition: dict | None = None  # composition: members and weights, or its error

    def value(self, attempt: Attempt) -> float:
        return attempt.result.validation[self.config.threshold_metric]

    def skip_reason(self, scores: list[CandidateScore]) -> dict | None:
        """cutoff's ``min_score``: no transfer when even the top candidate scores too low."""
        c = self.config
        if not (c.uses("cutoff") and c.min_score is not None and scores):
            return None
        top = scores[0]
        if top.scores[c.metric] >= c.min_score:
            return None
        return {"adapter_id": top.adapter_id, "score": top.scores[c.metric],
                "min_score": c.min_score, "metric": c.metric}

    def stop_rule(self, *, fallback: bool, head_kept: bool) -> StopRule | None:
        c = self.config
        passing = None
        may_pass = c.pass_fallback or not fallback
        if c.uses("settle") and may_pass:
            passing = SettleRule(c.threshold, c.threshold_metric, c.settle_patience)
        elif c.uses("early-pass") and may_pass:
            passing = PassRule(c.threshold, c.threshold_metric)
        elif head_kept:  # same-labels: accept the source as it is, before any step
            passing = PassRule(c.threshold, c.threshold_metric, at_start_only=True)
        cutoff = None
        if c.uses("cutoff") and (c.cutoff_fallback or not fallback):
            cutoff = CutoffRule(c.threshold, c.threshold_metric, c.cutoff_min_epochs,
                                c.cutoff_max_gain_per_epoch)
        return first_reason(passing, cutoff)

    def attempt(self, kind: AttemptKind, adapter_id: str | None, model: PeftModel,
                train_config: TrainConfig, *, head_kept: bool = False,
                eval_at_start: bool = False) -> Attempt:
        fallback = kind in ("standard_lora", "warm_fallback")
        result = train(
            model, self.task, self.tokenizer, train_config,
            description=f"{kind} {adapter_id or ''}".strip(),
            show_progress=self.show_progress, measure_energy=self.measure_energy,
            stop_rule=self.stop_rule(fallback=fallback, head_kept=head_kept),
            eval_at_start=eval_at_start or head_kept,
        )
        passed = result.validation[self.config.threshold_metric] >= self.config.threshold
        attempt = Attempt(kind, adapter_id, result, passed, head_kept)
        self.attempts.append(attempt)
        # An attempt that continued an earlier one's model leaves that one's numbers describing
        # weights the model no longer holds, so only the latest user of a model may be the best.
        self._live = [a for a in self._live if a.result.model is not model] + [attempt]
        self.best = max(self._live, key=self.value)  # the earliest on ties
        return attempt

    def warm_start(self, adapter_id: str) -> tuple[PeftModel, bool]:
        """The candidate's adapter with a fresh head, or (same-labels) with its own head."""
        keep = self.config.uses("same-labels") and get_kind(self.task.kind).labelled and (
            list(self.pool.get(adapter_id).label_names) == list(self.task.label_names)
        )
        # A remote pool downloads into a cache that the processes of one machine share: the
        # local main process fetches it first, the others then find it there, verified.
        with process_state().local_main_process_first():
            folder = self.pool.adapter_dir(adapter_id)
        set_seed(self.config.seed)
        model = warm_start_model(self.pool.base_model, self.task.label_names, folder,
                                 keep_head=keep, kind=self.task.kind)
        return model, keep

    def tries(self, scores: list[CandidateScore]) -> Attempt | None:
        """Best-ranked first, up to ``max_tries``, until one passes; with composition the first
        try is the merge of the top candidates (when they can be merged)."""
        candidates = scores[: self.config.max_tries]
        if self.config.uses("composition"):
            composed = self.compose(scores)
            if composed is not None:
                if composed.passed:
                    return composed
                candidates = candidates[: self.config.max_tries - 1]
        for candidate in candidates:
            model, keep = self.warm_start(candidate.adapter_id)
            attempt = self.attempt("transfer", candidate.adapter_id, model,
                                   self.config.transfer_config(), head_kept=keep)
            if attempt.passed:
                return attempt
        return None

    def compose(self, scores: list[CandidateScore]) -> Attempt | None:
        """composition: the best-ranked candidate warm-started (its pooler, a fresh head) with
        its LoRA weights replaced by the score-weighted merge of the top ``composition_size``.
        ``None`` (recorded in the report) when fewer than two candidates or peft cannot merge
        them; the tries then go on one candidate at a time."""
        c = self.config
        top = scores[: c.composition_size]
        if len(top) < 2:
            return None
        weights = score_weights([s.scores[c.metric] for s in top])
        self.composition = {"members": [s.adapter_id for s in top],
                            "weights": [float(w) for w in weights]}
        with process_state().local_main_process_first():
            folders = [self.pool.adapter_dir(s.adapter_id) for s in top]
        try:
            merged = compose_lora(self.pool.base_model, self.task.label_names, folders, weights,
                                  kind=self.task.kind)
        except UsageError as exc:
            self.composition["error"] = str(exc)
            return None
        model, keep = self.warm_start(top[0].adapter_id)
        # the best candidate's pooler, the head; no Hub lookup of the base model (see compose_lora)
        state = get_peft_model_state_dict(model, save_embedding_layers=False)
        lora_keys = {k for k in state if "lora_" in k}
        if lora_keys != set(merged):  # tensors the merge does not produce: no composition
            self.composition["error"] = ("the merge lacks tensors the model has: "
                                         f"{sorted(lora_keys ^ set(merged))[:2]}")
            return None
        set_peft_model_state_dict(model, state | merged)
        return self.attempt("composition", top[0].adapter_id, model, c.transfer_config(),
                            head_kept=keep)

    def race(self, scores: list[CandidateScore]) -> Attempt | None:
        """racing: probe the top ``race_size`` for ``probe_epochs`` each, continue only the best.

        A probe runs the first ``probe_epochs`` of a full transfer's learning-rate schedule; the
        winner (highest probe validation, the better-ranked on ties) continues its own model for
        the rest of the transfer budget, evaluated first so it never comes out worse. A probe
        that passes ends the race; with ``settle`` it is continued too, until it stops improving
        (a probe is too short to have settled).
        """
        c = self.config
        transfer = c.transfer_config()
        probe_config = replace(transfer, epochs=c.probe_epochs, schedule_epochs=c.transfer_epochs)
        probes: list[Attempt] = []
        for candidate in scores[: c.race_size]:
            model, keep = self.warm_start(candidate.adapter_id)
            probe = self.attempt("probe", candidate.adapter_id, model, probe_config, head_kept=keep)
            probes.append(probe)
            if probe.passed:
                if not c.uses("settle"):
                    return probe
                break
        winner = max(probes, key=self.value)  # max keeps the first (better-ranked) on ties
        rest = replace(transfer, epochs=c.transfer_epochs - c.probe_epochs)
        attempt = self.attempt("transfer", winner.adapter_id, winner.result.model, rest,
                               head_kept=winner.head_kept, eval_at_start=True)
        return attempt if attempt.passed else None

    def fallback(self) -> Attempt | None:
        """Standard LoRA from scratch; with warm-fallback, the best attempt's model continued
        (its best weights, restored by ``train``) with the same standard-LoRA budget, unless it
        falls more than ``warm_fallback_max_shortfall`` short of the threshold.
        """
        config = self.config.resolved_fallback()
        source = self.best if self.config.uses("warm-fallback") else None
        if source is not None:
            # On the benchmark, continuing an attempt far below the threshold (an unrelated
            # source) converged 10-13 points under standard LoRA from scratch; near it, the warm
            # start converged in fewer epochs to the same or better accuracy.
            threshold = self.config.threshold
            shortfall = 1.0 - self.value(source) / threshold if threshold > 0 else 0.0
            limit = self.config.warm_fallback_max_shortfall
            continued = limit is None or shortfall <= limit
            self.fallback_choice = {"adapter_id": source.adapter_id,
                                    "validation": self.value(source), "shortfall": shortfall,
                                    "max_shortfall": limit, "continued": continued}
            if not continued:
                source = None
        if source is not None:
            attempt = self.attempt("warm_fallback", source.adapter_id, source.result.model,
                                   config, eval_at_start=True)
        else:
            model = standard_lora_model(self.pool.base_model, self.task.label_names, self.peft,
                                        seed=self.config.seed, kind=self.task.kind)
            attempt = self.attempt("standard_lora", None, model, config)
        return attempt if attempt.passed else None


def _report(task: Task, pool: Pool, config: AdaptConfig, ranking: RankResult,
            attempts: list[Attempt], final: Attempt | None, outcome: Outcome,
            skipped: dict | None, start: float, *, processes: int = 1,
            peft: PeftConfig | None = None, fallback_choice: dict | None = None,
            composition: dict | None = None) -> dict:
    energy = ranking.energy
    for attempt in attempts:
        energy = energy + attempt.result.energy
    return {
        "adapterpool_version": __version__,
        "seed": config.seed,
        "base_model": pool.base_model,
        "task": task.describe() | {"source": task.source, "notes": task.notes},
        "metric": config.metric,
        "threshold": {"metric": config.threshold_metric, "value": config.threshold},
        "strategy": list(config.strategy),
        "subset_strategy": config.subset_strategy,
        "prefilter": ranking.prefilter,
        "subset": ranking.subset,
        "scores": [
            {
                "adapter_id": s.adapter_id,
                "source_task": s.source_task,
                "score": _json_number(s.scores[config.metric]),
                "seconds": s.seconds,
                "error": s.error,
            }
            for s in ranking.scores
        ],
        "warnings": ranking.warnings,
        "skipped": skipped,
        # pool adapters never drawn: another base model or PEFT type than the fallback's method
        "incompatible": ranking.incompatible,
        "composition": composition,  # merged members and weights (or why no merge)
        "warm_fallback": fallback_choice,  # the best attempt, its shortfall, whether it went on
        # "final": the attempt whose adapter is the result (passing, else the best)
        "attempts": [a.as_json() | {"final": a is final} for a in attempts],
        "outcome": outcome,
        "contributed_adapter_id": None,
        "timing": {
            "scoring_seconds": ranking.seconds,
            "training_seconds": sum(a.result.train_seconds for a in attempts),
            "total_seconds": time.perf_counter() - start,
        },
        "energy": energy.as_report(),
        "settings": {
            "subset": config.subset,
            "max_tries": config.max_tries,
            "epochs": config.transfer_epochs,
            "max_samples": config.max_samples,
            "train": config.resolved_fallback().as_dict(),
            "config": config.to_dict(),
            "processes": processes,  # under `accelerate launch`, data parallel over this many
            "peft": None if peft is None else {"method": method_name(peft),
                                               "config": config_json(peft)},
        },
        "adapter_dir": None,
    }


def default_run_dir(task_name: str) -> Path:
    """Where the command line puts a run's report when ``--out`` is not given."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("adapterpool-runs") / f"{task_name}-{stamp}"
