"""Seconds each metric takes on 10,000 x 768 features with 20 classes (prints a table).

LogME is also set against its floor: one Gram matrix (F^T F) and its eigendecomposition, the work
any exact LogME must do at N > D. Both are timed alternately, ``--repeat`` times each, and the
medians compared, so that a machine shared with other work slows both alike.

    .venv/bin/python benchmarks/bench_metrics.py [--n 10000] [--dims 768] [--classes 20]
        [--metric logme ...] [--repeat 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from adapterpool.metrics import METRICS, compute_metric, logme


def synthetic(n: int, dims: int, classes: int, seed: int = 0):
    """Class-centred Gaussian features (float32, as scoring yields) and noisy source probs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dims))
    features = (centres[labels] + 2.0 * rng.normal(size=(n, dims))).astype(np.float32)
    logits = rng.normal(size=(n, classes)) + 2.0 * np.eye(classes)[labels]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return features, probs, labels


def gram_eigh_seconds(features: np.ndarray) -> float:
    """One float64 Gram matrix of the smaller side and its symmetric eigendecomposition."""
    start = time.perf_counter()
    f = np.asarray(features, dtype=np.float64)
    gram = f.T @ f if f.shape[0] >= f.shape[1] else f @ f.T
    np.linalg.eigh(gram)
    return time.perf_counter() - start


def logme_against_floor(features: np.ndarray, labels: np.ndarray, repeat: int) -> dict:
    """Median seconds of LogME and of its Gram + eigh floor, timed alternately."""
    runs: dict[str, list[float]] = {"logme": [], "gram_eigh": []}
    for _ in range(repeat):
        start = time.perf_counter()
        logme(features, labels)
        runs["logme"].append(time.perf_counter() - start)
        runs["gram_eigh"].append(gram_eigh_seconds(features))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "logme_seconds": medians["logme"],
        "gram_eigh_seconds": medians["gram_eigh"],
        "ratio": medians["logme"] / medians["gram_eigh"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--metric", action="append", choices=list(METRICS),
                        help="repeatable; default: every metric")
    parser.add_argument("--repeat", type=int, default=5,
                        help="alternate LogME / Gram+eigh timings (medians compared)")
    parser.add_argument("--json")
    args = parser.parse_args()
    features, probs, labels = synthetic(args.n, args.dims, args.classes)
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{args.n} x {args.dims} features, {args.classes} classes"
          + (f"; load average {load:.2f} on {os.cpu_count()} CPUs" if load is not None else ""))
    print(f"{'metric':<22}{'seconds':>10}{'score':>14}")
    for name in args.metric or list(METRICS):
        start = time.perf_counter()
        score = compute_metric(name, features=features, source_probs=probs, labels=labels,
                               layer_features=features)
        seconds = time.perf_counter() - start
        rows.append({"metric": name, "seconds": seconds, "score": score})
        print(f"{name:<22}{seconds:>10.2f}{score:>14.4f}", flush=True)
    floor = logme_against_floor(features, labels, args.repeat)
    print(f"LogME {floor['logme_seconds']:.3f} s vs one Gram + eigh "
          f"{floor['gram_eigh_seconds']:.3f} s (medians of {args.repeat}, alternated): "
          f"{floor['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"n": args.n, "dims": args.dims, "classes": args.classes, "rows": rows,
                       "logme_vs_gram_eigh": floor, "load_average": load}, handle, indent=1)


if __name__ == "__main__":
    main()
