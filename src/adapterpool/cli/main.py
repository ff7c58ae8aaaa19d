"""The ``adapterpool`` command line: tasks, pool, train, rank, adapt, demo."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .. import __version__
from ..config import (
    SELECTION_METRICS,
    SIMILARITIES,
    SUBSET_STRATEGIES,
    AdaptConfig,
    TrainConfig,
    field_default,
    field_help,
)
from ..loop.strategies import STRATEGIES
from ..models.peft_methods import DEFAULT_METHOD, PEFT_METHODS
from ..task_kinds import DEFAULT_METRIC


def _number(text: str) -> int | float:
    """An int where the text is one (``--epochs 2`` reports 2, not 2.0), else a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _option(group, flag: str, cls: type, name: str, *, dest: str | None = None, **kwargs) -> None:
    """An option whose default and help come from dataclass field ``cls.name`` (defined once)."""
    default = field_default(cls, name)
    if "action" not in kwargs and "type" not in kwargs and "choices" not in kwargs:
        kwargs["type"] = _number if isinstance(default, int | float) else str
    shown = ",".join(default) if isinstance(default, tuple) else default
    if kwargs.get("action") is None and "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    group.add_argument(flag, dest=dest or name, default=default,
                       help=f"{field_help(cls, name)} (default: {shown})", **kwargs)


def _add_task_args(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        parser.add_argument("task", nargs="+", metavar="TASK",
                            help="tasks, each a folder, hf:NAME[:CONFIG] or builtin:NAME")
    else:
        parser.add_argument("task", help="a folder, hf:NAME[:CONFIG] or builtin:NAME")
    parser.add_argument("--max-train", type=int, help="stratified subsample of train")
    parser.add_argument("--max-eval", type=int, help="stratified subsample of validation/test")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--text-pair-field")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--target-field",
                        help="target-text column of a text2text task (folders: default 'target'; "
                        "giving it makes an hf: dataset text2text)")
    parser.add_argument("--image-field", default="image",
                        help="image column of an image task (split files: paths relative to the "
                        "task folder; hf: an Image feature)")
    _option(parser, "--seed", AdaptConfig, "seed", type=int)


def _add_pool_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True,
                        help="pool folder or http(s):// URL of a pool server")
    parser.add_argument("--token", help="write token of a pool server (for --contribute)")
    parser.add_argument(
        "--base-model", help="must match the pool's base model (default: the pool's)"
    )


def _add_subset_args(parser: argparse.ArgumentParser) -> None:
    """How the N candidates are chosen (rank and adapt alike)."""
    _option(parser, "--subset", AdaptConfig, "subset", type=int)
    _option(parser, "--subset-strategy", AdaptConfig, "subset_strategy", choices=SUBSET_STRATEGIES)
    _option(parser, "--prefilter-similarity", AdaptConfig, "prefilter_similarity",
            choices=SIMILARITIES)


def _add_threshold_args(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--threshold", AdaptConfig, "threshold", type=float)
    _option(parser, "--threshold-metric", AdaptConfig, "threshold_metric",
            choices=SELECTION_METRICS)


# TrainConfig fields on the command line; dest "fallback_<field>" (the fallback's settings).
TRAIN_OPTIONS = (("--learning-rate", "learning_rate"), ("--batch-size", "batch_size"),
                 ("--max-length", "max_length"), ("--patience", "patience"),
                 ("--evals-per-epoch", "evals_per_epoch"), ("--max-new-tokens", "max_new_tokens"),
                 ("--num-beams", "num_beams"))
# Shorthands for the rank, alpha and dropout of the methods that have them (PeftMethod.shorthands).
LORA_OPTIONS = (("--lora-r", "r", int), ("--lora-alpha", "alpha", int),
                ("--lora-dropout", "dropout", float))


def _add_train_args(parser: argparse.ArgumentParser, *, epochs_flag: str) -> None:
    group = parser.add_argument_group("training")
    _option(group, epochs_flag, TrainConfig, "epochs", dest="fallback_epochs")
    for flag, name in TRAIN_OPTIONS:
        kind = {"learning_rate": {"type": float}, "max_new_tokens": {"type": int},
                "num_beams": {"type": int}}.get(name, {})
        _option(group, flag, TrainConfig, name, dest=f"fallback_{name}", **kind)
    peft = group.add_mutually_exclusive_group()
    peft.add_argument(
        "--peft", choices=list(PEFT_METHODS), default=DEFAULT_METHOD,
        help="PEFT method of standard training and the fallback; warm starts use each "
        "candidate's own saved method. " + "; ".join(
            f"{name}: {m.help} (lr {m.learning_rate:g})" for name, m in PEFT_METHODS.items())
        + f" (default: {DEFAULT_METHOD})",
    )
    peft.add_argument("--peft-config", metavar="FILE.json",
                      help="any config peft accepts, as JSON with peft_type (the format of "
                      "adapter_config.json); checked by peft before anything is trained")
    for flag, name, kind in LORA_OPTIONS:
        group.add_argument(flag, type=kind, help=f"{name} of --peft (default: the method's)")
    group.add_argument("--target-modules",
                       help="comma-separated target modules (default: peft's table for the "
                       "model family)")
    group.add_argument("--no-energy", action="store_true", help="do not run codecarbon")
    parser.add_argument("--out", help="output folder for report.json and adapter/ "
                        "(default: adapterpool-runs/TASK-TIME)")
    _option(parser, "--contribute", AdaptConfig, "contribute", action="store_true")
    parser.add_argument("--json", action="store_true", help="print report.json instead of tables")


def _add_strategy_args(parser: argparse.ArgumentParser) -> None:
    """--strategy and every registered strategy's options, from the registry: a strategy's help
    and its options dataclass (each field's help and "flag" metadata)."""
    group = parser.add_argument_group(
        "strategies", "; ".join(f"{name}: {cls.help}" for name, cls in STRATEGIES.items())
    )
    _option(group, "--strategy", AdaptConfig, "strategy", type=str, metavar="NAME[,NAME...]")
    for cls in STRATEGIES.values():
        for f in fields(cls.options) if cls.options is not None else ():
            if f.name not in {g.name for g in fields(AdaptConfig)}:
                continue  # a plugin's options are its own, not AdaptConfig's
            kind = str(f.type)
            kwargs = ({"action": argparse.BooleanOptionalAction} if kind == "bool"
                      else {"type": int if kind == "int" else float})
            _option(group, f.metadata["flag"], AdaptConfig, f.name, **kwargs)


def fill_train_parser(train: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The options of ``train`` (``train-many``: several tasks)."""
    _add_task_args(train, many=many)
    _add_pool_arg(train)
    _add_threshold_args(train)
    _add_train_args(train, epochs_flag="--epochs")


def fill_adapt_parser(adapt: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The options of ``adapt`` (``adapt-many``: several tasks)."""
    _add_task_args(adapt, many=many)
    _add_pool_arg(adapt)
    _option(adapt, "--metric", AdaptConfig, "metric")
    _add_subset_args(adapt)
    _option(adapt, "--max-tries", AdaptConfig, "max_tries", type=int)
    _add_threshold_args(adapt)
    _option(adapt, "--max-samples", AdaptConfig, "max_samples", type=int)
    _option(adapt, "--epochs", AdaptConfig, "transfer_epochs")
    _add_strategy_args(adapt)
    _add_train_args(adapt, epochs_flag="--standard-epochs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapterpool",
        description="Reuse a pool of PEFT adapters: rank by transferability, warm-start, "
        "contribute.",
    )
    parser.add_argument("--version", action="version", version=f"adapterpool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tasks = sub.add_parser("tasks", help="list the builtin offline tasks")
    tasks.add_argument("--json", action="store_true")

    from ..pool.cli import add_pool_parsers
    from ..server.cli import add_server_parsers

    add_pool_parsers(sub)
    add_server_parsers(sub)

    train = sub.add_parser("train", help="standard LoRA on a task (optionally contribute it)")
    fill_train_parser(train)

    rank = sub.add_parser("rank", help="score N adapters of the pool on a task (a random draw, "
                          "or the N closest by task summary: --subset-strategy prefilter)")
    _add_task_args(rank)
    _add_pool_arg(rank)
    rank.add_argument("--metric", action="append",
                      help=f"repeatable; default {DEFAULT_METRIC} (text2text tasks: "
                      "target-loglik)")
    _add_subset_args(rank)
    _option(rank, "--max-samples", AdaptConfig, "max_samples", type=int)
    _option(rank, "--max-length", TrainConfig, "max_length", type=int)
    rank.add_argument("--json", action="store_true")

    adapt = sub.add_parser("adapt", help="the whole loop: rank, warm-start, check, fall back")
    fill_adapt_parser(adapt)

    pair = sub.add_parser(
        "encoder-decoder", help="a text2text base model from two encoder checkpoints (default: "
        "the packaged MiniLM on both sides, offline): transformers' EncoderDecoderModel")
    pair.add_argument("out", help="new folder for the model and its tokenizer")
    pair.add_argument("--encoder", help="encoder checkpoint (default: the embedded MiniLM)")
    pair.add_argument("--decoder", help="decoder checkpoint (default: the encoder's)")

    from .many import add_many_parsers

    add_many_parsers(sub)

    demo = sub.add_parser("demo", help="the loop vs standard LoRA on the embedded default")
    demo.add_argument("--cache-dir", help="where the demo pool is kept")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the cached demo pool")
    demo.add_argument("--out", help="folder for the two reports")

    from ..bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


def _load_task(args: argparse.Namespace):
    from ..tasks import load_task

    return load_task(
        args.task,
        seed=args.seed,
        max_train=args.max_train,
        max_eval=args.max_eval,
        text_field=args.text_field,
        text_pair_field=args.text_pair_field,
        label_field=args.label_field,
        target_field=args.target_field,
        image_field=args.image_field,
    )


def _open_pool(args: argparse.Namespace):
    from ..models.base_model import canonical_name
    from ..pool import PoolError, open_pool

    pool = open_pool(args.pool, token=args.token)
    if args.base_model and canonical_name(args.base_model) != pool.base_model:
        raise PoolError(
            f"--base-model {args.base_model} differs from the pool's base model {pool.base_model}"
        )
    return pool


def adapt_config_from_args(args: argparse.Namespace) -> AdaptConfig:
    """The AdaptConfig an ``adapt`` or ``train`` command line means (``train``: max_tries 0).

    Options that a command lacks keep the dataclass default; the fallback's seed and selection
    metric are the loop's, as AdaptConfig.resolved_fallback() runs them anyway.
    """
    train = TrainConfig(
        **{f.name: getattr(args, f"fallback_{f.name}") for f in fields(TrainConfig)
           if hasattr(args, f"fallback_{f.name}")},
        seed=args.seed,
        selection_metric=args.threshold_metric,
    )
    values = {f.name: getattr(args, f.name) for f in fields(AdaptConfig) if hasattr(args, f.name)}
    if args.command in ("train", "train-many"):
        values["max_tries"] = 0
    return AdaptConfig(**values, fallback=train)


def peft_config_from_args(args: argparse.Namespace):
    """The PeftConfig of ``--peft`` (with the shorthands) or ``--peft-config``; peft checks it."""
    from ..models.peft_methods import load_peft_config, peft_config, with_shorthands

    shorthands = {name: getattr(args, flag[2:].replace("-", "_")) for flag, name, _ in LORA_OPTIONS}
    overrides = with_shorthands(None if args.peft_config else args.peft, **shorthands)
    if args.target_modules is not None:
        overrides["target_modules"] = [m.strip() for m in args.target_modules.split(",")
                                       if m.strip()]
    if args.peft_config:
        return peft_config(load_peft_config(args.peft_config), **overrides)
    return peft_config(args.peft, **overrides)


def adapt_from_args(args: argparse.Namespace, *, show_progress: bool) -> dict:
    """What ``adapt`` / ``train`` do with a parsed command line (one task): the report."""
    config = adapt_config_from_args(args)  # a bad setting stops here, before any work
    peft = peft_config_from_args(args)

    from ..loop.adapt import adapt
    from ..loop.report import default_run_dir

    task = _load_task(args)
    pool = _open_pool(args)
    result = adapt(
        task, pool, config,
        peft=peft,
        out_dir=args.out or default_run_dir(task.name),
        show_progress=show_progress,
        measure_energy=not args.no_energy,
    )
    return result.report


def _run_adapt(args: argparse.Namespace) -> dict:
    from ..loop.processes import is_main_process
    from .display import print_adapt_report

    report = adapt_from_args(args, show_progress=not args.json)
    if not is_main_process():  # under `accelerate launch` every process has it; one prints
        return report
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_adapt_report(report)
    return report


def _cmd_tasks(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ..tasks.builtin import list_builtin
    from .display import console

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
    from ..ranking.rank import rank
    from .display import console, print_warnings, ranking_table

    task = _load_task(args)
    result = rank(
        task, _open_pool(args), args.metric, subset=args.subset, seed=args.seed,
        max_samples=args.max_samples, max_length=args.max_length, show_progress=not args.json,
        subset_strategy=args.subset_strategy, prefilter_similarity=args.prefilter_similarity,
    )
    payload = result.as_json()
    if args.json:
        print(json.dumps(payload, indent=2))
        return
    console.print(ranking_table(payload["scores"], result.metrics,
                                title=f"Ranking (seed {args.seed}, {result.n_samples} samples)"))
    print_warnings(payload["warnings"])
    if result.prefilter:
        stage1 = result.prefilter
        console.print(f"prefilter: kept {len(stage1['chosen'])} of {stage1['pool_size']} adapters "
                      f"by {stage1['similarity']} similarity of task summaries "
                      f"({stage1['seconds']:.1f}s)")
    console.print(f"scoring took {result.seconds:.1f}s")


def main(argv: list[str] | None = None) -> int:
    from ..errors import AdapterPoolError
    from ..pool.cli import POOL_COMMANDS, run_pool_command
    from ..server.cli import SERVER_COMMANDS, run_server_command

    args = build_parser().parse_args(argv)
    if args.command in ("train", "rank", "adapt", "bench", "demo", "serve",
                        "encoder-decoder", "train-many", "adapt-many") or (
        getattr(args, "pool_command", None) in ("import", "reindex")
    ):  # commands that load models (the others stay fast)
        from ..verbosity import quiet_third_party

        quiet_third_party()
    try:
        if args.command == "tasks":
            _cmd_tasks(args)
        elif args.command in POOL_COMMANDS:
            run_pool_command(args)
        elif args.command in SERVER_COMMANDS:
            run_server_command(args)
        elif args.command == "train":
            _run_adapt(args)
        elif args.command == "rank":
            _cmd_rank(args)
        elif args.command == "adapt":
            _run_adapt(args)
        elif args.command in ("train-many", "adapt-many"):
            from .many import run_many_command

            return run_many_command(args)
        elif args.command == "bench":
            from ..bench.cli import run_bench_command

            run_bench_command(args)
        elif args.command == "encoder-decoder":
            from ..models.base_model import build_encoder_decoder

            print(build_encoder_decoder(args.out, args.encoder, args.decoder))
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                     rebuild=args.rebuild, out_dir=Path(args.out) if args.out else None)
    except AdapterPoolError as exc:
        print(f"adapterpool: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
