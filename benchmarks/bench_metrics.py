"""Seconds each metric takes on 10,000 x 768 features with 20 classes (prints a table).

    .venv/bin/python benchmarks/bench_metrics.py [--n 10000] [--dims 768] [--classes 20] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from adapterpool.metrics import METRICS, compute_metric


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = np.arange(args.n) % args.classes
    centres = rng.normal(size=(args.classes, args.dims))
    features = (centres[labels] + 2.0 * rng.normal(size=(args.n, args.dims))).astype(np.float32)
    logits = rng.normal(size=(args.n, args.classes)) + 2.0 * np.eye(args.classes)[labels]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    rows = []
    print(f"{args.n} x {args.dims} features, {args.classes} classes")
    print(f"{'metric':<22}{'seconds':>10}{'score':>14}")
    for name in METRICS:
        start = time.perf_counter()
        score = compute_metric(name, features=features, source_probs=probs, labels=labels)
        seconds = time.perf_counter() - start
        rows.append({"metric": name, "seconds": seconds, "score": score})
        print(f"{name:<22}{seconds:>10.2f}{score:>14.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"n": args.n, "dims": args.dims, "classes": args.classes, "rows": rows},
                      handle, indent=1)


if __name__ == "__main__":
    main()
