"""The summary as people and tools read it: Markdown tables, the README of the results folder,
PNG plots, and ``summary.json`` (rounded, NaN as null). Only names, numbers and settings are
written — never a task's text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config import AdaptConfig
from .report import ENSEMBLE, REFERENCES, finite, number


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def order(summary: dict) -> list[str]:
    mean = summary["mean"]
    ranked = sorted((m for m in mean if m not in REFERENCES),
                    key=lambda m: -finite(mean[m].get("weighted_tau", math.nan)))
    return ranked + [m for m in REFERENCES if m in mean]


def main_table(summary: dict) -> list[str]:
    lines = [
        "| metric | weighted tau | Pearson | top-1 hit | regret@1 (pts) | regret@3 (pts) | "
        "acc ratio | time ratio | energy ratio | CO2 ratio | transfer rate | metric s/candidate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in order(summary):
        row = summary["mean"][m]
        seconds = summary["metric_seconds"].get(m, math.nan)
        name = f"{m} (reference)" if m in REFERENCES else m
        if m == ENSEMBLE:
            name = f"ensemble ({', '.join(summary['config']['ensemble_members'])})"
        lines.append(
            f"| {name} | {fmt(row.get('weighted_tau'))} | {fmt(row.get('pearson'))} | "
            f"{fmt(row.get('top1_hit'), 2)} | {fmt(row.get('regret_at_1'), 2)} | "
            f"{fmt(row.get('regret_at_3'), 2)} | {fmt(row['accuracy_ratio'])} | "
            f"{fmt(row['time_ratio'])} | {fmt(row['energy_ratio'])} | {fmt(row['co2_ratio'])} | "
            f"{fmt(row['transfer_rate'], 2)} | {fmt(seconds)} |"
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
        f"g = {fmt(cal['max_gain_per_epoch'])} per epoch (the default "
        f"`cutoff_max_gain_per_epoch` is {fmt(AdaptConfig().cutoff_max_gain_per_epoch)}). "
        f"Held out, {cal['false_cuts']} of {cal['passing']} passing curves were cut.", "",
        "| held-out target | g fitted on the others | curves | passing | passing cut | "
        "failing cut | failing epochs saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in cal["per_target"].items():
        lines.append(
            f"| {key} | {fmt(row['max_gain_per_epoch'])} | {row['curves']} | {row['passing']} | "
            f"{row['false_cuts']} | {row['failing_cut']} | "
            f"{fmt(row['failing_epochs_saved'], 2)} |")
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
        lines += [f"| {metric} | {fmt(row['min_score'])} | {row['right']} of {row['targets']} |"
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
            f"| {name} | {fmt(row['accuracy_ratio'])} | {fmt(row['time_ratio'])} | "
            f"{fmt(row['max_time_ratio'])} | {fmt(row['energy_ratio'])} | "
            f"{fmt(row['transfer_rate'], 2)} | {row['n_targets']} |")
    targets = sorted({t for row in strategies.values() for t in row["per_target"]})
    lines += ["", "Per target (accuracy ratio / time ratio):", "",
              "| strategy | " + " | ".join(targets) + " |",
              "|---|" + "---|" * len(targets)]
    for name, row in sorted(strategies.items()):
        cells = [(f"{fmt(row['per_target'][t]['accuracy_ratio'])} / "
                  f"{fmt(row['per_target'][t]['time_ratio'])}")
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
        f"budget); standard LoRA until early stopping on validation (patience 3 epochs, one "
        f"evaluation per epoch), at most {c['baseline_max_epochs']} epochs; metrics on "
        f"{c['scoring_samples']} target training examples (one forward pass per candidate).",
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
            lines.append(f"| {fraction} | {fmt(row['accuracy_ratio'])} | "
                         f"{fmt(row['time_ratio'])} "
                         f"| {fmt(row['co2_ratio'])} | {fmt(row['transfer_rate'], 2)} |")
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
        for m in order(summary):
            q, lp = target["quality"].get(m, {}), target["loop"][m]
            lines.append(
                f"| {m} | {fmt(q.get('weighted_tau'))} | {fmt(q.get('pearson'))} | "
                f"{fmt(q.get('top1_hit'), 2)} | {fmt(q.get('regret_at_1'), 1)} | "
                f"{fmt(q.get('regret_at_3'), 1)} | {fmt(lp['accuracy_ratio'])} | "
                f"{fmt(lp['time_ratio'])} | {fmt(lp['co2_ratio'])} |")
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
    metrics = [m for m in order(summary) if m not in REFERENCES]
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
            bx = base["train_seconds"] if axis == "seconds" else number(base["co2_kg"]) * scale
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
    (out_dir / "summary.json").write_text(json.dumps(rounded(summary), indent=1) + "\n")
    if "groups" in summary:  # a converged, multi-seed ground truth (bench/payoff.py)
        from .payoff_render import payoff_markdown

        (out_dir / "README.md").write_text(payoff_markdown(summary))
        return [out_dir / "summary.json", out_dir / "README.md"]
    (out_dir / "README.md").write_text(markdown(summary))
    return [out_dir / "summary.json", out_dir / "README.md", *plots(summary, out_dir)]


def rounded(value, digits: int = 6):
    """Fewer digits and NaN as null: a smaller, valid JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value
