"""Peak memory of `adapt` against the number of attempts (issue 19, part 1).

`adapt` on builtin:subjectivity with a pool of 4 MiniLM adapters and an unreachable threshold
(1.01: every try fails, then the fallback runs), each configuration in a fresh process whose peak
resident set size (ru_maxrss) is the figure:

- 1 failing try (`max_tries=1`), 4 failing tries (`max_tries=4`),
- racing with 4 probes (`strategy=racing, race_size=4`).

The bar: 4 tries peak at no more than 1 try + 10%. The pool (4 sources trained briefly) is built
once into the cache folder. Writes benchmarks/results/memory.json and memory.md.

    PYTHONPATH=src python benchmarks/bench_memory.py [--cache DIR] [--source-tree DIR]

``--source-tree`` runs the measured processes on another checkout's ``src`` (e.g. the code before
the change) while the pool and the settings stay the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("movie-sentiment", "speech-party", "noun-category", "debate-role")
TARGET = "builtin:subjectivity"
MAX_LENGTH = 64
RUNS = {  # name -> AdaptConfig changes
    "1 try": {"max_tries": 1},
    "4 tries": {"max_tries": 4},
    "racing, 4 probes": {"max_tries": 4, "strategy": "racing", "race_size": 4,
                         "probe_epochs": 0.25},
}

CHILD = f"""
import json, resource, sys
from adapterpool import AdaptConfig, AdapterPool, TrainConfig, adapt, load_task

pool_dir, changes = sys.argv[1], json.loads(sys.argv[2])
task = load_task({TARGET!r}, max_train=300, max_eval=100, seed=0)
fallback = TrainConfig(epochs=0.5, max_length={MAX_LENGTH}, evals_per_epoch=1)
config = AdaptConfig(metric="knn", subset=4, threshold=1.01, transfer_epochs=0.5,
                     max_samples=100, fallback=fallback, **changes)
result = adapt(task, AdapterPool(pool_dir), config, show_progress=False, measure_energy=False)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_mib": peak_kib / 1024, "attempts": [a.kind for a in result.attempts],
                  "outcome": result.outcome}}))
"""


def build_pool(folder: Path) -> Path:
    from adapterpool import AdapterPool, TrainConfig, contribute, load_task, train_standard

    if (folder / "pool.json").exists():
        return folder
    pool = AdapterPool.init(folder)
    for name in SOURCES:
        task = load_task(f"builtin:{name}", max_train=300, max_eval=100, seed=0)
        config = TrainConfig(epochs=1, max_length=MAX_LENGTH, evals_per_epoch=1)
        contribute(pool, task, train_standard(task, pool.base_model, config, show_progress=False,
                                              measure_energy=False))
    return folder


def measure(pool: Path, changes: dict, source_tree: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(source_tree), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(pool), json.dumps(changes)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the measured process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache/adapterpool/bench-memory")
    parser.add_argument("--source-tree", type=Path, default=ROOT / "src")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args()
    pool = build_pool(args.cache / "pool")
    rows = {}
    for name, changes in RUNS.items():
        rows[name] = measure(pool, changes, args.source_tree)
        print(f"{name}: {rows[name]['peak_mib']:.0f} MiB ({', '.join(rows[name]['attempts'])})",
              flush=True)
    one, four = rows["1 try"]["peak_mib"], rows["4 tries"]["peak_mib"]
    result = {"label": args.label, "target": TARGET, "sources": list(SOURCES), "runs": rows,
              "ratio_4_tries_to_1": four / one, "bar": 1.10, "meets_bar": four <= 1.10 * one}
    path = args.out / "memory.json"
    everything = json.loads(path.read_text()) if path.exists() else {}
    everything[args.label] = result
    path.write_text(json.dumps(everything, indent=2) + "\n")
    lines = ["# Peak memory of `adapt` against the number of attempts", "",
             f"`adapt` on {TARGET}, a pool of 4 MiniLM adapters, threshold 1.01 (every try "
             "fails, then the fallback); each run in a fresh process, peak RSS "
             "(`PYTHONPATH=src python benchmarks/bench_memory.py`).", "",
             "| code | 1 try | 4 tries | racing, 4 probes | 4 tries / 1 try |",
             "|---|---|---|---|---|"]
    for label, r in everything.items():
        runs = r["runs"]
        lines.append(f"| {label} | {runs['1 try']['peak_mib']:,.0f} MiB | "
                     f"{runs['4 tries']['peak_mib']:,.0f} MiB | "
                     f"{runs['racing, 4 probes']['peak_mib']:,.0f} MiB | "
                     f"{r['ratio_4_tries_to_1']:.2f}x |")
    (args.out / "memory.md").write_text("\n".join(lines) + "\n")
    print(f"4 tries / 1 try: {four / one:.2f}x (bar 1.10)")


if __name__ == "__main__":
    main()
