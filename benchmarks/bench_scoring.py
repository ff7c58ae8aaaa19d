"""Scoring throughput (samples/s) against a plain forward pass of the same base model on the
same inputs with the same batching — the cost of capturing features and probabilities.

    .venv/bin/python benchmarks/bench_scoring.py [--samples 1000] [--candidates 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from adapterpool.encoding import EncodedRecords, inference_loader
from adapterpool.loop import adapter_metadata, train_standard
from adapterpool.modeling import _base_classifier, load_tokenizer, save_adapter
from adapterpool.pool import AdapterPool
from adapterpool.scoring import candidate_outputs, score_candidates
from adapterpool.tasks import load_task
from adapterpool.training import TrainConfig


@torch.inference_mode()
def plain_forward(model, data, tokenizer, batch_size: int) -> float:
    loader, _ = inference_loader(data, tokenizer, batch_size)
    start = time.perf_counter()
    for batch in loader:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_task("builtin:movie-sentiment", max_train=args.samples, max_eval=50)
    with tempfile.TemporaryDirectory() as tmp:
        pool = AdapterPool.init(Path(tmp) / "pool")
        for name in ("subjectivity", "debate-role", "noun-category")[: args.candidates]:
            task = load_task(f"builtin:{name}", max_train=32, max_eval=16)
            result = train_standard(task, pool.base_model, TrainConfig(epochs=1, max_length=32),
                                    show_progress=False, measure_energy=False)
            pool.add(save_adapter(result.model, Path(tmp) / name,
                                  adapter_metadata(task, result, parent_id=None, seed=0)))
        tokenizer = load_tokenizer(pool.base_model)
        data = EncodedRecords(target.train, tokenizer, args.max_length)
        records = pool.list()
        plain = _base_classifier(pool.base_model, ["a", "b"]).eval()
        plain_forward(plain, data, tokenizer, args.batch_size)  # warm-up
        plain_seconds = plain_forward(plain, data, tokenizer, args.batch_size)
        forward_only = []
        for record in records:
            from adapterpool.modeling import load_for_inference

            model = load_for_inference(pool.base_model, record.label_names, pool.adapter_dir(record.id))
            forward_only.append(candidate_outputs(model, data, tokenizer, batch_size=args.batch_size).seconds)
        start = time.perf_counter()
        score_candidates(pool, records, target, tokenizer, ["logme", "leep", "nce"],
                         max_samples=args.samples, max_length=args.max_length,
                         batch_size=args.batch_size, show_progress=False)
        whole = (time.perf_counter() - start) / len(records)
    n = len(data)
    forward = sum(forward_only) / len(forward_only)
    print(f"{n} samples, batch {args.batch_size}, max length {args.max_length}, "
          f"{torch.get_num_threads()} threads")
    print(f"plain forward of the base model: {n / plain_seconds:8.1f} samples/s")
    print(f"scoring forward (features+probs): {n / forward:8.1f} samples/s "
          f"({plain_seconds / forward:.1%} of plain)")
    print(f"whole candidate (load, forward, 3 metrics): {n / whole:8.1f} samples/s")


if __name__ == "__main__":
    main()
