"""Ground truth that can rank: every unit trained to convergence, several seeds each.

A one-seed, fixed-budget fine-tune per candidate cannot rank candidates whose accuracies differ
by less than one fine-tune's noise. So, when ``BenchConfig.ground_truth_max_epochs`` is set, a
target's ground truth is

- ``gt_baseline.SEED``: standard LoRA until early stopping (``ground_truth_patience`` epochs
  without gain, at most ``baseline_max_epochs``), for each seed of ``ground_truth_seeds``;
- ``gt_finetune.ADAPTER.SEED``: the warm start from each chosen candidate, trained the same way
  (at most ``ground_truth_max_epochs``), so "how many epochs did it need" is comparable;
- ``peers.NAME.SEED``: the initialisations peft offers for LoRA that need no pool (PiSSA, OLoRA,
  EVA, CorDA, LoRA-GA, ...), trained like the baseline: the strongest thing a user could run
  instead. Building one counts: its data pass (EVA, CorDA, LoRA-GA) or SVD (PiSSA) is recorded
  as ``init_seconds`` / ``init_cpu_seconds`` and added to its time.

Which candidates: all of them, or (``ground_truth_candidates``) the prefilter's top M by
task-profile similarity, M others drawn at random with the run's seed, and (``score_top``) the top
K by the loop's ranking metric (``strategy_metric``) over all of the target's scored candidates —
what the loop warm-starts from must be in the ground truth, or "has a related source" misses the
relative the ranking found (measured: mrpc's prefilter top 2 were ag_news and liar, while knn,
LogME and the linear probe put twitter_url and snli first). Recorded in ``gt_candidates`` (with
``score_metric``, the metric that chose them) so a resumed run fine-tunes the same ones even after
the loop's metric changes; a plan that grows adds to what is recorded. Every unit
keeps its whole validation curve (``history``), from which the report reads epochs-to-accuracy.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from accelerate.utils import set_seed

from ..errors import UsageError
from ..models.build import load_tokenizer
from ..models.warm_start import warm_start_model
from ..pool import AdapterPool, AdapterRecord
from ..ranking.prefilter import prefilter
from ..training.standard import standard_lora_model, train_standard
from ..training.trainer import TrainConfig, train

if TYPE_CHECKING:
    from .harness import BenchRun

# peft's LoRA initialisations that need nothing but the target's own data (peft 0.21.2):
# name -> the LoraConfig fields that select it. EVA, CorDA and LoRA-GA also run their pass over
# the target's training data (adapterpool.training.data_init), as --peft does in the loop.
PEERS: dict[str, dict] = {
    "pissa": {"init_lora_weights": "pissa"},
    "olora": {"init_lora_weights": "olora"},
    "orthogonal": {"init_lora_weights": "orthogonal"},
    "eva": {"init_lora_weights": "eva", "eva_config": {}},
    "corda": {"init_lora_weights": "corda", "corda_config": {"corda_method": "ipm"}},
    "lora-ga": {"init_lora_weights": "lora_ga", "lora_ga_config": {}},
}


def check_peers(names: list[str]) -> None:
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise UsageError(f"bench: unknown peers {unknown}; choose from {sorted(PEERS)}")


def ground_truth_config(run: BenchRun, seed: int, max_epochs: int) -> TrainConfig:
    """Until early stopping: ``evals_per_epoch`` evaluations an epoch, patience in epochs."""
    c = run.config
    return TrainConfig(epochs=max_epochs, max_length=c.max_length, seed=seed,
                       evals_per_epoch=c.ground_truth_evals_per_epoch,
                       patience=c.ground_truth_patience)


def chosen_candidates(run: BenchRun, pool: AdapterPool, spec: str) -> list[AdapterRecord]:
    """The candidates whose fine-tunes are the ground truth (see the module), recorded once."""
    from .harness import task_key

    key = task_key(spec)
    candidates = run.candidates_for(pool, key)
    plan = run.config.ground_truth_candidates
    if not plan:
        return candidates
    recorded = run.state.get("targets", key, "gt_candidates")
    if recorded is None:
        task = run.target_task(spec)
        top = prefilter(task, pool, plan["prefilter_top"], records=candidates,
                        seed=run.config.seed).chosen
        top_ids = [r.id for r in top]
        rest = sorted(r.id for r in candidates if r.id not in top_ids)
        rng = np.random.default_rng(run.config.seed)
        drawn = [rest[i] for i in rng.permutation(len(rest))[:plan["random"]]]
        recorded = {"prefilter_top": top_ids, "random": sorted(drawn), "seed": run.config.seed}
        run.state.put(recorded, "targets", key, "gt_candidates")
    if plan.get("score_top") and "score_top" not in recorded:
        recorded = recorded | {"score_top": score_top(run, key, candidates, plan["score_top"]),
                               "score_metric": run.config.strategy_metric}
        run.state.put(recorded, "targets", key, "gt_candidates")
    wanted = set(recorded["prefilter_top"]) | set(recorded["random"]) | set(
        recorded.get("score_top", []))
    return [r for r in candidates if r.id in wanted]


def score_top(run: BenchRun, key: str, candidates: list[AdapterRecord], count: int) -> list[str]:
    """The ``count`` candidates the loop's metric (``strategy_metric``) scores highest on target
    ``key`` (its recorded scores; ties by id)."""
    metric = run.config.strategy_metric
    scores = run.state.get("targets", key, "scores") or {}
    if metric not in run.config.metrics:
        raise UsageError(f"bench: ground_truth_candidates.score_top ranks by strategy_metric "
                         f"{metric!r}, which is not among the scored metrics")
    ids = {r.id for r in candidates}
    values = {i: (scores.get(i) or {}).get("scores", {}).get(metric) for i in ids}
    ranked = sorted((i for i, v in values.items() if v is not None and np.isfinite(v)),
                    key=lambda i: (-values[i], i))
    return ranked[:count]


def peer_config(run: BenchRun, name: str):
    """The run's LoRA config initialised the peer's way: what ``--peft NAME`` gives, sized like
    every other unit of the run."""
    from ..models.peft_methods import peft_config

    return peft_config(peft_config(run.peft()).to_dict() | PEERS[name])


def peer_model(run: BenchRun, pool: AdapterPool, task, name: str, seed: int):
    """A fresh LoRA model (the run's config) initialised the peer's way, its data pass included
    (EVA, CorDA, LoRA-GA), as ``--peft NAME`` does in the loop."""
    return standard_lora_model(pool.base_model, task.label_names, peer_config(run, name),
                               seed=seed, kind=task.kind, task=task,
                               max_length=run.config.max_length)


def units_left(run: BenchRun, key: str, n_candidates: int) -> int:
    """How many ground-truth units of target ``key`` are still to compute (progress lines)."""
    c, get = run.config, run.state.get
    seeds = [str(s) for s in c.ground_truth_seeds]
    recorded = get("targets", key, "gt_candidates")
    plan = c.ground_truth_candidates
    if recorded is not None:
        chosen = sorted({*recorded["prefilter_top"], *recorded["random"],
                         *recorded.get("score_top", [])})
        if plan and plan.get("score_top") and "score_top" not in recorded:
            chosen += [None] * plan["score_top"]  # at most: some may be chosen already
    else:
        chosen = [None] * (min(n_candidates, sum(plan.values())) if plan else n_candidates)
    todo = sum(get("targets", key, "gt_baseline", s) is None for s in seeds)
    todo += sum(get("targets", key, "gt_finetune", str(a), s) is None
                for a in chosen for s in seeds)
    todo += sum(get("targets", key, "peers", name, s) is None for name in c.peers for s in seeds)
    return todo


# The ground truth's unit kinds, and those whose seconds feed time ratios (the reference in every
# ratio and the peers): a parallel run computes those alone on a node (bench/executor.py).
UNITS = ("gt_baseline", "gt_finetune", "peers")
TIMED_UNITS = ("gt_baseline", "peers")


def run_ground_truth(run: BenchRun, pool: AdapterPool, spec: str,
                     units: tuple[str, ...] = UNITS, stop_at: float = math.inf) -> None:
    """Every ground-truth unit of one target (of the kinds in ``units``) not recorded yet:
    baselines, warm starts, then the peers seed by seed (every peer's first seed before any
    second, so a run stopped early leaves comparable peers). No unit starts after ``stop_at``
    (``time.time()``): a deadline leaves whole units, and the rest for the next run."""
    from .harness import result_record, task_key

    c = run.config
    key = task_key(spec)
    task = None

    def late() -> bool:
        return time.time() > stop_at

    def loaded_task():
        nonlocal task
        task = task or run.target_task(spec)
        return task

    def record(result, *keys, init: tuple[float, float] | None = None):
        run.state.trained += 1
        run.state.computed[keys[0]] += 1
        extra = {} if init is None else {"init_seconds": init[0], "init_cpu_seconds": init[1]}
        run.state.put(result_record(result) | extra, "targets", key, *keys)

    for seed in c.ground_truth_seeds if "gt_baseline" in units else ():
        if run.state.get("targets", key, "gt_baseline", str(seed)) is None:
            if late():
                return
            run.announce(f"[bold]{key}[/bold]: standard LoRA, seed {seed}, until early stopping")
            result = train_standard(loaded_task(), pool.base_model,
                                    ground_truth_config(run, seed, c.baseline_max_epochs),
                                    peft=run.peft(), description=f"{key} standard LoRA",
                                    show_progress=run.show_progress,
                                    measure_energy=run.measure_energy)
            record(result, "gt_baseline", str(seed))
    tokenizer = load_tokenizer(pool.base_model)
    for candidate in chosen_candidates(run, pool, spec) if "gt_finetune" in units else ():
        for seed in c.ground_truth_seeds:
            if run.state.get("targets", key, "gt_finetune", candidate.id, str(seed)) is not None:
                continue
            if late():
                return
            run.announce(f"[bold]{key}[/bold] <- {candidate.task_name}: seed {seed}, until "
                          "early stopping")
            set_seed(seed)
            model = warm_start_model(pool.base_model, loaded_task().label_names,
                                     pool.adapter_dir(candidate.id), kind=task.kind)
            result = train(model, task, tokenizer,
                           ground_truth_config(run, seed, c.ground_truth_max_epochs),
                           description=f"{key} <- {candidate.task_name}",
                           show_progress=run.show_progress, measure_energy=run.measure_energy)
            record(result, "gt_finetune", candidate.id, str(seed))
    for seed in c.ground_truth_seeds if "peers" in units else ():
        for name in c.peers:
            if run.state.get("targets", key, "peers", name, str(seed)) is not None:
                continue
            if late():
                return
            run.announce(f"[bold]{key}[/bold]: peer {name}, seed {seed}, until early stopping")
            config = ground_truth_config(run, seed, c.baseline_max_epochs)
            started, started_cpu = time.perf_counter(), time.process_time()
            model = peer_model(run, pool, loaded_task(), name, seed)
            init = (time.perf_counter() - started, time.process_time() - started_cpu)
            result = train(model, task, tokenizer, config, description=f"{key} peer {name}",
                           show_progress=run.show_progress, measure_energy=run.measure_energy)
            record(result, "peers", name, str(seed), init=init)
