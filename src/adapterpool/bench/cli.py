"""``adapterpool bench``: run (or resume) a benchmark and write its reports.

Also runnable on its own: ``python -m adapterpool.bench.cli --config benchmarks/bench_config.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

BUDGET_FLAGS = {  # flag -> BenchConfig field (overrides the config file)
    "max_train": int, "max_eval": int, "max_length": int, "source_epochs": int,
    "transfer_epochs": int, "baseline_max_epochs": int, "scoring_samples": int, "subset": int,
    "max_tries": int, "threshold_fraction": float, "seed": int,
}


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    bench = sub.add_parser(
        "bench", help="measure the metrics' ranking quality and the loop against standard LoRA",
        description="Build (or reuse) a pool, score every candidate for every target with every "
        "metric, fine-tune from every candidate, train the standard-LoRA baseline; report "
        "ranking quality and the loop vs standard LoRA. Resumable: rerun the same command.",
    )
    _add_arguments(bench)
    return bench


def _add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--config", help="JSON file of bench settings (BenchConfig fields)")
    bench.add_argument("--discover", action="append", default=None, metavar="DIR",
                       help="a folder whose sub-folders with meta.json are pool members and "
                       "targets, leave-one-out (repeatable)")
    bench.add_argument("--source", action="append", default=None, metavar="TASK",
                       help="an extra pool member only (folder, hf:..., builtin:...; repeatable)")
    bench.add_argument("--target", action="append", default=None, metavar="TASK",
                       help="an extra target only (repeatable)")
    bench.add_argument("--only-target", action="append", default=None, metavar="KEY",
                       help="compute this target only for now (spec or short key, one of the "
                       "config's targets; repeatable): finish some targets whole first")
    bench.add_argument("--metric", action="append", default=None, help="metrics to compare")
    for name, kind in BUDGET_FLAGS.items():
        bench.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    bench.add_argument("--base-model", help="base model of a new pool")
    bench.add_argument("--run-dir", help="where state and the pool live (overrides the config)")
    bench.add_argument("--out", help="where the reports go (overrides the config)")
    bench.add_argument("--report-only", action="store_true",
                       help="write reports from what is recorded, train nothing")
    bench.add_argument("--no-energy", action="store_true", help="time only, no codecarbon")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.add_argument("--json", action="store_true", help="print the summary as JSON")
    ray = bench.add_argument_group(
        "Ray", "the units as Ray tasks (pip install adapterpool[ray]): sources and ground truth "
        "side by side, then each target's timed units whole on one node, one per node at a time")
    ray.add_argument("--ray", action="store_true", help="run on Ray (a local Ray unless "
                     "--ray-address is given)")
    ray.add_argument("--ray-address", metavar="auto|HOST:PORT",
                     help="a running Ray cluster (implies --ray); its nodes must see the run "
                     "folder under the same path")
    ray.add_argument("--stages", help="with --ray: stages to run, comma-separated "
                     "(sources, ground-truth, timed; default all)")
    ray.add_argument("--timed-cpus", type=int, help="with --ray: CPUs a timed target holds "
                     "(default: the smallest node's, i.e. one timed target per node)")
    ray.add_argument("--unit-gpus", type=float, default=1.0,
                     help="with --ray on GPUs: the share of a GPU each source or ground-truth "
                     "task asks for (0.1: ten side by side on one GPU; timed tasks always hold "
                     "a whole one)")
    ray.add_argument("--deadline", type=float, help="with --ray: seconds after which no unit "
                     "starts (rerun to resume)")


def build_config(args: argparse.Namespace):
    from .config import BenchConfig

    config = BenchConfig.from_file(args.config) if args.config else BenchConfig()
    if args.discover:
        config.discover = list(args.discover)
    if args.source:
        config.extra_sources = list(args.source)
    if args.target:
        config.targets = list(args.target)
    if args.only_target:
        config.only_targets = _narrowed_targets(config, args.only_target)
    if args.metric:
        config.metrics = list(args.metric)
        config.ensemble_members = [m for m in config.ensemble_members if m in config.metrics]
    for name in BUDGET_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    if args.base_model:
        config.base_model = args.base_model
    if args.run_dir:
        config.run_dir = args.run_dir
    if args.out:
        config.out_dir = args.out
    config.validate()
    return config


def _narrowed_targets(config, wanted: list[str]) -> list[str]:
    """``--only-target``: a subset of the config's targets, or a clear error naming the others."""
    from ..errors import UsageError
    from .harness import task_key

    targets = config.all_targets()
    known = set(targets) | {task_key(t) for t in targets}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UsageError(f"bench: --only-target {', '.join(unknown)} is not a target of this "
                         f"config; its targets: {', '.join(task_key(t) for t in targets)}")
    return list(wanted)


def summary_table(summary: dict):
    from rich.table import Table

    from .render import fmt, order
    from .report import REFERENCES

    table = Table(title=f"Ranking quality and the loop vs standard LoRA "
                        f"(mean over {summary['n_targets']} targets)")
    columns = ("metric", "w. tau", "Pearson", "top-1", "regret@1", "regret@3", "acc ratio",
               "time ratio", "energy ratio", "CO2 ratio", "transfer")
    for name in columns:
        table.add_column(name, justify="left" if name == "metric" else "right")
    for metric in order(summary):
        row = summary["mean"][metric]
        table.add_row(
            metric + (" (ref.)" if metric in REFERENCES else ""),
            *(fmt(row.get(k, math.nan), 3 if k in ("weighted_tau", "pearson") else 2)
              for k in ("weighted_tau", "pearson", "top1_hit", "regret_at_1", "regret_at_3")),
            *(fmt(row.get(k, math.nan)) for k in ("accuracy_ratio", "time_ratio", "energy_ratio",
                                                  "co2_ratio")),
            fmt(row.get("transfer_rate", math.nan), 2),
        )
    return table


def run_bench_command(args: argparse.Namespace) -> dict:
    from ..cli.display import console
    from .harness import BenchRun
    from .render import write_reports
    from .report import summarize
    from .state import read_state

    config = build_config(args)
    if args.report_only:
        state = read_state(Path(config.run_dir).expanduser() / "state.json")
        if not state:
            from ..errors import UsageError

            raise UsageError(f"bench: nothing recorded in {config.run_dir} yet")
    elif getattr(args, "ray", False) or getattr(args, "ray_address", None):
        from .executor import run_on_ray

        stages = ([s.strip() for s in args.stages.split(",") if s.strip()] if args.stages
                  else None)
        state, reports = run_on_ray(config, address=args.ray_address, stages=stages,
                                    timed_cpus=args.timed_cpus, unit_gpus=args.unit_gpus,
                                    deadline=args.deadline,
                                    measure_energy=not args.no_energy,
                                    log=lambda line: console.print(line, markup=False))
        failed = {spec: why for r in reports for spec, why in r.failed.items()}
        for r in reports:
            console.print(f"ray stage {r.stage}: {len(r.done)} done, {len(r.skipped)} skipped, "
                          f"{len(r.failed)} failed of {r.units} in {r.seconds:.0f} s on "
                          f"{len(r.nodes)} node(s)")
        if failed:
            from ..errors import AdapterPoolError

            raise AdapterPoolError("bench: units failed on Ray (rerun to retry them): "
                                   + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    else:
        state = BenchRun(config, show_progress=not args.quiet,
                         measure_energy=not args.no_energy).run()
    table = summary_table
    if config.kind == "text2text":  # its own summary, in the kind's metric (bench/text2text.py)
        from . import text2text

        summarize, write_reports, table = (text2text.summarize, text2text.write_reports,
                                           text2text.summary_table)
    summary = summarize(state)
    files = write_reports(summary, config.out_dir)
    if args.json:
        from .render import rounded

        print(json.dumps(rounded(summary), indent=1))
        return summary
    console.print(table(summary))
    if summary["incomplete_targets"]:
        console.print(f"not finished yet: {', '.join(summary['incomplete_targets'])} "
                      "(rerun the same command to resume)")
    console.print(f"best metric by weighted tau: [bold]{summary['best_metric']}[/bold]; reports: "
                  + ", ".join(str(f) for f in files))
    return summary


def main(argv: list[str] | None = None) -> int:
    from ..errors import AdapterPoolError

    parser = argparse.ArgumentParser(prog="adapterpool bench", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    from ..verbosity import quiet_third_party

    quiet_third_party()
    try:
        run_bench_command(args)
    except AdapterPoolError as exc:
        print(f"adapterpool bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
