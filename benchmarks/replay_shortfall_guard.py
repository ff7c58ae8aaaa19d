"""Replay ``--warm-fallback-max-shortfall`` on recorded strategy runs, without training.

Runs recorded before the guard existed continued the best attempt however far below the threshold
it was. With the guard, such a run falls back to standard LoRA from scratch instead; its transfer
attempts are the same as those of the same seed's run without ``warm-fallback`` (same ranking,
same tries), so that recorded run is what the guarded loop would have done. This prints the mean
accuracy and time ratios (loop / standard LoRA) of each warm-fallback strategy with the guard.

    python benchmarks/replay_shortfall_guard.py ~/.cache/adapterpool/bench-run-h200/state.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from adapterpool.bench.state import read_state

PAIRS = (("early-pass,cutoff,warm-fallback", "early-pass,cutoff"),
         ("settle,cutoff,warm-fallback", "settle,cutoff"))


def _accuracy(run: dict) -> float:
    return (run.get("test") or run["validation"])["accuracy"]


def replay(state: dict, *, shortfall: float, fraction: float) -> dict:
    out = {}
    for warm, scratch in PAIRS:
        per_target = {}
        for key, target in sorted((state.get("targets") or {}).items()):
            runs, base = target.get("strategies") or {}, target.get("baseline")
            if warm not in runs or scratch not in runs or not base:
                continue
            threshold = fraction * base["validation"]["accuracy"]
            ratios = []
            for seed, run in runs[warm].items():
                if seed not in runs[scratch]:
                    continue
                tries = [a["validation"]["accuracy"] for a in run["attempts"]
                         if a["kind"] in ("transfer", "probe")]
                far = tries and max(tries) < (1 - shortfall) * threshold
                use = runs[scratch][seed] if far and run["outcome"] != "transfer" else run
                ratios.append((_accuracy(use) / _accuracy(base),
                               use["seconds"] / base["train_seconds"]))
            if ratios:
                per_target[key] = tuple(float(np.mean(r)) for r in zip(*ratios, strict=True))
        if per_target:
            acc, time = zip(*per_target.values(), strict=True)
            out[warm] = {"accuracy_ratio": float(np.mean(acc)), "time_ratio": float(np.mean(time)),
                         "max_time_ratio": max(time), "per_target": per_target}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", help="a bench run's state.json")
    parser.add_argument("--shortfall", type=float, default=0.1)
    parser.add_argument("--threshold-fraction", type=float, default=0.99)
    args = parser.parse_args()
    state = read_state(Path(args.state).expanduser())
    for name, row in replay(state, shortfall=args.shortfall,
                            fraction=args.threshold_fraction).items():
        targets = " ".join(f"{k} {a:.3f}/{t:.2f}" for k, (a, t) in row["per_target"].items())
        print(f"{name} with the guard: accuracy {row['accuracy_ratio']:.3f}, time "
              f"{row['time_ratio']:.2f}, worst {row['max_time_ratio']:.2f} | {targets}")


if __name__ == "__main__":
    main()
