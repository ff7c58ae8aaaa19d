"""Every PEFT method on MiniLM, three bench-data targets: trainable parameters, adapter size on
disk, test accuracy and wall time of standard training, and the loop (rank, warm-start, fall
back) against it with a small pool of that method's own adapters.

    python benchmarks/bench_peft_methods.py [--methods lora,dora,...] [--targets sst2,trec6,mrpc]
        [--sources subj,ag_news,sms_spam] [--max-train 1000] [--max-eval 500] [--epochs 5]
        [--transfer-epochs 1] [--threshold-fraction 0.99] [--run-dir DIR] [--out PREFIX]
        [--base-model M] [--tiny]

For each method: a pool of its own adapters, one per source task (standard training of that
method); then per target, standard training of the method (early stopping, at most ``--epochs``)
and ``adapt`` with that method as fallback (``knn`` ranking, up to 2 tries of
``--transfer-epochs``, threshold ``--threshold-fraction`` x the standard run's validation
accuracy). Each method trains with its own default learning rate (``PEFT_METHODS``). A method
that cannot run on the base model is listed with peft's reason.

Every finished unit (a source adapter, a standard run, a loop run) is written to
``RUN_DIR/state.json`` at once, so an interrupted run resumes where it stopped; the results go to
``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/peft-methods``). CUDA is used when
present. ``--tiny`` is a smoke configuration (a few examples, one epoch) that checks the script,
not the methods.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adapterpool import AdaptConfig, adapt
from adapterpool.bench.state import BenchState
from adapterpool.cli.display import final_attempt
from adapterpool.contributing import contribute
from adapterpool.errors import PeftConfigError
from adapterpool.models.build import check_method, load_tokenizer, pick_device
from adapterpool.models.peft_methods import PEFT_METHODS
from adapterpool.models.saving import save_adapter
from adapterpool.peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from adapterpool.pool import AdapterPool
from adapterpool.tasks import load_task
from adapterpool.training.standard import standard_lora_model
from adapterpool.training.trainer import TrainConfig, train
from adapterpool.verbosity import quiet_third_party

ROOT = Path(__file__).resolve().parents[1]
BENCH_DATA = ROOT.parent / "shared" / "bench-data"


def task_spec(name: str) -> str:
    """A bench-data folder by name, else the spec as given (builtin:..., a path)."""
    folder = BENCH_DATA / name
    return str(folder) if folder.is_dir() else name


def standard_run(method: str, task, base_model: str, config: TrainConfig) -> dict:
    """Standard training of ``method`` from scratch: the numbers of the table, and the model."""
    start = time.perf_counter()
    model = standard_lora_model(base_model, task.label_names, method, seed=config.seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = train(model, task, load_tokenizer(base_model), config,
                   description=f"{method} {task.name}", measure_energy=False)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_adapter(result.model, Path(tmp) / "a", {})
        size = sum((folder / name).stat().st_size for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    return {
        "trainable_parameters": trainable,
        "adapter_bytes": size,
        "learning_rate": result.learning_rate,
        "validation": result.validation,
        "test": result.test,
        "epochs": result.epochs_run,
        "seconds": seconds,
        "result": result,
    }


class MethodBench:
    """The units of one run, each computed once and kept in the state file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = Path(args.run_dir).expanduser()
        self.state = BenchState(self.run_dir / "state.json")
        self.train_config = TrainConfig(
            epochs=args.epochs, max_length=args.max_length, patience=2, evals_per_epoch=2,
            batch_size=args.batch_size)
        settings = {k: v for k, v in vars(args).items() if k not in ("run_dir", "out")}
        if self.state.get("settings") not in (None, settings):
            raise SystemExit(f"{self.state.path} was made with other settings; use another "
                             "--run-dir or delete it")
        self.state.put(settings, "settings")
        self.done = 0
        self.total = len(args.methods) * (len(args.sources) + 2 * len(args.targets))

    def _task(self, name: str, max_train: int):
        return load_task(task_spec(name), max_train=max_train, max_eval=self.args.max_eval, seed=0)

    def _progress(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {text}", flush=True)

    def run_method(self, method: str) -> None:
        if self.state.get("methods", method, "error"):
            self.done += len(self.args.sources) + 2 * len(self.args.targets)
            return
        try:
            check_method(self.args.base_model, method)
        except PeftConfigError as exc:
            self.state.put(str(exc), "methods", method, "error")
            self._progress(f"{method}: does not run here ({exc})")
            self.done += len(self.args.sources) + 2 * len(self.args.targets) - 1
            return
        pool = self._pool(method)
        for target in self.args.targets:
            self._target(method, target, pool)

    def _pool(self, method: str) -> AdapterPool:
        """The method's pool: one adapter of its own per source task."""
        path = self.run_dir / "pools" / method
        pool = AdapterPool(path) if (path / "pool.json").is_file() else AdapterPool.init(
            path, base_model=self.args.base_model)
        present = {r.task_name for r in pool.list()}
        for source in self.args.sources:
            if self.state.get("methods", method, "sources", source) and source in present:
                self._progress(f"{method}: source {source} (done)")
                continue
            task = self._task(source, self.args.source_max_train)
            run = standard_run(method, task, self.args.base_model, self.train_config)
            if source not in present:
                contribute(pool, task, run["result"], task_name=source, seed=0)
            self.state.put({k: v for k, v in run.items() if k != "result"},
                           "methods", method, "sources", source)
            self._progress(f"{method}: source {source} test {run['test']['accuracy']:.3f}")
        return pool

    def _target(self, method: str, target: str, pool: AdapterPool) -> None:
        task = None
        standard = self.state.get("methods", method, "targets", target, "standard")
        if standard is None:
            task = self._task(target, self.args.max_train)
            run = standard_run(method, task, self.args.base_model, self.train_config)
            standard = {k: v for k, v in run.items() if k != "result"}
            self.state.put(standard, "methods", method, "targets", target, "standard")
        self._progress(f"{method}: {target} standard, test {standard['test']['accuracy']:.3f}, "
                       f"{standard['seconds']:.0f}s")
        if self.state.get("methods", method, "targets", target, "loop") is None:
            task = task or self._task(target, self.args.max_train)
            threshold = self.args.threshold_fraction * standard["validation"]["accuracy"]
            config = AdaptConfig(
                metric="knn", subset=len(self.args.sources), max_tries=2, threshold=threshold,
                transfer_epochs=self.args.transfer_epochs, max_samples=self.args.max_train,
                fallback=self.train_config)
            report = adapt(task, pool, config, peft=method, measure_energy=False).report
            final = final_attempt(report) if report["attempts"] else None
            self.state.put({
                "outcome": report["outcome"],
                "seconds": report["timing"]["total_seconds"],
                "test": final["test"] if final else None,
                "attempts": [{k: a[k] for k in ("kind", "adapter_id", "epochs", "passed")}
                             for a in report["attempts"]],
                "incompatible": report["incompatible"],
            }, "methods", method, "targets", target, "loop")
        loop = self.state.get("methods", method, "targets", target, "loop")
        self._progress(f"{method}: {target} loop {loop['outcome']}, {loop['seconds']:.0f}s")


def summary(data: dict, methods: list[str], targets: list[str]) -> list[dict]:
    """One row per method: means over the targets it finished (ratios: loop / standard)."""
    rows = []
    for method in methods:
        entry = data.get("methods", {}).get(method, {})
        row = {"method": method, "learning_rate": PEFT_METHODS[method].learning_rate,
               "error": entry.get("error"), "targets": {}}
        for target in targets:
            unit = entry.get("targets", {}).get(target, {})
            standard, loop = unit.get("standard"), unit.get("loop")
            if not standard:
                continue
            cell = {"test": standard["test"]["accuracy"], "seconds": standard["seconds"],
                    "trainable_parameters": standard["trainable_parameters"],
                    "adapter_bytes": standard["adapter_bytes"]}
            if loop and loop.get("test"):
                cell["loop_accuracy_ratio"] = loop["test"]["accuracy"] / max(cell["test"], 1e-9)
                cell["loop_time_ratio"] = loop["seconds"] / max(cell["seconds"], 1e-9)
                cell["loop_outcome"] = loop["outcome"]
            row["targets"][target] = cell
        cells = list(row["targets"].values())
        for key in ("test", "seconds", "trainable_parameters", "adapter_bytes",
                    "loop_accuracy_ratio", "loop_time_ratio"):
            values = [c[key] for c in cells if key in c]
            row[key] = statistics.fmean(values) if values else None
        rows.append(row)
    return rows


def markdown(rows: list[dict], data: dict, targets: list[str]) -> str:
    def num(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    settings = data.get("settings", {})
    lines = [
        "# PEFT methods on the base model",
        "",
        f"Base model {settings.get('base_model')}; targets {', '.join(targets)} "
        f"(train <= {settings.get('max_train')}, eval <= {settings.get('max_eval')}); each "
        f"method's pool: {', '.join(settings.get('sources', []))}; device {data.get('device')}. "
        "Standard: the method from scratch, early stopping, at most "
        f"{settings.get('epochs')} epochs. Loop: `adapt` with the method as fallback, knn "
        f"ranking, 2 tries of {settings.get('transfer_epochs')} epoch(s), threshold "
        f"{settings.get('threshold_fraction')} x standard validation. Means over the targets.",
        "",
        "| method | lr | trainable params (with head, pooler) | adapter KiB | test acc | seconds "
        "| loop acc ratio | loop time ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["error"]:
            lines.append(f"| `{row['method']}` | {row['learning_rate']:g} | does not run: "
                         f"{row['error'][:160]} | | | | | |")
            continue
        lines.append(
            f"| `{row['method']}` | {row['learning_rate']:g} | "
            f"{num(row['trainable_parameters'], ',.0f')} | "
            f"{num(row['adapter_bytes'] and row['adapter_bytes'] / 1024, ',.1f')} | "
            f"{num(row['test'], '.3f')} | {num(row['seconds'], '.1f')} | "
            f"{num(row['loop_accuracy_ratio'], '.3f')} | {num(row['loop_time_ratio'], '.2f')} |")
    lines += ["", "Per target: test accuracy (standard) / loop accuracy ratio / loop time ratio "
              "(loop outcome).", "",
              "| method | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for row in rows:
        cells = []
        for target in targets:
            cell = row["targets"].get(target)
            cells.append("-" if cell is None else (
                f"{cell['test']:.3f} / {num(cell.get('loop_accuracy_ratio'), '.3f')} / "
                f"{num(cell.get('loop_time_ratio'), '.2f')} ({cell.get('loop_outcome', '-')})"))
        lines.append(f"| `{row['method']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(PEFT_METHODS))
    parser.add_argument("--targets", default="sst2,trec6,mrpc")
    parser.add_argument("--sources", default="subj,ag_news,sms_spam")
    parser.add_argument("--base-model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--source-max-train", type=int, default=1000)
    parser.add_argument("--max-eval", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--transfer-epochs", type=float, default=1)
    parser.add_argument("--threshold-fraction", type=float, default=0.99)
    parser.add_argument("--run-dir", default="~/.cache/adapterpool/bench-peft-methods")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peft-methods"))
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: 24 training examples, 16 to evaluate, one epoch")
    args = parser.parse_args(argv)
    if args.tiny:
        args.max_train = args.source_max_train = 24
        args.max_eval, args.epochs, args.transfer_epochs, args.max_length = 16, 1, 0.5, 32
    for name in ("methods", "targets", "sources"):
        setattr(args, name, [x.strip() for x in getattr(args, name).split(",") if x.strip()])
    unknown = [m for m in args.methods if m not in PEFT_METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(PEFT_METHODS)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    quiet_third_party()
    args = parse_args(argv)
    bench = MethodBench(args)
    device = pick_device()
    bench.state.put(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "device")
    for method in args.methods:
        bench.run_method(method)
    data = bench.state.data
    rows = summary(data, args.methods, args.targets)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": rows, **data}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, data, args.targets))
    print(markdown(rows, data, args.targets))
    return data


if __name__ == "__main__":
    main()
