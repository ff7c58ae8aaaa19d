"""Run the benchmark on a bigger machine: untimed units in parallel, timed units alone.

``adapterpool bench`` computes every unit in one process, which on a 2-core machine takes hours for
the realistic pool. On a machine with more cores or a GPU this script computes the same units, into
the same ``state.json``, in three stages:

1. the pool: every source adapter, ``--workers`` processes at once (their seconds feed no ratio);
2. per target, the metric scores and the ground-truth fine-tunes, ``--workers`` targets at once
   (their seconds only feed the replayed loop, which they make pessimistic, never optimistic);
3. per target, the standard-LoRA baseline, then each strategy seed's real ``adapt`` runs, in
   ``--timed-workers`` processes (default 1: one at a time, so that no time ratio compares a busy
   machine with an idle one; more only where the machine has room to spare, as one GPU with 16
   cores has for MiniLM: each target's baseline and loops then share the same load).

Each worker writes a part file of its own (``run_dir/parts``), merged into ``state.json`` after each
stage. ``--deadline SECONDS`` stops starting units after that long; a later run of this script or of
``adapterpool bench --config ...`` resumes what is left. Reports: ``adapterpool bench --config ...
--report-only``.

    python benchmarks/bench_parallel.py --config benchmarks/bench_config.json --workers 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path

STAGES = ("sources", "ground-truth", "timed")


def _work(job: tuple) -> str:
    """One worker unit: a source to train; a target's scores and fine-tunes; or a target's
    baseline and strategy runs (seed by seed, so that a deadline leaves whole seeds)."""
    config_dict, part_path, stage, spec, energy, threads, deadline_at = job
    if time.time() > deadline_at:
        return f"skipped (deadline) {stage} {spec}"
    # Each worker's share of the cores, for the BLAS under numpy and scikit-learn too (read when
    # they load, below): left at every core each, several workers' metric fits (the linear probe
    # above all) oversubscribe the machine many times over and crawl.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    from adapterpool.bench.config import BenchConfig
    from adapterpool.bench.harness import BenchRun
    from adapterpool.verbosity import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(threads)
    run = BenchRun(BenchConfig(**config_dict), show_progress=False, measure_energy=energy,
                   state_path=Path(part_path))
    started = time.perf_counter()
    if stage == "sources":
        run.build_pool([spec])
        return f"done {stage} {spec} in {time.perf_counter() - started:.0f} s"
    pool = run.open_pool()
    if stage == "ground-truth":
        run.score_target(pool, spec)
        run.finetune_target(pool, spec)
        return f"done {stage} {spec} in {time.perf_counter() - started:.0f} s"
    run.baseline_target(pool, spec)
    seeds = run.config.strategy_seeds if spec in run.config.strategy_target_specs() else []
    for seed in seeds:
        if time.time() > deadline_at:
            return f"deadline: {spec} stopped before strategy seed {seed}"
        run.run_strategies(pool, spec, seeds=[seed])
    return f"done {stage} {spec} in {time.perf_counter() - started:.0f} s"


def _parallel(run, stage: str, specs: list[str], *, workers: int, energy: bool,
              deadline_at: float) -> None:
    """Compute ``specs`` in ``workers`` processes, each into its own part file, then merge."""
    from adapterpool.bench.harness import task_key

    parts = run.run_dir / "parts"
    parts.mkdir(exist_ok=True)
    run.state.fold_parts()  # left by an interrupted run: keep its units
    jobs = []
    threads = max(1, (os.cpu_count() or 2) // workers)
    for spec in specs:
        key = task_key(spec)
        part = parts / f"{stage}-{key}.json"
        seed = {"sources": run.state.get("sources") or {}}
        if stage != "sources":
            seed["targets"] = {key: run.state.get("targets", key) or {}}
        part.write_text(json.dumps(seed))
        jobs.append((asdict(run.config), str(part), stage, spec, energy, threads, deadline_at))
    context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
    with context.Pool(workers) as processes:
        for line in processes.imap_unordered(_work, jobs):
            print(f"[{stage}] {line}", flush=True)
    run.state.fold_parts([parts / f"{stage}-{task_key(spec)}.json" for spec in specs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="bench config JSON (BenchConfig fields)")
    parser.add_argument("--run-dir", help="where state and the pool live (overrides the config)")
    parser.add_argument("--workers", type=int, default=4, help="processes for stages 1 and 2")
    parser.add_argument("--timed-workers", type=int, default=1,
                        help="processes for stage 3 (1: the timed runs alone, the fair default)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after which no new unit starts (resume later)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"which stages to run, comma-separated ({', '.join(STAGES)})")
    parser.add_argument("--no-energy", action="store_true", help="time only, no codecarbon")
    args = parser.parse_args(argv)

    from adapterpool.bench.config import BenchConfig
    from adapterpool.bench.harness import BenchRun
    from adapterpool.verbosity import quiet_third_party

    quiet_third_party()
    config = BenchConfig.from_file(args.config)
    if args.run_dir:
        config.run_dir = args.run_dir
    config.validate()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    deadline_at = time.time() + (args.deadline if args.deadline is not None else float("inf"))
    energy = not args.no_energy
    run = BenchRun(config, show_progress=False, measure_energy=energy)
    run.open_pool()  # created once here, before workers add to it
    started = time.perf_counter()
    if "sources" in stages:
        _parallel(run, "sources", config.all_sources(), workers=args.workers, energy=energy,
                  deadline_at=deadline_at)
    if "ground-truth" in stages:
        _parallel(run, "ground-truth", config.all_targets(), workers=args.workers,
                  energy=energy, deadline_at=deadline_at)
    if "timed" in stages:
        _parallel(run, "timed", config.all_targets(), workers=args.timed_workers,
                  energy=energy, deadline_at=deadline_at)
    print(f"bench_parallel: {time.perf_counter() - started:.0f} s; state in {run.state.path}",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
