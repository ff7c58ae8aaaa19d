"""From the recorded units to the evidence: ranking quality per metric, the loop vs standard LoRA,
as JSON, a Markdown table and PNG plots (no task text is ever written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..metrics import ensemble
from .quality import Baseline, Candidate, loop_versus_standard, ranking_quality, simulate_loop

QUALITY_KEYS = ("weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3")
LOOP_KEYS = ("accuracy_ratio", "time_ratio", "energy_ratio", "transfer_rate", "mean_tries")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _accuracy(record: dict) -> float:
    return (record.get("test") or record["validation"])["accuracy"]


def summarize(state: dict) -> dict:
    """Per target and averaged: quality of every metric (and the ensemble), loop-vs-standard."""
    config = state["config"]
    metrics = list(config["metrics"])
    members = [m for m in config["ensemble_members"] if m in metrics]
    per_target: dict = {}
    for key, target in sorted(state.get("targets", {}).items()):
        if not all(k in target for k in ("scores", "finetune", "baseline")):
            continue
        ids = sorted(target["finetune"])
        if set(ids) != set(target["scores"]):
            continue  # fine-tunes still missing: the run is incomplete here
        accuracies = [_accuracy(target["finetune"][i]) for i in ids]
        table = {m: [target["scores"][i]["scores"][m] for i in ids] for m in metrics}
        if members:
            table["ensemble"] = list(ensemble({m: table[m] for m in members}))
        base = target["baseline"]
        baseline = Baseline(base["validation"]["accuracy"], _accuracy(base), base["train_seconds"],
                            base["kwh"] or 0.0)
        threshold = config["threshold_fraction"] * baseline.validation_accuracy
        quality, loop = {}, {}
        for metric, scores in table.items():
            quality[metric] = ranking_quality(scores, accuracies)
            seconds = [target["scores"][i]["seconds"] for i in ids]
            candidates = [
                Candidate(i, s, sec, target["finetune"][i]["validation"]["accuracy"],
                          _accuracy(target["finetune"][i]), target["finetune"][i]["train_seconds"],
                          target["finetune"][i]["kwh"] or 0.0)
                for i, s, sec in zip(ids, scores, seconds)
            ]
            runs = [simulate_loop(candidates, baseline, subset=config["subset"],
                                  max_tries=config["max_tries"], threshold=threshold, seed=seed)
                    for seed in config["loop_seeds"]]
            loop[metric] = loop_versus_standard(runs, baseline)
        per_target[key] = {
            "task": target.get("task"),
            "candidates": {i: {"source_task": target["scores"][i]["source_task"],
                               "accuracy": a, "train_seconds": target["finetune"][i]["train_seconds"],
                               "kwh": target["finetune"][i]["kwh"]}
                           for i, a in zip(ids, accuracies)},
            "baseline": {"accuracy": baseline.test_accuracy, "train_seconds": baseline.train_seconds,
                         "kwh": baseline.kwh, "epochs": base["epochs"]},
            "threshold": threshold,
            "quality": quality,
            "loop": loop,
        }
    names = list(next(iter(per_target.values()))["quality"]) if per_target else []
    mean = {
        m: {k: _nanmean([t["quality"][m][k] for t in per_target.values()])
            for k in QUALITY_KEYS}
        | {k: _nanmean([t["loop"][m][k] for t in per_target.values()]) for k in LOOP_KEYS}
        for m in names
    }
    best = max(mean, key=lambda m: (mean[m]["weighted_tau"], -mean[m]["regret_at_1"])) if mean else None
    return {"config": config, "targets": per_target, "mean": mean, "best_metric": best,
            "metric_seconds": _metric_seconds(state, metrics)}


def _metric_seconds(state: dict, metrics: list[str]) -> dict:
    times = {m: [] for m in metrics}
    for target in state.get("targets", {}).values():
        for entry in (target.get("scores") or {}).values():
            for m in metrics:
                times[m].append(entry.get("metric_seconds", {}).get(m, math.nan))
    return {m: _nanmean(v) for m, v in times.items()}


def markdown(summary: dict) -> str:
    config = summary["config"]
    lines = [
        "# adapterpool benchmark",
        "",
        f"Budget: max_train {config['max_train']}, max_eval {config['max_eval']}, max_length "
        f"{config['max_length']}, source adapters {config['source_epochs']} epochs, transfer "
        f"{config['transfer_epochs']} epochs, standard LoRA up to {config['baseline_max_epochs']} epochs "
        f"with early stopping; scoring on {config['scoring_samples']} target examples. Loop: subset N="
        f"{config['subset']}, K={config['max_tries']} tries, threshold = {config['threshold_fraction']} x "
        f"the standard-LoRA validation accuracy, averaged over {len(config['loop_seeds'])} subset seeds.",
        "",
        "## Ranking quality and the loop vs standard LoRA (mean over targets)",
        "",
        "| metric | weighted tau | Pearson | top-1 hit | regret@1 (pts) | regret@3 (pts) | "
        "acc ratio | time ratio | energy ratio | transfer rate | metric s/candidate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(summary["mean"], key=lambda m: -summary["mean"][m]["weighted_tau"])
    for m in order:
        row = summary["mean"][m]
        seconds = summary["metric_seconds"].get(m, math.nan)
        lines.append(
            f"| {m} | {row['weighted_tau']:.3f} | {row['pearson']:.3f} | {row['top1_hit']:.2f} | "
            f"{row['regret_at_1']:.2f} | {row['regret_at_3']:.2f} | {row['accuracy_ratio']:.3f} | "
            f"{row['time_ratio']:.3f} | {row['energy_ratio']:.3f} | {row['transfer_rate']:.2f} | "
            f"{'-' if math.isnan(seconds) else f'{seconds:.3f}'} |"
        )
    lines += ["", f"Best by weighted tau: **{summary['best_metric']}**.", "",
              "## Per target", ""]
    for key, target in summary["targets"].items():
        lines += [f"### {key}", "",
                  f"Standard LoRA: accuracy {target['baseline']['accuracy']:.3f} in "
                  f"{target['baseline']['train_seconds']:.0f}s ({target['baseline']['epochs']:.1f} epochs).",
                  "", "| candidate (source task) | accuracy after transfer | train s |", "|---|---|---|"]
        for cid, c in sorted(target["candidates"].items(), key=lambda kv: -kv[1]["accuracy"]):
            lines.append(f"| {c['source_task']} | {c['accuracy']:.3f} | {c['train_seconds']:.0f} |")
        lines += ["", "| metric | weighted tau | top-1 | regret@1 | acc ratio | time ratio |",
                  "|---|---|---|---|---|---|"]
        for m in order:
            q, lp = target["quality"][m], target["loop"][m]
            lines.append(f"| {m} | {q['weighted_tau']:.3f} | {q['top1_hit']:.0f} | "
                         f"{q['regret_at_1']:.2f} | {lp['accuracy_ratio']:.3f} | {lp['time_ratio']:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plots(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    targets = list(summary["targets"])
    if not targets:
        return written
    metrics = sorted(summary["mean"], key=lambda m: -summary["mean"][m]["weighted_tau"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(targets)
    for j, key in enumerate(targets):
        values = [summary["targets"][key]["quality"][m]["weighted_tau"] for m in metrics]
        ax.bar(np.arange(len(metrics)) + j * width, values, width, label=key)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=30, ha="right")
    ax.set_ylabel("weighted Kendall tau")
    ax.set_title("Ranking quality per target")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "metric_quality.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    best = summary["best_metric"]
    for axis_key, label, name in (("seconds", "wall time (s)", "accuracy_vs_time.png"),
                                  ("kwh", "energy (kWh)", "accuracy_vs_energy.png")):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for key, target in summary["targets"].items():
            base = target["baseline"]
            loop = target["loop"][best]
            base_x = base["train_seconds"] if axis_key == "seconds" else base["kwh"]
            ratio = loop["time_ratio"] if axis_key == "seconds" else loop["energy_ratio"]
            ax.scatter(base_x, base["accuracy"], marker="s", color="tab:gray")
            ax.scatter(base_x * ratio, base["accuracy"] * loop["accuracy_ratio"], marker="o",
                       color="tab:blue")
            ax.annotate(key, (base_x * ratio, base["accuracy"] * loop["accuracy_ratio"]), fontsize=8)
            ax.plot([base_x, base_x * ratio],
                    [base["accuracy"], base["accuracy"] * loop["accuracy_ratio"]],
                    color="lightgray", linewidth=0.8)
        ax.scatter([], [], marker="s", color="tab:gray", label="standard LoRA")
        ax.scatter([], [], marker="o", color="tab:blue", label=f"adapterpool loop ({best})")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def write_reports(summary: dict, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "README.md").write_text(markdown(summary))
    return [out_dir / "summary.json", out_dir / "README.md", *plots(summary, out_dir)]
