"""The least time any accuracy-keeping loop strategy could cost, from the recorded ground truth.

    PYTHONPATH=src python benchmarks/oracle_bound.py [RUN_DIR ...]

Per target, an oracle that knows every outcome in advance: it scores the subset (the recorded
scoring seconds of the timed runs), then fine-tunes only the candidate that meets the threshold
soonest and stops at that evaluation (an early pass with no failed try); where no candidate meets
the threshold within the transfer budget, it skips transfer and trains standard LoRA (what keeps
the accuracy). Cost / standard LoRA's recorded cost is a lower bound for every strategy that keeps
standard LoRA's accuracy, whatever its ranking or stopping rules. On a run whose ground truth
came from another device (``ground_truth_on``), fine-tunes are costed at this run's baseline
seconds per epoch, as the benchmark report costs them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adapterpool.bench.state import read_state

DEFAULT_RUNS = ("~/.cache/adapterpool/bench-run-h200", "~/.cache/adapterpool/bench-run")


def target_bound(target: dict, fraction: float, subset: int) -> dict:
    base = target["baseline"]
    threshold = fraction * base["validation"]["accuracy"]
    per_epoch = base["train_seconds"] / base["epochs"]
    elsewhere = bool(target.get("ground_truth_on"))
    first_pass = []
    for run in target["finetune"].values():
        hit = next((h for h in run["history"] if h["accuracy"] >= threshold), None)
        if hit is not None:
            first_pass.append(hit["epoch"] * per_epoch if elsewhere else hit["seconds"])
    timed = [r["scoring_seconds"] for by_seed in (target.get("strategies") or {}).values()
             for r in by_seed.values() if r.get("scoring_seconds")]
    scoring = (float(np.median(timed)) if timed
               else subset * float(np.mean([e["seconds"] for e in target["scores"].values()])))
    cost = scoring + (min(first_pass) if first_pass else base["train_seconds"])
    return {"time_ratio": cost / base["train_seconds"], "passing_candidates": len(first_pass),
            "scoring_ratio": scoring / base["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", default=list(DEFAULT_RUNS))
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        state = read_state(Path(run_dir).expanduser() / "state.json")
        config = state["config"]
        fraction = config["threshold_fraction"]
        rows = {key: target_bound(t, fraction, config["subset"])
                for key, t in sorted(state["targets"].items())
                if t.get("baseline") and t.get("finetune") and t.get("scores")}
        ratios = [r["time_ratio"] for r in rows.values()]
        print(f"{run_dir}: threshold {fraction} x standard LoRA's validation accuracy; oracle "
              f"bound mean time ratio {np.mean(ratios):.2f}, worst target {max(ratios):.2f}")
        for key, row in rows.items():
            print(f"  {key:24s} {row['time_ratio']:.2f}  ({row['passing_candidates']} candidates "
                  f"pass; scoring alone {row['scoring_ratio']:.2f})")


if __name__ == "__main__":
    main()
