"""Readable summaries (rich tables) of rankings, adapt reports and pool listings."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Logs and CI are not terminals: give tables room instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=120)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _energy(energy: dict | None) -> str:
    if not energy or energy.get("kwh") is None:
        return "not measured"
    return f"{energy['kwh'] * 1000:.3f} Wh, {energy['co2_kg'] * 1000:.3f} g CO2"


def ranking_table(scores: list[dict], metrics: list[str], title: str = "Candidates") -> Table:
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("adapter")
    table.add_column("source task")
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("seconds", justify="right")
    for i, row in enumerate(scores, 1):
        table.add_row(
            str(i),
            row["adapter_id"],
            row["source_task"],
            *(_fmt(row["scores"][m], 4) for m in metrics),
            _fmt(row["seconds"], 1),
        )
    return table


def print_warnings(warnings: list[str] | None) -> None:
    """The ranking's warnings under its table: why a candidate has no score (NaN, shown '-')."""
    for line in warnings or []:
        console.print(f"[yellow]warning:[/yellow] {line} (NaN, ranked last)", highlight=False)


SHORT_NAMES = {"accuracy": "acc", "f1_macro": "F1", "rouge_l": "ROUGE-L", "exact_match": "EM",
               "chrf": "chrF"}


def attempts_table(report: dict) -> Table:
    """One row per attempt with the task kind's first two threshold metrics (accuracy and macro-F1
    for classification and images, ROUGE-L and exact match for text2text)."""
    threshold = report["threshold"]
    table = Table(title=f"Attempts on {report['task']['name']} ("
                  + (f"threshold {threshold['metric']} >= {threshold['value']}"
                     if threshold["value"] is not None else "no threshold: the best-ranked "
                     "candidate trained until early stopping") + ")")
    attempts = report["attempts"]
    shown = list(attempts[0]["validation"])[:2] if attempts else ["accuracy", "f1_macro"]
    names = [SHORT_NAMES.get(m, m) for m in shown]
    for name in ("kind", "from adapter", "epochs", *(f"{split} {n}" for split in ("val", "test")
                                                     for n in names), "train s", "passed"):
        table.add_column(name, justify="right" if name not in ("kind", "from adapter") else "left")
    for a in attempts:
        test = a.get("test") or {}
        table.add_row(
            a["kind"], a["adapter_id"] or "-", _fmt(a["epochs"], 2),
            *(_fmt(a["validation"].get(m)) for m in shown), *(_fmt(test.get(m)) for m in shown),
            _fmt(a["train_seconds"], 1), "yes" if a["passed"] else "no",
        )
    return table


def print_adapt_report(report: dict) -> None:
    if report["scores"]:
        rows = [{**s, "scores": {report["metric"]: s["score"]}} for s in report["scores"]]
        console.print(
            ranking_table(rows, [report["metric"]], title=f"Ranking by {report['metric']}")
        )
        print_warnings(report.get("warnings"))
    console.print(attempts_table(report))
    for example in report.get("examples") or []:  # text2text: what the final model writes
        console.print(f"[dim]input[/dim]  {escape(example['input'])}\n"
                      f"[bold]output[/bold] {escape(example['output'])}\n"
                      f"[dim]reference[/dim] {escape(example['references'][0])}")
    timing = report["timing"]
    console.print(
        f"outcome: [bold]{report['outcome']}[/bold]; "
        f"scoring {timing['scoring_seconds']:.1f}s, training {timing['training_seconds']:.1f}s, "
        f"total {timing['total_seconds']:.1f}s; energy {_energy(report['energy'])}; "
        f"seed {report['seed']}"
    )
    if report.get("contributed_adapter_id"):
        console.print(f"contributed to the pool as [bold]{report['contributed_adapter_id']}[/bold]")
    if report.get("adapter_dir"):
        console.print(f"adapter: {report['adapter_dir']}")


def pool_table(records: Iterable, title: str) -> Table:
    table = Table(title=title)
    for name in ("id", "task", "kind", "labels", "PEFT", "val acc", "parent", "created"):
        table.add_column(name)
    for r in records:
        validation = (r.metrics or {}).get("validation") or {}
        table.add_row(
            r.id, r.task_name, r.task_kind, str(len(r.label_names)), r.peft_type,
            _fmt(validation.get("accuracy")), r.parent_id or "-", r.created_at[:19],
        )
    return table


def final_attempt(report: dict) -> dict:
    """The attempt whose adapter the run returned (marked ``final``; older reports: first pass)."""
    attempts = report["attempts"]
    return next((a for a in attempts if a.get("final")),
                next((a for a in attempts if a["passed"]), attempts[-1]))


def savings(loop: dict, standard: dict) -> dict:
    """The loop against standard LoRA on the same target: time and energy ratios, test accuracy
    difference in points (loop minus standard)."""
    def test_acc(report: dict) -> float | None:
        return (final_attempt(report).get("test") or {}).get("accuracy")

    kwh = [(r.get("energy") or {}).get("kwh") for r in (loop, standard)]
    acc = [test_acc(r) for r in (loop, standard)]
    cpu = [r["timing"].get("total_cpu_seconds") for r in (loop, standard)]
    return {
        "time_ratio": loop["timing"]["total_seconds"] / standard["timing"]["total_seconds"],
        # this process's CPU time: the same work measures the same beside other jobs
        "cpu_time_ratio": cpu[0] / cpu[1] if None not in cpu and cpu[1] else None,
        "energy_ratio": kwh[0] / kwh[1] if None not in kwh and kwh[1] else None,
        "test_accuracy_points": 100 * (acc[0] - acc[1]) if None not in acc else None,
    }


def savings_line(loop: dict, standard: dict) -> str:
    s = savings(loop, standard)
    energy = "" if s["energy_ratio"] is None else f", {s['energy_ratio']:.0%} of its energy"
    points = s["test_accuracy_points"]
    accuracy = "" if points is None else f"; test accuracy {points:+.1f} points"
    return (f"adapt took {s['time_ratio']:.0%} of standard LoRA's time{energy} "
            f"(saved {1 - s['time_ratio']:.0%}){accuracy}")


def comparison_table(rows: list[tuple[str, dict]]) -> Table:
    """Side by side: adapt vs standard LoRA (label, report-like dict)."""
    table = Table(title="Transfer from the pool vs standard LoRA")
    table.add_column("")
    for label, _ in rows:
        table.add_column(label, justify="right")

    finals = [final_attempt(r) for _, r in rows]
    table.add_row("outcome", *(r["outcome"] for _, r in rows))
    table.add_row("started from", *(a["adapter_id"] or "scratch" for a in finals))
    for split in ("validation", "test"):
        for metric, name in (("accuracy", "acc"), ("f1_macro", "macro-F1")):
            table.add_row(
                f"{split} {name}", *(_fmt((a.get(split) or {}).get(metric)) for a in finals)
            )
    table.add_row("epochs (final)", *(_fmt(a["epochs"], 2) for a in finals))
    table.add_row("scoring s", *(_fmt(r["timing"]["scoring_seconds"], 1) for _, r in rows))
    table.add_row("training s", *(_fmt(r["timing"]["training_seconds"], 1) for _, r in rows))
    table.add_row("total s", *(_fmt(r["timing"]["total_seconds"], 1) for _, r in rows))
    table.add_row("energy", *(_energy(r["energy"]) for _, r in rows))
    return table
