"""From the recorded units to the evidence: ranking quality per metric, the loop vs standard LoRA,
as JSON, a Markdown table and PNG plots. Only names, numbers and settings are written — never a
task's text.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict

import numpy as np

from ..config import AdaptConfig
from ..errors import UsageError
from ..metrics import ensemble
from ..task_kinds import DEFAULT_METRIC
from .calibration import calibrate_cutoff, calibrate_min_score
from .config import BenchConfig
from .payoff import summarize_payoff
from .quality import (
    Baseline,
    Candidate,
    loop_versus_standard,
    nanmean,
    random_ranking_quality,
    ranking_quality,
    simulate_loop,
)
from .state import compute_seconds

QUALITY_KEYS = ("weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3")
LOOP_KEYS = ("accuracy_ratio", "time_ratio", "energy_ratio", "co2_ratio", "transfer_rate",
             "mean_tries")
ENSEMBLE = "ensemble"
REFERENCES = ("random", "oracle")  # a random ranking, and one that knows the fine-tuned accuracies


def number(value) -> float:
    """A recorded number as float, NaN where it is missing."""
    return math.nan if value is None else float(value)


def _ground_truth(record: dict) -> tuple[float, str]:
    """Test accuracy; validation accuracy where the task has no test split."""
    if record.get("test"):
        return record["test"]["accuracy"], "test"
    return record["validation"]["accuracy"], "validation"


def _config(state: dict) -> dict:
    """The run's settings, with today's defaults for settings older runs did not record."""
    defaults = asdict(BenchConfig())
    return defaults | (state.get("config") or {})


def _target_power(target: dict) -> tuple[float, float]:
    """kWh per second of this target's training units (estimates scoring energy when the run
    did not meter scoring separately; both are the same CPU-bound work on the same machine)."""
    units = [*target["finetune"].values(), target["baseline"]]
    kwh = sum(u["kwh"] or 0.0 for u in units)
    seconds = sum(u["train_seconds"] for u in units)
    co2 = sum(u["co2_kg"] or 0.0 for u in units)
    return (kwh / seconds if seconds else 0.0), (co2 / seconds if seconds else 0.0)


def _scoring_costs(target: dict, ids: list[str], metrics: list[str], members: list[str]) -> dict:
    """Per candidate and per ranking method: seconds, kWh and CO2 of scoring it with that method
    alone (the forward pass + that metric; the ensemble pays for each member)."""
    kwh_per_s, co2_per_s = _target_power(target)
    costs: dict = {}
    for i in ids:
        entry = target["scores"][i]
        metric_seconds = entry.get("metric_seconds") or {}
        forward = entry.get("forward_seconds", entry["seconds"] - sum(metric_seconds.values()))
        per_method = {m: forward + metric_seconds.get(m, 0.0) for m in metrics}
        per_method[ENSEMBLE] = forward + sum(metric_seconds.get(m, 0.0) for m in members)
        per_method["random"] = per_method["oracle"] = forward
        measured = entry.get("kwh") is not None and entry["seconds"] > 0
        kwh_rate = entry["kwh"] / entry["seconds"] if measured else kwh_per_s
        co2_rate = (entry.get("co2_kg") or 0.0) / entry["seconds"] if measured else co2_per_s
        costs[i] = {m: (s, s * kwh_rate, s * co2_rate) for m, s in per_method.items()}
    return costs


def _loop_runs(candidates: list[Candidate], baseline: Baseline, config: dict, threshold: float,
               *, random_scores: bool = False) -> list[dict]:
    runs = []
    for seed in config["loop_seeds"]:
        if random_scores:
            draw = np.random.default_rng(10_000 + seed).random(len(candidates))
            pool = [Candidate(**{**asdict(c), "score": float(s)})
                    for c, s in zip(candidates, draw, strict=True)]
        else:
            pool = candidates
        runs.append(simulate_loop(pool, baseline, subset=config["subset"],
                                  max_tries=config["max_tries"], threshold=threshold, seed=seed))
    return runs


def costed_here(target: dict, config: dict) -> dict:
    """The target with its ground-truth costs in this machine's seconds.

    Ground truth may be computed elsewhere (a lent GPU, ``ground_truth_on``) while the baseline
    and the timed loop runs are measured here; replayed time ratios then need the fine-tunes and
    the scoring in this machine's seconds. A fine-tune costs its epochs at the baseline's measured
    seconds per epoch (the same training loop and evaluation cadence: on the recorded targets the
    real 2-epoch transfer attempts took within 6% of that); scoring is scaled to the timed runs'
    measured scoring seconds per candidate; energy follows at the baseline's kWh per second.
    """
    if not target.get("ground_truth_on"):
        return target
    base = target["baseline"]
    per_epoch = base["train_seconds"] / max(base.get("epochs") or 1.0, 1e-9)
    kwh_rate = (base.get("kwh") or 0.0) / base["train_seconds"]
    co2_rate = (base.get("co2_kg") or 0.0) / base["train_seconds"]
    finetune = {
        i: run | {"train_seconds": per_epoch * run["epochs"],
                  "kwh": kwh_rate * per_epoch * run["epochs"],
                  "co2_kg": co2_rate * per_epoch * run["epochs"]}
        for i, run in target["finetune"].items()}
    runs = [r for by_seed in (target.get("strategies") or {}).values() for r in by_seed.values()]
    here = [r["scoring_seconds"] / config["subset"] for r in runs if r.get("scoring_seconds")]
    metric = config["strategy_metric"]  # what the timed runs scored with
    there = [(e.get("forward_seconds") or 0.0) + (e.get("metric_seconds") or {}).get(metric, 0.0)
             for e in target["scores"].values()]
    factor = float(np.median(here) / np.mean(there)) if here and there else 1.0
    scores = {
        i: e | {"seconds": e["seconds"] * factor,
                "forward_seconds": (e.get("forward_seconds") or 0.0) * factor,
                "metric_seconds": {m: v * factor
                                   for m, v in (e.get("metric_seconds") or {}).items()},
                "kwh": None, "co2_kg": None}
        for i, e in target["scores"].items()}
    return target | {"finetune": finetune, "scores": scores}


def summarize_target(target: dict, config: dict) -> dict:
    target = costed_here(target, config)
    metrics = list(config["metrics"])
    members = [m for m in config["ensemble_members"] if m in metrics]
    ids = sorted(target["finetune"])
    truths = [_ground_truth(target["finetune"][i]) for i in ids]
    accuracies = [a for a, _ in truths]
    table = {m: [target["scores"][i]["scores"].get(m, math.nan) for i in ids] for m in metrics}
    table = {m: [number(v) for v in values] for m, values in table.items()}
    if members:
        table[ENSEMBLE] = [float(v) for v in ensemble({m: table[m] for m in members})]
    table["oracle"] = list(accuracies)
    base = target["baseline"]
    base_truth, _ = _ground_truth(base)
    baseline = Baseline(base["validation"]["accuracy"], base_truth, base["train_seconds"],
                        base["kwh"] or 0.0, base["co2_kg"] or 0.0)
    costs = _scoring_costs(target, ids, metrics, members)
    quality, loop, sweep = {}, {}, {}
    for method in [*table, "random"]:
        if method == "random":
            quality[method] = random_ranking_quality(accuracies)
        elif method != "oracle":
            quality[method] = ranking_quality(table[method], accuracies)
        scores = table.get(method, [0.0] * len(ids))
        candidates = []
        for i, score in zip(ids, scores, strict=True):
            run = target["finetune"][i]
            seconds, kwh, co2 = costs[i][method]
            candidates.append(Candidate(
                i, score, seconds, run["validation"]["accuracy"], _ground_truth(run)[0],
                run["train_seconds"], run["kwh"] or 0.0, run["co2_kg"] or 0.0, kwh, co2))
        fractions = sorted({*config["threshold_sweep"], config["threshold_fraction"]})
        sweep[method] = {}
        for fraction in fractions:
            runs = _loop_runs(candidates, baseline, config, fraction * baseline.validation_accuracy,
                              random_scores=method == "random")
            result = loop_versus_standard(runs, baseline)
            sweep[method][f"{fraction:g}"] = {
                k: result[k]
                for k in ("accuracy_ratio", "time_ratio", "co2_ratio", "transfer_rate")}
            if fraction == config["threshold_fraction"]:
                loop[method] = result
    return {
        "task": target.get("task"),
        "ground_truth": "test" if all(kind == "test" for _, kind in truths) else "validation",
        "candidates": {
            i: {"source_task": target["scores"][i]["source_task"], "accuracy": a,
                "scores": {m: number(v) for m, v in target["scores"][i]["scores"].items()},
                "validation_accuracy": target["finetune"][i]["validation"]["accuracy"],
                "train_seconds": target["finetune"][i]["train_seconds"],
                "kwh": target["finetune"][i]["kwh"], "co2_kg": target["finetune"][i]["co2_kg"],
                "scoring_forward_seconds": costs[i]["random"][0]}
            for i, a in zip(ids, accuracies, strict=True)
        },
        "baseline": {"accuracy": baseline.test_accuracy,
                     "validation_accuracy": baseline.validation_accuracy,
                     "train_seconds": baseline.train_seconds, "kwh": base["kwh"],
                     "co2_kg": base["co2_kg"], "epochs": base["epochs"]},
        "threshold": config["threshold_fraction"] * baseline.validation_accuracy,
        "scoring_energy": ("measured"
                           if all(target["scores"][i].get("kwh") is not None for i in ids)
                           else "estimated at the target's training power"),
        "quality": quality,
        "loop": loop,
        "threshold_sweep": sweep,
    }


STRATEGY_KEYS = ("accuracy_ratio", "time_ratio", "energy_ratio", "transfer_rate")


def summarize_strategies(target: dict) -> dict:
    """Per strategy on one target: the loop runs (one per seed) against the baseline, as ratios of
    the means over seeds (loop / standard LoRA), plus outcomes and mean attempts."""
    base = target["baseline"]
    base_acc, _ = _ground_truth(base)
    out = {}
    for strategy, runs in sorted((target.get("strategies") or {}).items()):
        runs = list(runs.values())
        accuracies = [_ground_truth(r)[0] if (r.get("test") or r.get("validation")) else math.nan
                      for r in runs]
        kwh = [r["kwh"] for r in runs if r.get("kwh") is not None]
        out[strategy] = {
            "accuracy_ratio": nanmean(accuracies) / base_acc if base_acc else math.nan,
            "time_ratio": float(np.mean([r["seconds"] for r in runs])) / base["train_seconds"],
            "energy_ratio": (float(np.mean(kwh)) / base["kwh"]
                             if kwh and len(kwh) == len(runs) and base.get("kwh") else math.nan),
            "transfer_rate": float(np.mean([r["outcome"] == "transfer" for r in runs])),
            "outcomes": {o: sum(r["outcome"] == o for r in runs)
                         for o in sorted({r["outcome"] for r in runs})},
            "mean_attempts": float(np.mean([len(r["attempts"]) for r in runs])),
            "accuracy": nanmean(accuracies),
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "seeds": len(runs),
        }
    return out


def choose_default_strategy(strategies: dict, *, min_accuracy: float = 0.995,
                            max_target_time: float = 1.05) -> str | None:
    """The cheapest strategy (mean time ratio) that keeps accuracy (mean ratio >= min_accuracy)
    and costs no target more than ``max_target_time`` x standard LoRA; failing that, the most
    accurate one. The rule is fixed before the numbers are seen, so the choice is not tuned."""
    if not strategies:
        return None
    keeping = [s for s, row in strategies.items()
               if row["accuracy_ratio"] >= min_accuracy
               and all(t["time_ratio"] <= max_target_time for t in row["per_target"].values())]
    if keeping:
        return min(keeping, key=lambda s: strategies[s]["time_ratio"])
    return max(strategies, key=lambda s: finite(strategies[s]["accuracy_ratio"]))


def _strategies_over_targets(per_target: dict) -> dict:
    names = sorted({s for t in per_target.values() for s in t})
    out = {}
    for name in names:
        rows = {key: t[name] for key, t in per_target.items() if name in t}
        out[name] = {k: nanmean(r[k] for r in rows.values()) for k in STRATEGY_KEYS}
        out[name]["max_time_ratio"] = max(r["time_ratio"] for r in rows.values())
        out[name]["per_target"] = {  # peer_time_ratio where the run has peers (converged)
            key: {k: r[k] for k in ("accuracy_ratio", "time_ratio", "peer_time_ratio",
                                    "energy_ratio", "transfer_rate", "outcomes") if k in r}
            for key, r in rows.items()}
        out[name]["n_targets"] = len(rows)
    return out


def summarize(state: dict) -> dict:
    """Per target and averaged over targets: quality of every metric (and of the ensemble), the
    loop vs standard LoRA; targets whose units are not all recorded yet are listed as incomplete.
    """
    config = _config(state)
    if config.get("ground_truth_max_epochs"):
        return summarize_converged(state, config)
    per_target, incomplete, strategy_rows = {}, [], {}
    for key, target in sorted((state.get("targets") or {}).items()):
        if target.get("baseline") and target.get("strategies"):
            strategy_rows[key] = summarize_strategies(target)
        complete = (all(target.get(k) for k in ("scores", "finetune", "baseline"))
                    and set(target["finetune"]) == set(target["scores"]))
        if not complete:
            incomplete.append(key)
            continue
        per_target[key] = summarize_target(target, config)
        if key in strategy_rows:
            per_target[key]["strategies"] = strategy_rows[key]
    methods = list(next(iter(per_target.values()))["loop"]) if per_target else []
    mean = {}
    for m in methods:
        row = {}
        if m != "oracle":
            row |= {k: nanmean(t["quality"][m][k] for t in per_target.values())
                    for k in QUALITY_KEYS}
        row |= {k: nanmean(t["loop"][m][k] for t in per_target.values()) for k in LOOP_KEYS}
        mean[m] = row
    sweep = {
        m: {f: {k: nanmean(t["threshold_sweep"][m][f][k] for t in per_target.values())
                for k in ("accuracy_ratio", "time_ratio", "co2_ratio", "transfer_rate")}
            for f in next(iter(per_target.values()))["threshold_sweep"][m]}
        for m in methods
    } if per_target else {}
    candidates = [m for m in mean if m not in REFERENCES]

    def best_by(key: str, sign: float) -> str | None:
        usable = [m for m in candidates if not math.isnan(mean[m].get(key, math.nan))]
        return max(usable, key=lambda m: sign * mean[m][key]) if usable else None

    best = (max(candidates, key=lambda m: (finite(mean[m]["weighted_tau"]),
                                           -finite(mean[m]["regret_at_1"], 1e9)))
            if candidates else None)
    return {
        "config": config,
        "n_targets": len(per_target),
        "incomplete_targets": incomplete,
        "sources": {k: {"adapter_id": v["adapter_id"], "train_seconds": v["train_seconds"],
                        "accuracy": (v.get("test") or v.get("validation") or {}).get("accuracy")}
                    for k, v in (state.get("sources") or {}).items()},
        "compute_seconds": compute_seconds(state),
        "targets": per_target,
        "mean": mean,
        "threshold_sweep": sweep,
        "best_metric": best,
        "default_ranking": DEFAULT_METRIC,  # what rank/adapt use unless told (its row: mean)
        "best_by": {"weighted_tau": best, "regret_at_1": best_by("regret_at_1", -1.0),
                    "top1_hit": best_by("top1_hit", 1.0),
                    "loop_accuracy_ratio": best_by("accuracy_ratio", 1.0)},
        "metric_seconds": _metric_seconds(state, list(config["metrics"]),
                                          [m for m in config["ensemble_members"]
                                           if m in config["metrics"]]),
        "host": {"cpus": os.cpu_count()},
        "sources_trained_on": state.get("sources_trained_on"),
        "ground_truth_on": sorted({t["ground_truth_on"]
                                   for t in (state.get("targets") or {}).values()
                                   if t.get("ground_truth_on")}),
        "cutoff_calibration": cutoff_calibration(state, config),
        "min_score_calibration": min_score_calibration(state, config),
        "strategies": (strategies := _strategies_over_targets(strategy_rows)),
        "default_strategy": choose_default_strategy(strategies),
    }


def cutoff_calibration(state: dict, config: dict) -> dict | None:
    """``cutoff``'s gain fitted leave-one-target-out on the ground-truth curves, at every
    threshold of the sweep (more passing curves, the same rule)."""
    fractions = sorted({*config["threshold_sweep"], config["threshold_fraction"]})
    curves = {}
    for key, target in sorted((state.get("targets") or {}).items()):
        base = target.get("baseline")
        runs = [r for r in (target.get("finetune") or {}).values() if r.get("history")]
        if base and runs:
            curves[key] = [(r["history"], f * base["validation"]["accuracy"])
                           for r in runs for f in fractions]
    if len(curves) < 2:
        return None
    defaults = AdaptConfig()
    return calibrate_cutoff(curves, "accuracy", budget_epochs=config["transfer_epochs"],
                            min_epochs=defaults.cutoff_min_epochs)


def min_score_calibration(state: dict, config: dict) -> dict | None:
    """``cutoff``'s ``min_score`` per metric, fitted and checked leave-one-target-out: does the
    top candidate's score tell the targets where some transfer passes from those where none does?
    """
    fraction = config["threshold_fraction"]
    tops: dict[str, dict[str, tuple[float, bool]]] = {}
    for key, target in sorted((state.get("targets") or {}).items()):
        base, runs, scores = target.get("baseline"), target.get("finetune"), target.get("scores")
        if not (base and runs and scores):
            continue
        threshold = fraction * base["validation"]["accuracy"]
        passes = any(r["validation"]["accuracy"] >= threshold for r in runs.values())
        for metric in config["metrics"]:
            values = [number(e["scores"].get(metric)) for e in scores.values()]
            values = [v for v in values if not math.isnan(v)]
            if values:
                tops.setdefault(metric, {})[key] = (max(values), passes)
    if not tops or len(next(iter(tops.values()))) < 3:
        return None
    return {metric: calibrate_min_score(by_target) for metric, by_target in tops.items()}


def finite(value: float, fill: float = -1e9) -> float:
    """``value``, or ``fill`` where it is missing or NaN (for sorting)."""
    return fill if value is None or math.isnan(value) else value


def _metric_seconds(state: dict, metrics: list[str], members: list[str]) -> dict:
    """Mean seconds per candidate of each metric alone on the scoring sample (ensemble: members)."""
    times = {m: [] for m in metrics}
    for target in (state.get("targets") or {}).values():
        for entry in (target.get("scores") or {}).values():
            for m in metrics:
                times[m].append((entry.get("metric_seconds") or {}).get(m, math.nan))
    out = {m: nanmean(v) for m, v in times.items()}
    if members:
        out[ENSEMBLE] = sum(out[m] for m in members)
    return out


def summarize_converged(state: dict, config: dict) -> dict:
    """``summarize`` for a run whose ground truth is converged and multi-seed
    (:mod:`.ground_truth`, :mod:`.payoff`): today's top-level keys, from that ground truth."""
    from .harness import task_key

    known = BenchConfig.__dataclass_fields__
    bench = BenchConfig(**{k: v for k, v in config.items() if k in known})
    reported = state
    try:  # the family labels are read from the task folders, where they are present
        targets = bench.all_targets()
        specs = {task_key(s): s for s in [*bench.all_sources(), *targets]}
        # a target the config no longer names keeps its recorded units, out of the report
        wanted = {task_key(s) for s in targets}
        reported = state | {"targets": {k: t for k, t in (state.get("targets") or {}).items()
                                        if k in wanted}}
    except UsageError:
        specs = {}
    payoff = summarize_payoff(reported, config, specs)
    complete = {k: t for k, t in payoff["targets"].items() if t["complete"]}
    metrics = list(config["metrics"])
    mean = {m: {k: nanmean(t["quality"][m][k] for t in complete.values() if m in t["quality"])
                for k in QUALITY_KEYS}
            for m in metrics}
    rows = {key: {name: row | {"energy_ratio": math.nan}
                  for name, row in t["strategies"].items()}
            for key, t in complete.items()}
    strategies = _strategies_over_targets(rows) if rows else {}
    ranked = [m for m in metrics if not math.isnan(mean[m]["weighted_tau"])]
    return payoff | {
        "config": config,
        "n_targets": len(complete),
        "sources": {k: {"adapter_id": v["adapter_id"], "train_seconds": v["train_seconds"],
                        "epochs": v.get("epochs"),
                        "accuracy": (v.get("test") or v.get("validation") or {}).get("accuracy")}
                    for k, v in (state.get("sources") or {}).items()},
        "compute_seconds": compute_seconds(state),
        "mean": mean,
        "best_metric": max(ranked, key=lambda m: mean[m]["weighted_tau"]) if ranked else None,
        "default_ranking": DEFAULT_METRIC,
        "host": {"cpus": os.cpu_count()},
        "strategies": strategies,
        "default_strategy": choose_default_strategy(strategies),
    }
