"""``adapterpool train-many`` and ``adapt-many``: one task per Ray task, a summary at the end.

Each target runs exactly what ``train`` / ``adapt`` would run on it (the same options), as a Ray
task asking for ``--cpus-per-task`` CPUs (and a GPU where the cluster has any), spread over the
nodes: a local Ray by default, a cluster with ``--ray-address``. Its report goes to
``OUT/<task>/report.json`` as ``adapt --out`` writes it; a target that fails is reported with its
error and does not stop the others. At the end: a table (and ``OUT/summary.json``), exit code 1
when any target failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from ..cluster import node_id, ray_session, set_threads, unit_resources
from ..errors import UsageError

COMMANDS = {"train-many": "train", "adapt-many": "adapt"}


def add_many_parsers(sub: argparse._SubParsersAction) -> None:
    from .main import fill_adapt_parser, fill_train_parser

    for name, fill, what in (
        ("train-many", fill_train_parser, "standard LoRA on each task (with --contribute: a "
         "pool's sources)"),
        ("adapt-many", fill_adapt_parser, "the loop on each task against one pool (local or "
         "served)"),
    ):
        parser = sub.add_parser(
            name, help=f"{what}, the tasks spread over Ray",
            description=f"{what}: every task as a Ray task (pip install adapterpool[ray]); each "
            "task's report in OUT/TASK/report.json, a summary table at the end; a failing task "
            "is reported and the others go on.")
        fill(parser, many=True)
        group = parser.add_argument_group("Ray")
        group.add_argument("--ray-address", metavar="auto|HOST:PORT",
                           help="a running Ray cluster (default: a local Ray for this command); "
                           "every node must reach the pool and OUT")
        group.add_argument("--cpus-per-task", type=int, default=1,
                           help="CPUs each task asks for (default: 1)")


def _one(args: argparse.Namespace, spec: str, out: str, cpus: int) -> dict:
    """One Ray task: the single-task command on ``spec``; its summary row (errors included)."""
    import ray

    from ..verbosity import quiet_third_party
    from .display import final_attempt
    from .main import adapt_from_args

    started = time.perf_counter()
    row = {"task": spec, "node": node_id(ray), "out": out}
    set_threads(cpus)
    quiet_third_party()
    args = copy.copy(args)
    args.task, args.out, args.command = spec, out, COMMANDS[args.command]
    try:
        report = adapt_from_args(args, show_progress=False)
    except Exception as exc:  # noqa: BLE001 - one task's failure is reported, the others go on
        return row | {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "seconds": time.perf_counter() - started}
    final = final_attempt(report) if report["attempts"] else {}
    return row | {"ok": True, "outcome": report["outcome"],
                  "test": (final.get("test") or {}), "validation": final.get("validation") or {},
                  "contributed_adapter_id": report.get("contributed_adapter_id"),
                  "seconds": report["timing"]["total_seconds"]}


def run_many(args: argparse.Namespace, log=print) -> dict:
    """Every task of ``args.task`` on Ray; the summary (also written to ``OUT/summary.json``)."""
    from ..bench.harness import task_key
    from .main import adapt_config_from_args, peft_config_from_args

    if args.cpus_per_task < 1:
        raise UsageError(f"--cpus-per-task must be at least 1, got {args.cpus_per_task}")
    keys = [task_key(spec) for spec in args.task]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UsageError(f"{args.command}: tasks given twice (their reports would share a "
                         f"folder): {', '.join(twice)}")
    adapt_config_from_args(args)  # bad settings stop here, before Ray starts
    peft_config_from_args(args)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path("adapterpool-runs") / f"{args.command}-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    with ray_session(args.ray_address) as ray:
        options = unit_resources(ray, args.cpus_per_task) | {"max_retries": 0,
                                                             "scheduling_strategy": "SPREAD"}
        remote = ray.remote(_one).options(**options)
        pending = [remote.remote(args, spec, str(out / key), args.cpus_per_task)
                   for spec, key in zip(args.task, keys, strict=True)]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            row = ray.get(ready[0])
            rows.append(row)
            log(f"[{len(rows)}/{len(args.task)}] {row['task']}: "
                + (f"{row['outcome']} in {row['seconds']:.0f} s" if row["ok"]
                   else f"FAILED: {row['error']}"))
    order = {spec: i for i, spec in enumerate(args.task)}
    rows.sort(key=lambda r: order[r["task"]])
    summary = {"command": args.command, "out": str(out), "tasks": rows,
               "done": sum(r["ok"] for r in rows), "failed": sum(not r["ok"] for r in rows),
               "nodes": len({r["node"] for r in rows}), "seconds": time.perf_counter() - started}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summary_table(summary: dict):
    from rich.table import Table

    table = Table(title=f"{summary['command']}: {summary['done']} done, {summary['failed']} "
                  f"failed, on {summary['nodes']} node(s) in {summary['seconds']:.0f} s")
    for name in ("task", "outcome", "val acc", "test acc", "seconds", "contributed / error"):
        table.add_column(name, justify="right" if "acc" in name or name == "seconds" else "left")
    for row in summary["tasks"]:
        if not row["ok"]:
            table.add_row(row["task"], "[red]failed[/red]", "-", "-", f"{row['seconds']:.1f}",
                          row["error"])
            continue
        acc = [row[split].get("accuracy") for split in ("validation", "test")]
        table.add_row(row["task"], row["outcome"],
                      *("-" if a is None else f"{a:.3f}" for a in acc),
                      f"{row['seconds']:.1f}", row.get("contributed_adapter_id") or "-")
    return table


def run_many_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .display import console

    progress = Console(stderr=True)  # stdout is the table, or the JSON with --json
    summary = run_many(args, log=lambda line: progress.print(line, markup=False,
                                                             highlight=False))
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        console.print(summary_table(summary))
        console.print(f"reports in {summary['out']} (summary.json beside them)")
    return 1 if summary["failed"] else 0
