"""Scoring throughput (samples/s) against a plain forward pass of the same base model on the same
inputs with the same batching: what capturing features and probabilities costs.

    .venv/bin/python benchmarks/bench_scoring.py [--samples 1000] [--candidates 3] [--rounds 3]
        [--max-length 128] [--batch-size 64] [--json F] [--markdown F] [--with-metrics]

The plain pass is ``AutoModelForSequenceClassification`` from the packaged MiniLM, run over the
same encoded, length-sorted batches (``inference_loader``). The scoring pass is
``candidate_outputs`` on each candidate (LoRA merged into the weights, a hook on the head's
input, probabilities in float64) — the forward part of ``score_candidates``. Rounds interleave
the two so that load from other work on the machine hits both alike; the best round of each is
compared (the least disturbed), the median is printed too. ``--with-metrics`` also runs
``benchmarks/bench_metrics.py`` (each metric on 10,000 x 768 features, 20 classes) and adds its
table to the Markdown.
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

import torch
from transformers import AutoModelForSequenceClassification

from adapterpool.base_model import resolve_base_model
from adapterpool.encoding import EncodedRecords, inference_loader
from adapterpool.loop import adapter_metadata, train_standard
from adapterpool.modeling import load_for_inference, load_tokenizer, save_adapter
from adapterpool.pool import AdapterPool
from adapterpool.scoring import candidate_outputs, score_candidates
from adapterpool.tasks import load_task
from adapterpool.training import TrainConfig

SOURCES = ("subjectivity", "debate-role", "noun-category", "speech-party")


@torch.inference_mode()
def plain_forward(model, data, tokenizer, batch_size: int) -> float:
    loader, _ = inference_loader(data, tokenizer, batch_size)
    start = time.perf_counter()
    for batch in loader:
        model(**{k: v for k, v in batch.items() if k != "labels"}).logits.cpu()
    return time.perf_counter() - start


def build_pool(root: Path, n: int) -> AdapterPool:
    pool = AdapterPool.init(root / "pool")
    for name in SOURCES[:n]:
        task = load_task(f"builtin:{name}", max_train=32, max_eval=16)
        result = train_standard(task, pool.base_model, TrainConfig(epochs=1, max_length=32),
                                show_progress=False, measure_energy=False)
        pool.add(save_adapter(result.model, root / name,
                              adapter_metadata(task, result, parent_id=None, seed=0)))
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
        f"`benchmarks/bench_scoring.py`: {s['samples']} target examples "
        f"(builtin:movie-sentiment), max length {s['max_length']}, batch {s['batch_size']}, "
        f"{s['threads']} torch threads, {s['candidates']} candidates, best of {s['rounds']} "
        "interleaved rounds, base model all-MiniLM-L6-v2 (packaged), CPU shared with other work.",
        "",
        "| pass | samples/s (best round) | samples/s (median) | share of plain forward |",
        "|---|---|---|---|",
        f"| plain forward of the base model | {result['plain_best']:.1f} | "
        f"{result['plain_median']:.1f} | 100% |",
        f"| scoring forward (features + probabilities) | {result['scoring_best']:.1f} | "
        f"{result['scoring_median']:.1f} | {result['ratio_best']:.1%} |",
        f"| whole candidate (load + forward + logme, leep, nce) | {result['whole']:.1f} | – | "
        f"{result['whole'] / result['plain_best']:.1%} |",
        "",
    ]
    metrics = result.get("metrics")
    if metrics:
        lines += [f"## Metric time on {metrics['n']:,} x {metrics['dims']} features, "
                  f"{metrics['classes']} classes", "", "| metric | seconds |", "|---|---|"]
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
    args = parser.parse_args()
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
        start = time.perf_counter()
        score_candidates(pool, records, target, tokenizer, ["logme", "leep", "nce"],
                         max_samples=args.samples, max_length=args.max_length,
                         batch_size=args.batch_size, show_progress=False)
        whole = (time.perf_counter() - start) / len(records)
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
    print(f"{n} samples, batch {args.batch_size}, max length {args.max_length}, "
          f"{torch.get_num_threads()} threads, {len(records)} candidates x {args.rounds} rounds")
    print(f"plain forward of the base model:   {result['plain_best']:8.1f} samples/s "
          f"(median {result['plain_median']:.1f})")
    print(f"scoring forward (features+probs):  {result['scoring_best']:8.1f} samples/s "
          f"(median {result['scoring_median']:.1f}) = {result['ratio_best']:.1%} of plain "
          f"(median {result['ratio_median']:.1%})")
    print(f"whole candidate (load, forward, 3 metrics): {result['whole']:8.1f} samples/s")
    if args.with_metrics:
        result["metrics"] = run_metrics_benchmark()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))


if __name__ == "__main__":
    main()
