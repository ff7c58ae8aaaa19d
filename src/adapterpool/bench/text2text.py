"""The text-to-text benchmark: the classification bench's units (sources, scores, a fine-tune from
every candidate, the standard baseline) on ``text2text`` tasks, measured with the kind's threshold
metric (ROUGE-L by default) instead of accuracy, plus what a model must beat to have learned
anything: a copy-the-input and a most-frequent-target output, scored the same way.

A bench config says ``"kind": "text2text"``; :class:`~adapterpool.bench.harness.BenchRun` then
trains with the metric as its selection metric (:func:`train_settings`), records one more unit
per target (:func:`trivial_target`), and the summary (:func:`summarize`) is this module's:
ranking quality of each ranking metric (``target-loglik``, ``logme-targets``) against the score
fine-tuning from each candidate reached, and the loop against standard training, replayed from
those recorded fine-tunes exactly as for classification (:func:`~adapterpool.bench.quality.
simulate_loop`). Only names, numbers and settings are written, never a task's text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..task_kinds import LABELLED_KINDS, check_threshold_metric, get_kind
from .quality import (
    Baseline,
    Candidate,
    loop_versus_standard,
    nanmean,
    random_ranking_quality,
    ranking_quality,
    simulate_loop,
)

if TYPE_CHECKING:
    from ..pool import AdapterPool
    from ..tasks import Task
    from .config import BenchConfig
    from .harness import BenchRun

KIND = "text2text"
BENCH_KINDS = ("classification", KIND)
QUALITY_KEYS = ("weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3")
LOOP_KEYS = ("score_ratio", "time_ratio", "transfer_rate", "mean_tries", "score", "seconds")


def is_text2text(config: BenchConfig) -> bool:
    return getattr(config, "kind", "classification") == KIND


def metric_of(config: BenchConfig) -> str:
    """The metric ground truth, thresholds and baselines are read in: the config's
    ``threshold_metric``, else the kind's default (``rouge_l``)."""
    return config.threshold_metric or get_kind(KIND).threshold_metrics[0]


def train_settings(config: BenchConfig) -> dict:
    """TrainConfig fields a text2text bench sets on every training unit: selection by the
    metric (accuracy does not exist), and how many tokens evaluation generates."""
    if not is_text2text(config):
        return {}
    return {"selection_metric": metric_of(config), "max_new_tokens": config.max_new_tokens}


def check_config(config: BenchConfig) -> None:
    """Refuse, before any work, settings a text2text bench cannot honour."""
    if config.kind not in BENCH_KINDS:
        raise UsageError(f"bench: kind {config.kind!r}; choose from {', '.join(BENCH_KINDS)}")
    if not is_text2text(config):
        if config.threshold_metric not in (None, "accuracy"):
            raise UsageError("bench: threshold_metric applies to text2text benches "
                             '("kind": "text2text"); classification reads accuracy')
        return
    from ..metrics import check_metric_kind

    check_threshold_metric(KIND, metric_of(config))
    for name in config.metrics:
        check_metric_kind(name, KIND)
    for setting in ("ensemble_members", "strategies", "peers"):
        if getattr(config, setting):
            raise UsageError(f"bench: {setting} are not measured on text2text benches yet; "
                             "set it to []")
    if config.ground_truth_max_epochs is not None:
        raise UsageError("bench: the converged ground truth (ground_truth_max_epochs) is not "
                         "measured on text2text benches yet")


def check_task(config: BenchConfig, task: Task, spec: str) -> None:
    """A task of the bench's kind: a run compares candidates of one family."""
    if is_text2text(config):
        if task.kind != KIND:
            raise UsageError(f"bench: {spec} is a {task.kind} task; this bench is text2text "
                             "(its sources and targets are text2text tasks)")
    elif not get_kind(task.kind).labelled:
        raise UsageError(f"bench: {spec} is a {task.kind} task; the benchmark measures "
                         "accuracy, so its sources and targets are classification tasks "
                         f"({', '.join(LABELLED_KINDS)}); a text2text bench says "
                         '"kind": "text2text" in its config')


def evaluation_split(task: Task) -> str:
    return "test" if task.test is not None else "validation"


def trivial_target(run: BenchRun, pool: AdapterPool, spec: str) -> None:
    """The copy-the-input and most-frequent-target outputs' scores on the target's evaluation
    split (test, else validation): one unit, cheap (no model)."""
    from ..models.build import load_tokenizer
    from ..training.generation import trivial_baselines
    from .harness import task_key

    key = task_key(spec)
    if run.state.get("targets", key, "trivial") is not None:
        return
    task = run.target_task(spec)
    split = evaluation_split(task)
    scores = trivial_baselines(task.split(split), load_tokenizer(pool.base_model),
                               run.config.max_length, task.train.target)
    run.state.put({"split": split, **scores}, "targets", key, "trivial")


# -- summary ---------------------------------------------------------------------------------
def _score(record: dict, metric: str) -> float:
    """Test score; validation where the task has no test split."""
    return float((record.get("test") or record["validation"])[metric])


def _target_summary(target: dict, config: dict, metric: str) -> dict:
    base = target["baseline"]
    trivial = target.get("trivial") or {}
    baseline = Baseline(base["validation"][metric], _score(base, metric), base["train_seconds"],
                        base.get("kwh") or 0.0)
    threshold = config["threshold_fraction"] * baseline.validation_accuracy
    ids = sorted(i for i in target["finetune"] if i in target["scores"])
    candidates: dict[str, dict] = {}
    for i in ids:
        run, scored = target["finetune"][i], target["scores"][i]
        candidates[i] = {
            "source_task": scored.get("source_task"),
            "score": _score(run, metric),
            "validation_score": run["validation"][metric],
            "passed": run["validation"][metric] >= threshold,
            "seconds": run["train_seconds"],
            "scores": dict(scored["scores"]),
            "scoring_seconds": scored["seconds"],
        }
    summary = {
        "standard": {
            "score": baseline.test_accuracy,
            "validation_score": baseline.validation_accuracy,
            "copy_baseline": (trivial.get("copy_input") or {}).get(metric, math.nan),
            "most_frequent_baseline": (trivial.get("most_frequent_target") or {}).get(
                metric, math.nan),
            "seconds": baseline.train_seconds,
            "epochs": base.get("epochs"),
            "scores": dict(base.get("test") or base["validation"]),
        },
        "trivial": trivial,
        "threshold": threshold,
        "candidates": candidates,
        "ranking": {},
        "loop": {},
    }
    if len(ids) < 2:
        return summary
    truth = [candidates[i]["score"] for i in ids]
    for name in config["metrics"]:
        scores = [float("nan") if candidates[i]["scores"].get(name) is None
                  else candidates[i]["scores"][name] for i in ids]
        summary["ranking"][name] = ranking_quality(scores, truth)
        pool = [Candidate(i, s, target["scores"][i].get("forward_seconds",
                                                        target["scores"][i]["seconds"])
                          + (target["scores"][i].get("metric_seconds") or {}).get(name, 0.0),
                          candidates[i]["validation_score"], candidates[i]["score"],
                          candidates[i]["seconds"], target["finetune"][i].get("kwh") or 0.0)
                for i, s in zip(ids, scores, strict=True)]
        runs = [simulate_loop(pool, baseline, subset=config["subset"],
                              max_tries=config["max_tries"], threshold=threshold, seed=seed)
                for seed in config["loop_seeds"]]
        loop = loop_versus_standard(runs, baseline)
        summary["loop"][name] = {
            "score_ratio": loop["accuracy_ratio"], "time_ratio": loop["time_ratio"],
            "transfer_rate": loop["transfer_rate"], "mean_tries": loop["mean_tries"],
            "score": loop["accuracy"], "seconds": loop["seconds"],
            "outcomes": {o: sum(r["outcome"] == o for r in runs)
                         for o in ("transfer", "standard_lora")},
        }
    summary["ranking"]["random"] = random_ranking_quality(truth)
    return summary


def summarize(state: dict) -> dict:
    """Per target and on average: ranking quality, the loop against standard training, and
    the standard run against the trivial baselines, in the config's metric."""
    from .config import BenchConfig

    config = BenchConfig().as_dict() | (state.get("config") or {})
    metric = config.get("threshold_metric") or get_kind(KIND).threshold_metrics[0]
    targets, incomplete = {}, []
    for key, target in sorted((state.get("targets") or {}).items()):
        if not target.get("baseline") or not target.get("scores"):
            incomplete.append(key)
            continue
        targets[key] = _target_summary(target, config, metric)
    mean: dict[str, dict] = {}
    for name in [*config["metrics"], "random"]:
        rows = [t["ranking"][name] for t in targets.values() if name in t["ranking"]]
        loops = [t["loop"][name] for t in targets.values() if name in t["loop"]]
        if rows:
            mean[name] = {k: nanmean([r[k] for r in rows]) for k in QUALITY_KEYS}
            mean[name] |= {k: nanmean([r[k] for r in loops]) for k in LOOP_KEYS if loops}
    ranked = [m for m in config["metrics"] if m in mean]
    best = max(ranked, key=lambda m: _finite(mean[m]["weighted_tau"]), default=None)
    return {
        "kind": KIND,
        "metric": metric,
        "n_targets": len(targets),
        "incomplete_targets": incomplete,
        "best_metric": best,
        "mean": mean,
        "targets": targets,
        "config": {k: config.get(k) for k in (
            "max_train", "max_eval", "max_test", "max_length", "max_new_tokens",
            "source_epochs", "transfer_epochs", "baseline_max_epochs", "scoring_samples",
            "subset", "max_tries", "threshold_fraction", "loop_seeds", "metrics", "seed",
            "base_model", "peft")},
    }


def _finite(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


# -- reports ---------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    """The results folder's README: the standard run against the trivial baselines, the
    ranking metrics' quality and the loop, per target and on average."""
    m = summary["metric"]
    lines = [
        "# Text-to-text benchmark", "",
        f"Metric: `{m}` (test split; validation where a task has none), every reference of an "
        "input counted. Written by `adapterpool bench` from the run's recorded units.", "",
        "## Standard training against trivial outputs", "",
        f"| target | standard {m} | copy input | most frequent target | seconds | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for key, t in summary["targets"].items():
        s = t["standard"]
        lines.append(f"| {key} | {_fmt(s['score'])} | {_fmt(s['copy_baseline'])} | "
                     f"{_fmt(s['most_frequent_baseline'])} | {_fmt(s['seconds'], 0)} | "
                     f"{_fmt(s.get('epochs'), 1)} |")
    lines += ["", "## Ranking quality and the loop (mean over targets)", "",
              f"| ranking metric | weighted tau | Pearson | top-1 hit | regret@1 (pts) | "
              f"regret@3 (pts) | {m} ratio | time ratio | transfer rate |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, row in summary["mean"].items():
        lines.append(
            f"| {name} | {_fmt(row.get('weighted_tau'))} | {_fmt(row.get('pearson'))} | "
            f"{_fmt(row.get('top1_hit'), 2)} | {_fmt(row.get('regret_at_1'), 2)} | "
            f"{_fmt(row.get('regret_at_3'), 2)} | {_fmt(row.get('score_ratio'))} | "
            f"{_fmt(row.get('time_ratio'))} | {_fmt(row.get('transfer_rate'), 2)} |")
    lines += ["", "## Fine-tuned from each candidate", "",
              f"| target | candidate (source) | {m} | passed | "
              + " | ".join(summary["config"]["metrics"]) + " |",
              "|---|---|---|---|" + "---|" * len(summary["config"]["metrics"])]
    for key, t in summary["targets"].items():
        for i, c in sorted(t["candidates"].items(), key=lambda kv: -kv[1]["score"]):
            lines.append(f"| {key} | {i[:8]} ({c['source_task']}) | {_fmt(c['score'])} | "
                         f"{'yes' if c['passed'] else 'no'} | "
                         + " | ".join(_fmt(c["scores"].get(n))
                                      for n in summary["config"]["metrics"]) + " |")
    lines += ["", "Settings: `" + json.dumps(summary["config"], sort_keys=True) + "`", ""]
    return "\n".join(lines)


def write_reports(summary: dict, out_dir: str | Path) -> list[Path]:
    """``summary.json`` and ``README.md`` in ``out_dir``."""
    from .render import rounded

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(rounded(summary), indent=1) + "\n")
    (out_dir / "README.md").write_text(markdown(summary))
    return [out_dir / "summary.json", out_dir / "README.md"]


def summary_table(summary: dict):
    """The console's table: per ranking metric, ranking quality and the loop."""
    from rich.table import Table

    table = Table(title=f"text2text: ranking quality and the loop vs standard training "
                        f"({summary['metric']}, mean over {summary['n_targets']} targets)")
    columns = ("metric", "w. tau", "top-1", "regret@1", f"{summary['metric']} ratio",
               "time ratio", "transfer")
    for name in columns:
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name, row in summary["mean"].items():
        table.add_row(name, _fmt(row.get("weighted_tau")), _fmt(row.get("top1_hit"), 2),
                      _fmt(row.get("regret_at_1"), 2), _fmt(row.get("score_ratio")),
                      _fmt(row.get("time_ratio")), _fmt(row.get("transfer_rate"), 2))
    return table
