"""Two strategies' recorded runs compared in epochs, not seconds: for runs made on another machine
(or on a busy one) than their reference, where wall times do not compare.

    PYTHONPATH=src python benchmarks/epoch_costed.py RUN_DIR STRATEGY REFERENCE

Each run's cost is the scoring seconds of the reference's run of the same seed plus every attempt's
epochs at the target baseline's seconds per epoch, divided by the baseline's seconds; accuracy is
the run's test accuracy over the baseline's. Both are averaged over the seeds both strategies ran,
then over targets. Prints one line per run, then the means. How ``early-pass,cutoff,composition``
(run on a CPU) was compared with ``early-pass,cutoff`` (run on the H200 with the baselines):

    PYTHONPATH=src python benchmarks/epoch_costed.py ~/.cache/adapterpool/bench-run-composition \\
        early-pass,cutoff,composition early-pass,cutoff
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adapterpool.bench.state import read_state


def costed(run: dict, baseline: dict, scoring_seconds: float) -> tuple[float, float, float]:
    """(accuracy ratio, epochs trained, time ratio) of one loop run."""
    per_epoch = baseline["train_seconds"] / baseline["epochs"]
    epochs = sum(a.get("epochs") or 0.0 for a in run["attempts"])
    accuracy = (run.get("test") or run["validation"])["accuracy"]
    return (accuracy / baseline["test"]["accuracy"], epochs,
            (scoring_seconds + epochs * per_epoch) / baseline["train_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("strategy")
    parser.add_argument("reference")
    args = parser.parse_args()
    state = read_state(Path(args.run_dir).expanduser() / "state.json")
    means = {args.strategy: [], args.reference: []}
    for key, target in sorted(state["targets"].items()):
        runs = target.get("strategies") or {}
        seeds = sorted(set(runs.get(args.strategy, {})) & set(runs.get(args.reference, {})))
        if not seeds or not target.get("baseline"):
            continue
        rows = {args.strategy: [], args.reference: []}
        for seed in seeds:
            scoring = runs[args.reference][seed]["scoring_seconds"]
            line = [f"{key:24s} seed {seed}"]
            for name in rows:
                run = runs[name][seed]
                acc, epochs, time = costed(run, target["baseline"], scoring)
                rows[name].append((acc, time))
                first = run["attempts"][0] if run["attempts"] else None
                first_text = (f", first try {first['kind']} {first['validation']['accuracy']:.3f}"
                              if first else "")
                line.append(f"{name}: {run['outcome']}, accuracy {acc:.3f}, {epochs:.2f} "
                            f"epochs, time {time:.2f}{first_text}")
            print(" | ".join(line))
        for name, values in rows.items():
            means[name].append(np.mean(values, axis=0))
    for name, per_target in means.items():
        acc, time = np.mean(per_target, axis=0)
        print(f"mean over {len(per_target)} targets, {name}: accuracy ratio {acc:.3f}, "
              f"time ratio {time:.2f} (epoch-costed)")


if __name__ == "__main__":
    main()
