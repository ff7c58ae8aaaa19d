"""The transferability-guided loop: rank a random subset, warm-start from the best, check the
threshold, try the next, fall back to standard LoRA, contribute what passes.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel

from ..config import AdaptConfig, TrainConfig
from ..contributing import adapter_metadata, contribute
from ..metrics import get_metric
from ..models.build import check_method
from ..models.peft_methods import peft_config
from ..models.saving import save_adapter
from ..pool import Pool
from ..ranking.rank import RankResult, rank
from ..ranking.scoring import CandidateScore
from ..tasks import Task
from ..training.energy import EnergyReading
from .attempts import OUTCOMES, Attempt, LoopRun, Outcome
from .processes import is_main_process, on_main_process, process_state
from .report import build_report
from .strategies import STRATEGIES


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


def text2text_examples(model, task: Task, base_model: str | None, train: TrainConfig,
                       n: int = 3) -> list[dict]:
    """The final model's outputs for the first ``n`` test (else validation) inputs, for
    report.json and the printed report: a text2text score alone does not show what it writes."""
    from ..models.build import load_preprocessor
    from ..training.generation import decoding_for, sample_outputs

    records = task.test if task.test is not None else task.validation
    return sample_outputs(model, records, load_preprocessor(base_model, task.kind), n=n,
                          max_length=train.max_length,
                          decoding=decoding_for(train.max_new_tokens, train.num_beams))


def scoring_metrics(config: AdaptConfig, kind: str) -> list[str]:
    """The ranking metric first (it orders the candidates), then those the selected strategies
    read (:attr:`~adapterpool.loop.strategies.Strategy.scoring_metrics`) where they apply to
    ``kind``."""
    metrics = [config.metric]
    for name in config.strategy:
        for metric in STRATEGIES[name].scoring_metrics:
            if metric not in metrics and kind in get_metric(metric).kinds:
                metrics.append(metric)
    return metrics


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
    :data:`~adapterpool.models.peft_methods.PEFT_METHODS` or any PeftConfig. Candidates are
    drawn among the pool's adapters of its PEFT type; each warm start uses the candidate's own
    saved config.

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
    start, start_cpu = time.perf_counter(), time.process_time()
    # Under `accelerate launch` every process trains (data parallel) and must take the same
    # decisions; those follow from the ranking and from validation scores, which `train` gathers
    # from all processes. Ranking is a forward pass per candidate, not worth sharding: the main
    # process ranks and hands the very same result to the others (no float noise between
    # devices can reorder close candidates), which wait for it.
    state = process_state()
    if config.max_tries > 0:
        ranking = on_main_process(state, lambda: rank(
            task, pool, scoring_metrics(config, task.kind), subset=config.subset, seed=config.seed,
            max_samples=config.max_samples, max_length=config.fallback.max_length,
            show_progress=show_progress, measure_energy=measure_energy,
            peft_type=str(peft.peft_type.value),
            subset_strategy=config.subset_strategy,
            prefilter_similarity=config.prefilter_similarity,
        ))
    else:  # standard LoRA only (`adapterpool train`): nothing to rank
        ranking = RankResult([config.metric], config.seed, [], [], 0.0, EnergyReading(), 0)
    run = LoopRun(task, pool, config, peft, show_progress, measure_energy)
    # A candidate that could not be scored (NaN, with an error) is never warm-started from.
    usable = [s for s in ranking.scores if math.isfinite(s.scores[config.metric])]
    skipped = run.skip_reason(usable)
    scoring_cpu = time.process_time() - start_cpu  # the ranking and the skip decision
    passed: Attempt | None = None
    if skipped is None and config.max_tries > 0 and usable:
        passed = run.transfer(usable)
    if passed is None:
        passed = run.fallback()

    final = passed or run.best
    outcome: Outcome = "failed" if passed is None else OUTCOMES[passed.kind]
    meta = None
    if final is not None:
        meta = adapter_metadata(task, final.result, parent_id=final.adapter_id, seed=config.seed)
    report = build_report(task, pool, config, ranking, run.attempts, final, outcome, skipped,
                          start, start_cpu=start_cpu, scoring_cpu=scoring_cpu,
                          processes=state.num_processes, peft=peft,
                          strategies=run.report())
    # attempts keep trained states, not models: the final adapter's model is built once, here
    # (or is the model just trained, when the final attempt is the latest)
    model = run.model_of(final) if final is not None else None
    if model is not None and task.kind == "text2text":
        report["examples"] = text2text_examples(model, task, pool.base_model,
                                                config.resolved_fallback())
    result = AdaptResult(outcome, run.attempts, ranking.scores, model, report, adapter_meta=meta)
    out = Path(out_dir) if out_dir is not None else None

    def publish() -> dict:
        """Save, contribute, write the report: once, whatever the number of processes."""
        if out is not None:
            result.save_adapter(out / "adapter")
        if config.contribute and passed is not None:
            report["contributed_adapter_id"] = contribute(
                pool, task, replace(final.result, model=model), parent_id=final.adapter_id,
                seed=config.seed).id
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


