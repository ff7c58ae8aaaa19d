"""``adapterpool bench``: run (or resume) a benchmark and write its reports."""

from __future__ import annotations

import argparse
import json


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure metrics and the loop against standard LoRA")
    bench.add_argument("--config", required=True, help="JSON file of bench settings")
    bench.add_argument("--run-dir", help="where state and the pool live (overrides the config)")
    bench.add_argument("--out", help="where the reports go (overrides the config)")
    bench.add_argument("--report-only", action="store_true",
                       help="write reports from what is recorded, train nothing")
    bench.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_bench_command(args: argparse.Namespace) -> dict:
    from rich.table import Table

    from ..summary import console
    from .config import BenchConfig
    from .harness import BenchRun, BenchState
    from .report import summarize, write_reports

    config = BenchConfig.from_file(args.config)
    if args.run_dir:
        config.run_dir = args.run_dir
    if args.out:
        config.out_dir = args.out
    if args.report_only:
        from pathlib import Path

        state = BenchState(Path(config.run_dir) / "state.json").data
    else:
        state = BenchRun(config).run()
    summary = summarize(state)
    files = write_reports(summary, config.out_dir)
    if args.json:
        print(json.dumps(summary, indent=1))
        return summary
    table = Table(title="Ranking quality and the loop vs standard LoRA (mean over targets)")
    for name in ("metric", "w. tau", "Pearson", "top-1", "regret@1", "regret@3", "acc ratio",
                 "time ratio", "energy ratio"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for metric, row in sorted(summary["mean"].items(), key=lambda kv: -kv[1]["weighted_tau"]):
        table.add_row(metric, *(f"{row[k]:.3f}" for k in (
            "weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3", "accuracy_ratio",
            "time_ratio", "energy_ratio")))
    console.print(table)
    console.print(f"best metric: [bold]{summary['best_metric']}[/bold]; reports: "
                  + ", ".join(str(f) for f in files))
    return summary
