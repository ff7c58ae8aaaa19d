"""Scoring throughput (samples/s) against a plain forward pass of the same base model on the same
inputs with the same batching: what capturing features and probabilities costs.

    .venv/bin/python benchmarks/bench_scoring.py [--samples 1000] [--candidates 3] [--rounds 3]
        [--max-length 128] [--batch-size 64] [--json F] [--markdown F] [--with-metrics]
        [--logme-only] [--threads N]

The plain pass is ``AutoModelForSequenceClassification`` from the packaged MiniLM, run over the
same encoded, length-sorted batches (``inference_loader``). The scoring pass is
``candidate_outputs`` on each candidate (LoRA merged into the weights, a hook on the head's
input, probabilities in float64) — the forward part of ``score_candidates``. Rounds interleave
the two so that load from other work on the machine hits both alike; the best round of each is
compared (the least disturbed), the median is printed too. ``--with-metrics`` also runs
``benchmarks/bench_metrics.py`` (each metric on 10,000 x 768 features, 20 classes) and adds its
table to the Markdown.

Seconds per candidate of ``score_candidates`` (model ready + forward + logme, leep, nce) are
measured both ways, interleaved: every candidate built from scratch (``reuse_base=False``, as
before the shared base) and merged into one shared base model (the default). "Model ready + let
go" is the part the shared base changes: in the ranking (``CandidateScore.load_seconds``, the
shared base's one build included) and alone, candidate by candidate both ways in turn.

LogME's target is at most 5x one Gram matrix F^T F plus its eigendecomposition on 10,000 x 768
float64 features with 20 classes (LogME from the same features as float32, as scoring gives
them); ``--logme-only`` runs just that check, best of ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from adapterpool.contributing import contribute
from adapterpool.metrics import logme
from adapterpool.models.base_model import resolve_base_model
from adapterpool.models.build import load_tokenizer, pick_device
from adapterpool.models.saving import load_for_inference
from adapterpool.pool import AdapterPool
from adapterpool.ranking.scoring import candidate_outputs, score_candidates
from adapterpool.ranking.shared_base import CandidateModels, SharedBase
from adapterpool.tasks import load_task
from adapterpool.training.encoding import EncodedRecords, inference_loader
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig
from adapterpool.verbosity import quiet_third_party

SOURCES = ("subjectivity", "debate-role", "noun-category", "speech-party")
LOGME_TARGET = 5.0  # LogME within this many times one Gram matrix + eigh


def logme_timing(n: int = 10_000, dims: int = 768, classes: int = 20, rounds: int = 5) -> dict:
    """Best-of-rounds seconds of LogME against one F^T F + eigh (and the N x D SVD it replaced)."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dims))
    features = (centres[labels] + 2.0 * rng.normal(size=(n, dims))).astype(np.float32)
    f64 = features.astype(np.float64)
    times: dict[str, list[float]] = {"gram_eigh": [], "logme": [], "svd": []}
    for _ in range(rounds):
        for name, run in (
            ("gram_eigh", lambda: np.linalg.eigh(f64.T @ f64)),
            ("logme", lambda: logme(features, labels)),
            ("svd", lambda: np.linalg.svd(f64, full_matrices=False)),
        ):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    return {
        "n": n, "dims": dims, "classes": classes, "rounds": rounds,
        "gram_eigh_best": best["gram_eigh"], "logme_best": best["logme"], "svd_best": best["svd"],
        "ratio_best": best["logme"] / best["gram_eigh"],
        "ratio_median": statistics.median(times["logme"]) / statistics.median(times["gram_eigh"]),
        "target": LOGME_TARGET,
    }


def print_logme(result: dict) -> None:
    verdict = "meets" if result["ratio_best"] <= result["target"] else "MISSES"
    print(f"logme on {result['n']} x {result['dims']}, {result['classes']} classes: "
          f"{result['logme_best']:.3f} s; one Gram + eigh {result['gram_eigh_best']:.3f} s; "
          f"ratio {result['ratio_best']:.2f} (median {result['ratio_median']:.2f}; "
          f"{verdict} the {result['target']:.0f}x target); N x D SVD alone "
          f"{result['svd_best']:.3f} s")


@torch.inference_mode()
def plain_forward(model, data, tokenizer, batch_size: int) -> float:
    loader, _ = inference_loader(data, tokenizer, batch_size)
    start = time.perf_counter()
    for batch in loader:
        model(**{k: v for k, v in batch.items() if k != "labels"}).logits.cpu()
    return time.perf_counter() - start


def model_ready_timing(pool: AdapterPool, records: list, rounds: int) -> dict[str, list[float]]:
    """Seconds to get each candidate's model ready and to let it go, both ways interleaved per
    candidate (the shared base's one-off build excluded): the part the shared base changes."""
    device = pick_device()  # where score_candidates puts them
    ways = {"fresh": CandidateModels(pool.base_model, device, reuse_base=False),
            "shared": CandidateModels(pool.base_model, device, reuse_base=True)}
    ways["shared"].shared = SharedBase(pool.base_model, records[0].label_names, device)
    times: dict[str, list[float]] = {"fresh": [], "shared": []}
    for _ in range(rounds):
        for record in records:
            for key, models in ways.items():
                start = time.perf_counter()
                _, release = models.open(record, pool.adapter_dir(record.id))
                release()
                times[key].append(time.perf_counter() - start)
    return times


def build_pool(root: Path, n: int) -> AdapterPool:
    pool = AdapterPool.init(root / "pool")
    for name in SOURCES[:n]:
        task = load_task(f"builtin:{name}", max_train=32, max_eval=16)
        result = train_standard(task, pool.base_model, TrainConfig(epochs=1, max_length=32),
                                show_progress=False, measure_energy=False)
        contribute(pool, task, result)
    return pool


def run_metrics_benchmark() -> dict | None:
    script = Path(__file__).with_name("bench_metrics.py")
    if not script.is_file():
        return None
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(script), "--json", out.name], check=True)
        return json.loads(Path(out.name).read_text())


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Scoring throughput",
        "",
        (f"`benchmarks/bench_scoring.py`: {s['samples']} target examples "
        f"(builtin:movie-sentiment), max length {s['max_length']}, batch {s['batch_size']}, "
        f"{s['threads']} torch threads, {s['candidates']} candidates, best of {s['rounds']} "
        "interleaved rounds, base model all-MiniLM-L6-v2 (packaged), CPU shared with other work."),
        "",
        "| pass | samples/s (best round) | samples/s (median) | share of plain forward |",
        "|---|---|---|---|",
        (f"| plain forward of the base model | {result['plain_best']:.1f} | "
        f"{result['plain_median']:.1f} | 100% |"),
        (f"| scoring forward (features + probabilities) | {result['scoring_best']:.1f} | "
        f"{result['scoring_median']:.1f} | {result['ratio_best']:.1%} |"),
        (f"| whole candidate (load + forward + logme, leep, nce) | {result['whole']:.1f} | – | "
        f"{result['whole'] / result['plain_best']:.1%} |"),
        "",
    ]
    per = result.get("per_candidate")
    if per:
        lines += ["## Seconds per candidate (score_candidates, logme + leep + nce)", "",
                  ("| model per candidate | seconds (best round) | seconds (median) | "
                   "model ready + let go, in the ranking (median) | the same alone (best, "
                   "median) |"), "|---|---|---|---|---|"]
        for key, label in (("fresh", "built from scratch"), ("shared", "merged into shared base")):
            row = per[key]
            lines.append(f"| {label} | {row['best']:.2f} | {row['median']:.2f} | "
                         f"{row['load_median']:.3f} | {row['ready_best']:.3f}, "
                         f"{row['ready_median']:.3f} |")
        lines.append("")
    lm = result.get("logme")
    if lm:
        lines += [(f"LogME on {lm['n']:,} x {lm['dims']}, {lm['classes']} classes: "
                  f"{lm['logme_best']:.3f} s = {lm['ratio_best']:.2f}x one Gram + eigh "
                  f"({lm['gram_eigh_best']:.3f} s; target {lm['target']:.0f}x)."), ""]
    metrics = result.get("metrics")
    if metrics:
        lines += [(f"## Metric time on {metrics['n']:,} x {metrics['dims']} features, "
                  f"{metrics['classes']} classes"), "", "| metric | seconds |", "|---|---|"]
        lines += [f"| {row['metric']} | {row['seconds']:.2f} |" for row in metrics["rows"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--markdown", help="write a Markdown table here")
    parser.add_argument("--with-metrics", action="store_true",
                        help="also run benchmarks/bench_metrics.py (about a minute)")
    parser.add_argument("--logme-only", action="store_true",
                        help="only LogME against one Gram matrix + eigh (about a minute)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's); 1 spares the spin-waits that "
                             "cores busy with other work cause")
    args = parser.parse_args()
    quiet_third_party()  # as the adapterpool commands do: no load reports between the numbers
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.logme_only:
        result = logme_timing(rounds=max(args.rounds, 5))
        print_logme(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return
    torch.manual_seed(0)
    target = load_task("builtin:movie-sentiment", max_train=args.samples, max_eval=50)
    with tempfile.TemporaryDirectory() as tmp:
        pool = build_pool(Path(tmp), args.candidates)
        tokenizer = load_tokenizer(pool.base_model)
        data = EncodedRecords(target.train, tokenizer, args.max_length)
        records = pool.list()
        plain = AutoModelForSequenceClassification.from_pretrained(
            resolve_base_model(pool.base_model), num_labels=2).eval()
        candidates = [load_for_inference(pool.base_model, r.label_names, pool.adapter_dir(r.id))
                      for r in records]
        plain_forward(plain, data, tokenizer, args.batch_size)  # warm-up
        candidate_outputs(candidates[0], data, tokenizer, batch_size=args.batch_size)
        plain_times, scoring_times = [], []
        for _ in range(args.rounds):
            for model in candidates:  # plain and scoring alternate, one pass each
                plain_times.append(plain_forward(plain, data, tokenizer, args.batch_size))
                scoring_times.append(
                    candidate_outputs(model, data, tokenizer, batch_size=args.batch_size).seconds)
        per_candidate: dict[str, list[float]] = {"fresh": [], "shared": []}
        load: dict[str, list[float]] = {"fresh": [], "shared": []}
        for _ in range(args.rounds):  # the two ways alternate, whole rankings each
            for key in ("fresh", "shared"):
                start = time.perf_counter()
                scores = score_candidates(
                    pool, records, target, tokenizer, ["logme", "leep", "nce"],
                    max_samples=args.samples, max_length=args.max_length,
                    batch_size=args.batch_size, show_progress=False, reuse_base=key == "shared")
                per_candidate[key].append((time.perf_counter() - start) / len(records))
                load[key] += [s.load_seconds for s in scores]
        whole = min(per_candidate["shared"])
        ready = model_ready_timing(pool, records, max(args.rounds, 5))
    n = len(data)
    result = {
        "settings": {"samples": n, "batch_size": args.batch_size, "max_length": args.max_length,
                     "threads": torch.get_num_threads(), "candidates": len(records),
                     "rounds": args.rounds},
        "plain_best": n / min(plain_times),
        "plain_median": n / statistics.median(plain_times),
        "scoring_best": n / min(scoring_times),
        "scoring_median": n / statistics.median(scoring_times),
        "whole": n / whole,
    }
    result["ratio_best"] = result["scoring_best"] / result["plain_best"]
    result["ratio_median"] = result["scoring_median"] / result["plain_median"]
    result["per_candidate"] = {
        key: {"best": min(values), "median": statistics.median(values),
              "load_median": statistics.median(load[key]),
              "ready_best": min(ready[key]), "ready_median": statistics.median(ready[key])}
        for key, values in per_candidate.items()
    }
    print(f"{n} samples, batch {args.batch_size}, max length {args.max_length}, "
          f"{torch.get_num_threads()} threads, {len(records)} candidates x {args.rounds} rounds")
    print(f"plain forward of the base model:   {result['plain_best']:8.1f} samples/s "
          f"(median {result['plain_median']:.1f})")
    print(f"scoring forward (features+probs):  {result['scoring_best']:8.1f} samples/s "
          f"(median {result['scoring_median']:.1f}) = {result['ratio_best']:.1%} of plain "
          f"(median {result['ratio_median']:.1%})")
    print(f"whole candidate (load, forward, 3 metrics): {result['whole']:8.1f} samples/s")
    for key, label in (("fresh", "built from scratch"), ("shared", "merged into a shared base")):
        row = result["per_candidate"][key]
        print(f"seconds per candidate, {label:<26} best {row['best']:.2f}, median "
              f"{row['median']:.2f}; model ready + let go: in the ranking median "
              f"{row['load_median']:.3f}, alone best {row['ready_best']:.3f} median "
              f"{row['ready_median']:.3f}")
    result["logme"] = logme_timing()
    print_logme(result["logme"])
    if args.with_metrics:
        result["metrics"] = run_metrics_benchmark()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))


if __name__ == "__main__":
    main()
