"""The ``adapterpool`` command line: tasks, pool, train, rank, adapt, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import DEFAULT_METRIC, __version__


def _add_task_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="a folder, hf:NAME[:CONFIG] or builtin:NAME")
    parser.add_argument("--max-train", type=int, help="stratified subsample of train")
    parser.add_argument("--max-eval", type=int, help="stratified subsample of validation/test")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--text-pair-field")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")


def _add_pool_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="pool folder or http(s):// URL of a pool server")
    parser.add_argument("--token", help="write token of a pool server (for --contribute)")
    parser.add_argument(
        "--base-model", help="must match the pool's base model (default: the pool's)"
    )


def _add_train_args(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs)
    group.add_argument("--learning-rate", type=float, default=1e-3)
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--max-length", type=int, default=128)
    group.add_argument("--patience", type=int, default=3, help="evaluations without gain before stop")
    group.add_argument("--lora-r", type=int, default=16)
    group.add_argument("--lora-alpha", type=int, default=32)
    group.add_argument("--lora-dropout", type=float, default=0.1)
    group.add_argument("--target-modules", default="query,key,value")
    group.add_argument("--no-energy", action="store_true", help="do not run codecarbon")
    parser.add_argument("--out", help="output folder for report.json and adapter/")
    parser.add_argument("--contribute", action="store_true", help="add a passing adapter to the pool")
    parser.add_argument("--json", action="store_true", help="print report.json instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapterpool",
        description="Reuse a pool of PEFT adapters: rank by transferability, warm-start, contribute.",
    )
    parser.add_argument("--version", action="version", version=f"adapterpool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tasks = sub.add_parser("tasks", help="list the builtin offline tasks")
    tasks.add_argument("--json", action="store_true")

    from .pool.cli import add_pool_parsers

    add_pool_parsers(sub)

    train = sub.add_parser("train", help="standard LoRA on a task (optionally contribute it)")
    _add_task_args(train)
    _add_pool_arg(train)
    train.add_argument("--threshold", type=float, default=0.0, help="contribute only at or above")
    train.add_argument("--threshold-metric", default="accuracy",
                       choices=["accuracy", "f1_macro", "f1_weighted"])
    _add_train_args(train, epochs=3)

    rank = sub.add_parser("rank", help="score a random subset of the pool on a task")
    _add_task_args(rank)
    _add_pool_arg(rank)
    rank.add_argument("--metric", action="append",
                      help=f"repeatable; default {DEFAULT_METRIC}")
    rank.add_argument("--subset", type=int, default=5, help="number of adapters drawn (N)")
    rank.add_argument("--max-samples", type=int, default=1000, help="target examples scored")
    rank.add_argument("--max-length", type=int, default=128)
    rank.add_argument("--json", action="store_true")

    adapt = sub.add_parser("adapt", help="the whole loop: rank, warm-start, check, fall back")
    _add_task_args(adapt)
    _add_pool_arg(adapt)
    adapt.add_argument("--metric", default=None,
                       help=f"transferability metric (default {DEFAULT_METRIC})")
    adapt.add_argument("--subset", type=int, default=5, help="number of adapters drawn (N)")
    adapt.add_argument("--max-tries", type=int, default=2, help="transfer attempts (K)")
    adapt.add_argument("--threshold", type=float, default=0.0)
    adapt.add_argument("--threshold-metric", default="accuracy",
                       choices=["accuracy", "f1_macro", "f1_weighted"])
    adapt.add_argument("--max-samples", type=int, default=1000, help="target examples scored")
    adapt.add_argument("--standard-epochs", type=int, default=3,
                       help="budget of the standard-LoRA fallback")
    _add_train_args(adapt, epochs=2)

    demo = sub.add_parser("demo", help="the loop vs standard LoRA on the embedded default")
    demo.add_argument("--cache-dir", help="where the demo pool is kept")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the cached demo pool")
    demo.add_argument("--out", help="folder for the two reports")

    from .bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


def _load_task(args: argparse.Namespace):
    from .tasks import load_task

    return load_task(
        args.task,
        seed=args.seed,
        max_train=args.max_train,
        max_eval=args.max_eval,
        text_field=args.text_field,
        text_pair_field=args.text_pair_field,
        label_field=args.label_field,
    )


def _open_pool(args: argparse.Namespace):
    from .base_model import canonical_name
    from .pool import PoolError, open_pool

    pool = open_pool(args.pool, token=args.token)
    if args.base_model and canonical_name(args.base_model) != pool.base_model:
        raise PoolError(
            f"--base-model {args.base_model} differs from the pool's base model {pool.base_model}"
        )
    return pool


def _train_config(args: argparse.Namespace, *, epochs: int):
    from .modeling import LoraSettings
    from .training import TrainConfig

    config = TrainConfig(
        epochs=epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        patience=args.patience,
        selection_metric=args.threshold_metric,
        seed=args.seed,
    )
    lora = LoraSettings(
        r=args.lora_r,
        alpha=args.lora_alpha,
        dropout=args.lora_dropout,
        target_modules=[m.strip() for m in args.target_modules.split(",") if m.strip()],
    )
    return config, lora


def _run_adapt(args: argparse.Namespace, *, max_tries: int, metric: str | None) -> dict:
    from .loop import adapt
    from .summary import print_adapt_report

    task = _load_task(args)
    pool = _open_pool(args)
    standard_epochs = getattr(args, "standard_epochs", args.epochs)
    config, lora = _train_config(args, epochs=standard_epochs)
    result = adapt(
        task,
        pool,
        metric=metric or DEFAULT_METRIC,
        subset=getattr(args, "subset", 1),
        max_tries=max_tries,
        threshold=args.threshold,
        threshold_metric=args.threshold_metric,
        epochs=args.epochs,
        train_config=config,
        lora=lora,
        contribute=args.contribute,
        out_dir=args.out,
        seed=args.seed,
        max_samples=getattr(args, "max_samples", None),
        show_progress=not args.json,
        measure_energy=not args.no_energy,
    )
    if args.json:
        print(json.dumps(result.report, indent=2))
    else:
        print_adapt_report(result.report)
    return result.report


def _cmd_tasks(args: argparse.Namespace) -> None:
    from rich.table import Table

    from .summary import console
    from .tasks.builtin import list_builtin

    rows = list_builtin()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Builtin offline tasks (use as builtin:NAME)")
    for name in ("name", "kind", "examples", "labels", "description"):
        table.add_column(name)
    for row in rows:
        labels = ", ".join(row["label_names"])
        table.add_row(row["name"], row["kind"], str(row.get("n", "?")),
                      labels if len(labels) < 60 else labels[:57] + "...", row["description"])
    console.print(table)


def _cmd_rank(args: argparse.Namespace) -> None:
    from .loop import rank
    from .summary import console, ranking_table

    metrics = args.metric or [DEFAULT_METRIC]
    result = rank(
        _load_task(args), _open_pool(args), metrics, subset=args.subset, seed=args.seed,
        max_samples=args.max_samples, max_length=args.max_length, show_progress=not args.json,
    )
    payload = result.as_json()
    if args.json:
        print(json.dumps(payload, indent=2))
        return
    console.print(ranking_table(payload["scores"], metrics,
                                title=f"Ranking (seed {args.seed}, {result.n_samples} samples)"))
    console.print(f"scoring took {result.seconds:.1f}s")


def main(argv: list[str] | None = None) -> int:
    from .errors import user_errors
    from .pool.cli import POOL_COMMANDS, run_pool_command

    args = build_parser().parse_args(argv)
    try:
        if args.command == "tasks":
            _cmd_tasks(args)
        elif args.command in POOL_COMMANDS:
            run_pool_command(args)
        elif args.command == "train":
            _run_adapt(args, max_tries=0, metric=None)
        elif args.command == "rank":
            _cmd_rank(args)
        elif args.command == "adapt":
            _run_adapt(args, max_tries=args.max_tries, metric=args.metric)
        elif args.command == "bench":
            from .bench.cli import run_bench_command

            run_bench_command(args)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                     rebuild=args.rebuild, out_dir=Path(args.out) if args.out else None)
    except user_errors() as exc:
        print(f"adapterpool: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
