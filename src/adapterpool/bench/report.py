"""From the recorded units to the evidence: ranking quality per metric, the loop vs standard LoRA,
as JSON, a Markdown table and PNG plots. Only names, numbers and settings are written — never a
task's text.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import AdaptConfig
from ..metrics import ensemble
from ..task_kinds import DEFAULT_METRIC
from .calibration import calibrate_cutoff, calibrate_min_score
from .config import BenchConfig
from .quality import (
    Baseline,
    Candidate,
    loop_versus_standard,
    random_ranking_quality,
    ranking_quality,
    simulate_loop,
)

QUALITY_KEYS = ("weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3")
LOOP_KEYS = ("accuracy_ratio", "time_ratio", "energy_ratio", "co2_ratio", "transfer_rate",
             "mean_tries")
ENSEMBLE = "ensemble"
REFERENCES = ("random", "oracle")  # a random ranking, and one that knows the fine-tuned accuracies


def _nanmean(values) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _num(value) -> float:
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
    table = {m: [_num(v) for v in values] for m, values in table.items()}
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
                "scores": {m: _num(v) for m, v in target["scores"][i]["scores"].items()},
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
            "accuracy_ratio": _nanmean(accuracies) / base_acc if base_acc else math.nan,
            "time_ratio": float(np.mean([r["seconds"] for r in runs])) / base["train_seconds"],
            "energy_ratio": (float(np.mean(kwh)) / base["kwh"]
                             if kwh and len(kwh) == len(runs) and base.get("kwh") else math.nan),
            "transfer_rate": float(np.mean([r["outcome"] == "transfer" for r in runs])),
            "outcomes": {o: sum(r["outcome"] == o for r in runs)
                         for o in sorted({r["outcome"] for r in runs})},
            "mean_attempts": float(np.mean([len(r["attempts"]) for r in runs])),
            "accuracy": _nanmean(accuracies),
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
    return max(strategies, key=lambda s: _finite(strategies[s]["accuracy_ratio"]))


def _strategies_over_targets(per_target: dict) -> dict:
    names = sorted({s for t in per_target.values() for s in t})
    out = {}
    for name in names:
        rows = {key: t[name] for key, t in per_target.items() if name in t}
        out[name] = {k: _nanmean(r[k] for r in rows.values()) for k in STRATEGY_KEYS}
        out[name]["max_time_ratio"] = max(r["time_ratio"] for r in rows.values())
        out[name]["per_target"] = {
            key: {k: r[k] for k in ("accuracy_ratio", "time_ratio", "energy_ratio",
                                    "transfer_rate", "outcomes")}
            for key, r in rows.items()}
        out[name]["n_targets"] = len(rows)
    return out


def summarize(state: dict) -> dict:
    """Per target and averaged over targets: quality of every metric (and of the ensemble), the
    loop vs standard LoRA; targets whose units are not all recorded yet are listed as incomplete.
    """
    config = _config(state)
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
            row |= {k: _nanmean(t["quality"][m][k] for t in per_target.values())
                    for k in QUALITY_KEYS}
        row |= {k: _nanmean(t["loop"][m][k] for t in per_target.values()) for k in LOOP_KEYS}
        mean[m] = row
    sweep = {
        m: {f: {k: _nanmean(t["threshold_sweep"][m][f][k] for t in per_target.values())
                for k in ("accuracy_ratio", "time_ratio", "co2_ratio", "transfer_rate")}
            for f in next(iter(per_target.values()))["threshold_sweep"][m]}
        for m in methods
    } if per_target else {}
    candidates = [m for m in mean if m not in REFERENCES]

    def best_by(key: str, sign: float) -> str | None:
        usable = [m for m in candidates if not math.isnan(mean[m].get(key, math.nan))]
        return max(usable, key=lambda m: sign * mean[m][key]) if usable else None

    best = (max(candidates, key=lambda m: (_finite(mean[m]["weighted_tau"]),
                                           -_finite(mean[m]["regret_at_1"], 1e9)))
            if candidates else None)
    return {
        "config": config,
        "n_targets": len(per_target),
        "incomplete_targets": incomplete,
        "sources": {k: {"adapter_id": v["adapter_id"], "train_seconds": v["train_seconds"],
                        "accuracy": (v.get("test") or v.get("validation") or {}).get("accuracy")}
                    for k, v in (state.get("sources") or {}).items()},
        "compute_seconds": _compute_seconds(state),
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
            values = [_num(e["scores"].get(metric)) for e in scores.values()]
            values = [v for v in values if not math.isnan(v)]
            if values:
                tops.setdefault(metric, {})[key] = (max(values), passes)
    if not tops or len(next(iter(tops.values()))) < 3:
        return None
    return {metric: calibrate_min_score(by_target) for metric, by_target in tops.items()}


def _finite(value: float, fill: float = -1e9) -> float:
    return fill if value is None or math.isnan(value) else value


def _compute_seconds(state: dict) -> dict:
    sources = sum(v.get("train_seconds") or 0.0 for v in (state.get("sources") or {}).values())
    scoring = finetune = baseline = 0.0
    for target in (state.get("targets") or {}).values():
        scoring += sum(e["seconds"] for e in (target.get("scores") or {}).values())
        finetune += sum(e["train_seconds"] for e in (target.get("finetune") or {}).values())
        baseline += (target.get("baseline") or {}).get("train_seconds") or 0.0
    return {"sources": sources, "scoring": scoring, "finetune": finetune, "baseline": baseline,
            "total": sources + scoring + finetune + baseline}


def _metric_seconds(state: dict, metrics: list[str], members: list[str]) -> dict:
    """Mean seconds per candidate of each metric alone on the scoring sample (ensemble: members)."""
    times = {m: [] for m in metrics}
    for target in (state.get("targets") or {}).values():
        for entry in (target.get("scores") or {}).values():
            for m in metrics:
                times[m].append((entry.get("metric_seconds") or {}).get(m, math.nan))
    out = {m: _nanmean(v) for m, v in times.items()}
    if members:
        out[ENSEMBLE] = sum(out[m] for m in members)
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _order(summary: dict) -> list[str]:
    mean = summary["mean"]
    ranked = sorted((m for m in mean if m not in REFERENCES),
                    key=lambda m: -_finite(mean[m].get("weighted_tau", math.nan)))
    return ranked + [m for m in REFERENCES if m in mean]


def main_table(summary: dict) -> list[str]:
    lines = [
        "| metric | weighted tau | Pearson | top-1 hit | regret@1 (pts) | regret@3 (pts) | "
        "acc ratio | time ratio | energy ratio | CO2 ratio | transfer rate | metric s/candidate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in _order(summary):
        row = summary["mean"][m]
        seconds = summary["metric_seconds"].get(m, math.nan)
        name = f"{m} (reference)" if m in REFERENCES else m
        if m == ENSEMBLE:
            name = f"ensemble ({', '.join(summary['config']['ensemble_members'])})"
        lines.append(
            f"| {name} | {_fmt(row.get('weighted_tau'))} | {_fmt(row.get('pearson'))} | "
            f"{_fmt(row.get('top1_hit'), 2)} | {_fmt(row.get('regret_at_1'), 2)} | "
            f"{_fmt(row.get('regret_at_3'), 2)} | {_fmt(row['accuracy_ratio'])} | "
            f"{_fmt(row['time_ratio'])} | {_fmt(row['energy_ratio'])} | {_fmt(row['co2_ratio'])} | "
            f"{_fmt(row['transfer_rate'], 2)} | {_fmt(seconds)} |"
        )
    return lines


def calibration_table(summary: dict) -> list[str]:
    """``cutoff``'s gain, fitted on the other targets' curves and checked on each held-out one."""
    cal = summary.get("cutoff_calibration")
    if not cal:
        return []
    lines = [
        "## Cutoff calibration (leave-one-target-out)", "",
        "The `cutoff` rule gives up on a transfer when best-so-far + g x remaining epochs < "
        f"threshold (after {cal['min_epochs']} epochs of a {cal['budget_epochs']}-epoch attempt). "
        "Replayed on every recorded ground-truth curve at every threshold of the sweep: for each "
        "held-out target, g is the least value that cuts no passing curve of the other targets, "
        "then the held-out target's curves are replayed with it. Fitted on all targets: "
        f"g = {_fmt(cal['max_gain_per_epoch'])} per epoch (the default "
        f"`cutoff_max_gain_per_epoch` is {_fmt(AdaptConfig().cutoff_max_gain_per_epoch)}). "
        f"Held out, {cal['false_cuts']} of {cal['passing']} passing curves were cut.", "",
        "| held-out target | g fitted on the others | curves | passing | passing cut | "
        "failing cut | failing epochs saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in cal["per_target"].items():
        lines.append(
            f"| {key} | {_fmt(row['max_gain_per_epoch'])} | {row['curves']} | {row['passing']} | "
            f"{row['false_cuts']} | {row['failing_cut']} | "
            f"{_fmt(row['failing_epochs_saved'], 2)} |")
    lines.append("")
    skip = summary.get("min_score_calibration")
    if skip:
        lines += [
            "`--min-score` (skip transfer when the top candidate scores below it), per metric: "
            "fitted on the other targets as the midpoint between the highest top score where no "
            "transfer passes and the lowest where one does (none when they overlap), then applied "
            "to the held-out target; right = skipped exactly when nothing would have passed.", "",
            "| metric | min score fitted on all | held-out targets decided right |",
            "|---|---|---|"]
        lines += [f"| {metric} | {_fmt(row['min_score'])} | {row['right']} of {row['targets']} |"
                  for metric, row in sorted(skip.items(), key=lambda kv: -kv[1]["right"])]
        lines.append("")
    return lines


def strategy_table(summary: dict) -> list[str]:
    """The loop's strategies, each run for real (``adapt --strategy``) on every strategy target."""
    strategies = summary.get("strategies") or {}
    if not strategies:
        return []
    c = summary["config"]
    lines = [
        "## Loop strategies (real runs)", "",
        f"`adapt --strategy S` with ranking metric {c.get('strategy_metric')}, N={c['subset']}, "
        f"K={c['max_tries']}, transfer budget {c['transfer_epochs']} epochs, threshold "
        f"{c['threshold_fraction']} x the standard-LoRA validation accuracy, fallback trained as "
        f"the baseline; seeds {c.get('strategy_seeds')}. Ratios are loop / standard LoRA on the "
        "same target (means over seeds, then over targets); the time includes scoring. Default "
        f"(cheapest that keeps accuracy >= 0.995 and no target above 1.05x): "
        f"**{summary.get('default_strategy')}**.", "",
        "| strategy | accuracy ratio | time ratio | worst target time | energy ratio | "
        "transfer rate | targets |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in sorted(strategies.items(), key=lambda kv: kv[1]["time_ratio"]):
        lines.append(
            f"| {name} | {_fmt(row['accuracy_ratio'])} | {_fmt(row['time_ratio'])} | "
            f"{_fmt(row['max_time_ratio'])} | {_fmt(row['energy_ratio'])} | "
            f"{_fmt(row['transfer_rate'], 2)} | {row['n_targets']} |")
    targets = sorted({t for row in strategies.values() for t in row["per_target"]})
    lines += ["", "Per target (accuracy ratio / time ratio):", "",
              "| strategy | " + " | ".join(targets) + " |",
              "|---|" + "---|" * len(targets)]
    for name, row in sorted(strategies.items()):
        cells = [(f"{_fmt(row['per_target'][t]['accuracy_ratio'])} / "
                  f"{_fmt(row['per_target'][t]['time_ratio'])}")
                 if t in row["per_target"] else "-" for t in targets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(summary: dict) -> str:
    c = summary["config"]
    compute = summary["compute_seconds"]
    targets = summary["targets"]
    truth = {t["ground_truth"] for t in targets.values()}
    lines = [
        "# adapterpool benchmark: transferability metrics and the loop vs standard LoRA",
        "",
        "Produced by `adapterpool bench` (`src/adapterpool/bench`); regenerate the reports from "
        "the recorded state with `adapterpool bench --config benchmarks/bench_config.json "
        "--report-only`.",
        "",
        "## Setup",
        "",
        f"- Targets ({summary['n_targets']}, leave-one-out): {', '.join(targets) or 'none yet'}"
        + (f"; not finished yet: {', '.join(summary['incomplete_targets'])}"
           if summary["incomplete_targets"] else "") + ".",
        f"- Pool: {', '.join(summary['sources'])} — for each target, every member except the "
        "target's own task.",
        f"- Base model: {c.get('base_model') or 'all-MiniLM-L6-v2 (packaged)'}; "
        f"{_peft_setup(c.get('peft'))}, head trained; this machine: "
        f"{summary['host']['cpus']} CPU cores, shared with other work."
        + (f" Sources: {summary['sources_trained_on']}." if summary.get("sources_trained_on")
           else ""),
        f"- Budget: at most {c['max_train']} training and {c['max_eval']} validation/test examples "
        f"per task, max length {c['max_length']} tokens; {_source_budget(c)}; every transfer "
        f"{c['transfer_epochs']} epochs from the pool adapter (the loop's "
        f"budget); standard LoRA until early stopping on validation (patience 3 evaluations, one "
        f"per epoch), at most {c['baseline_max_epochs']} epochs; metrics on {c['scoring_samples']} "
        "target training examples (one forward pass per candidate).",
        f"- Ground truth: the {'/'.join(sorted(truth)) or 'test'} accuracy after fine-tuning "
        "from each candidate (same seed and budget for all)."
        + (f" Computed on {'; '.join(summary['ground_truth_on'])}; replayed costs are in this "
           "machine's seconds: a fine-tune costs its epochs at the target's standard-LoRA "
           "seconds per epoch measured here, scoring is scaled to the timed runs' measured "
           "scoring seconds (`costed_here`)." if summary.get("ground_truth_on") else ""),
        f"- Loop replay: seeded random subset N={c['subset']}, best-first K={c['max_tries']} "
        f"tries, pass when validation accuracy >= {c['threshold_fraction']} x the standard-LoRA "
        "validation accuracy of that target, else standard LoRA (its recorded cost and result); "
        f"mean over {len(c['loop_seeds'])} subset seeds. Each try is the recorded ground-truth "
        "fine-tune from that candidate; the scoring cost counted is the forward pass plus the "
        "one metric (the ensemble pays for each member). Ratios: loop / standard LoRA (mean "
        "accuracy, wall time, energy, CO2).",
        f"- Compute recorded: {compute['total'] / 60:.0f} min "
        f"(sources {compute['sources'] / 60:.0f}, "
        f"scoring {compute['scoring'] / 60:.1f}, transfers {compute['finetune'] / 60:.0f}, "
        f"baselines {compute['baseline'] / 60:.0f}). Energy and CO2 from codecarbon "
        "(estimated from CPU load where no power meter is readable).",
        "",
        "## Results (mean over targets)",
        "",
        *main_table(summary),
        "",
        "Rows are sorted by weighted Kendall tau (scipy.stats.weightedtau of score vs accuracy). "
        "Regret in accuracy points (best candidate minus the chosen one). *random*: expected "
        "values of a random ranking; *oracle*: the loop ranking by the true accuracies "
        "(its lower bound on regret and best transfer rate). metric s/candidate: the metric alone "
        f"on {c['scoring_samples']} examples.",
        "",
        f"**Best metric by mean weighted tau: {summary['best_metric']}**"
        + (f" (by regret@1: {summary['best_by']['regret_at_1']}, by top-1 hit: "
           f"{summary['best_by']['top1_hit']}, by loop accuracy ratio: "
           f"{summary['best_by']['loop_accuracy_ratio']})." if summary["best_metric"] else "."),
        "",
    ]
    best = summary["best_metric"]
    if best and best in summary["threshold_sweep"]:
        lines += [f"### Threshold sensitivity ({best}; fraction of standard-LoRA validation "
                  "accuracy)", "",
                  "| fraction | acc ratio | time ratio | CO2 ratio | transfer rate |",
                  "|---|---|---|---|---|"]
        for fraction, row in summary["threshold_sweep"][best].items():
            lines.append(f"| {fraction} | {_fmt(row['accuracy_ratio'])} | "
                         f"{_fmt(row['time_ratio'])} "
                         f"| {_fmt(row['co2_ratio'])} | {_fmt(row['transfer_rate'], 2)} |")
        lines.append("")
    lines += strategy_table(summary)
    lines += calibration_table(summary)
    lines += ["![weighted tau per target](metric_quality.png)", "",
              "![accuracy vs wall time](accuracy_vs_time.png) "
              "![accuracy vs CO2](accuracy_vs_co2.png)",
              "", "## Per target", ""]
    for key, target in targets.items():
        base = target["baseline"]
        lines += [
            f"### {key}", "",
            f"Standard LoRA: accuracy {base['accuracy']:.3f} in {base['train_seconds']:.0f} s "
            f"({base['epochs']:.1f} epochs). Threshold: validation accuracy >= "
            f"{target['threshold']:.3f}. Scoring energy: {target['scoring_energy']}.", "",
            "| candidate (source task) | accuracy after transfer | transfer s "
            "| scoring forward s |",
            "|---|---|---|---|",
        ]
        for _, cand in sorted(target["candidates"].items(), key=lambda kv: -kv[1]["accuracy"]):
            lines.append(f"| {cand['source_task']} | {cand['accuracy']:.3f} | "
                         f"{cand['train_seconds']:.0f} | {cand['scoring_forward_seconds']:.1f} |")
        lines += ["", "| metric | weighted tau | Pearson | top-1 | regret@1 | regret@3 | acc ratio "
                  "| time ratio | CO2 ratio |", "|---|---|---|---|---|---|---|---|---|"]
        for m in _order(summary):
            q, lp = target["quality"].get(m, {}), target["loop"][m]
            lines.append(
                f"| {m} | {_fmt(q.get('weighted_tau'))} | {_fmt(q.get('pearson'))} | "
                f"{_fmt(q.get('top1_hit'), 2)} | {_fmt(q.get('regret_at_1'), 1)} | "
                f"{_fmt(q.get('regret_at_3'), 1)} | {_fmt(lp['accuracy_ratio'])} | "
                f"{_fmt(lp['time_ratio'])} | {_fmt(lp['co2_ratio'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plots(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    targets = list(summary["targets"])
    if not targets:
        return written
    metrics = [m for m in _order(summary) if m not in REFERENCES]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / (len(targets) + 1)
    x = np.arange(len(metrics))
    for j, key in enumerate(targets):
        values = [summary["targets"][key]["quality"][m]["weighted_tau"] for m in metrics]
        ax.bar(x + j * width, np.nan_to_num(values), width, label=key)
    ax.bar(x + len(targets) * width, [np.nan_to_num(summary["mean"][m]["weighted_tau"])
                                      for m in metrics], width, color="black", label="mean")
    ax.set_xticks(x + 0.4 - width / 2, metrics, rotation=30, ha="right")
    ax.set_ylabel("weighted Kendall tau (score vs fine-tuned accuracy)")
    ax.set_title("Ranking quality per target")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8, ncol=min(5, len(targets) + 1))
    fig.tight_layout()
    written.append(out_dir / "metric_quality.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    best = summary["best_metric"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, label, name, scale in (("seconds", "wall time (s)", "accuracy_vs_time.png", 1.0),
                                     ("co2", "CO2 (g)", "accuracy_vs_co2.png", 1000.0)):
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for j, (key, target) in enumerate(summary["targets"].items()):
            colour = colours[j % len(colours)]
            base = target["baseline"]
            bx = base["train_seconds"] if axis == "seconds" else _num(base["co2_kg"]) * scale
            points = [("s", bx, base["accuracy"])]
            for marker, method in (("o", best), ("x", "random")):
                loop = target["loop"][method]
                lx = loop["seconds"] if axis == "seconds" else loop["co2_kg"] * scale
                points.append((marker, lx, loop["accuracy"]))
            for marker, px, py in points:
                if not math.isnan(px):
                    ax.scatter(px, py, marker=marker, color=colour, s=40)
            if not math.isnan(points[0][1]) and not math.isnan(points[1][1]):
                ax.plot([points[0][1], points[1][1]], [points[0][2], points[1][2]], color=colour,
                        linewidth=0.7, alpha=0.5)
            ax.annotate(key, (points[0][1], points[0][2]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
        ax.scatter([], [], marker="s", color="gray", label="standard LoRA (early stopping)")
        ax.scatter([], [], marker="o", color="gray", label=f"adapterpool loop ({best})")
        ax.scatter([], [], marker="x", color="gray", label="loop, random ranking")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{next(iter(summary['targets'].values()))['ground_truth']} accuracy")
        ax.set_title(f"Accuracy vs {'wall time' if axis == 'seconds' else 'CO2'} per target")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def _peft_setup(peft) -> str:
    """The run's PEFT method in a few words (``BenchConfig.peft``)."""
    if peft is None:
        return ("the default LoRA r=16 (peft's per-model targets; runs recorded before "
                "BenchConfig.peft existed: query/key/value)")
    if isinstance(peft, str):
        return f"PEFT method {peft} with its defaults"
    targets = peft.get("target_modules")
    targets = "/".join(targets) if isinstance(targets, list) else "peft's per-model targets"
    return f"{peft.get('peft_type', 'LORA')} r={peft.get('r', '?')} on {targets}"


def _source_budget(c: dict) -> str:
    if c.get("source_max_epochs"):
        return (f"source adapters on up to {c.get('source_max_train') or c['max_train']} "
                f"examples until early stopping (patience {c.get('source_patience')} epochs), at "
                f"most {c['source_max_epochs']} epochs")
    return f"source adapters {c['source_epochs']} epochs"


def write_reports(summary: dict, out_dir: str | Path) -> list[Path]:
    """``summary.json``, ``README.md`` and the PNG plots in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(_rounded(summary), indent=1) + "\n")
    (out_dir / "README.md").write_text(markdown(summary))
    return [out_dir / "summary.json", out_dir / "README.md", *plots(summary, out_dir)]


def _rounded(value, digits: int = 6):
    """Fewer digits and NaN as null: a smaller, valid JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value
