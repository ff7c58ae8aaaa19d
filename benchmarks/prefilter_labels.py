"""Does a label-aware stage 1 find the relatives that the input-only prefilter misses?

The prefilter (``adapterpool.ranking.prefilter``) compares the mean base-model embedding of a
target's texts with each adapter's: tasks with similar *inputs*. On the family benchmark that put
short-phrase tasks (word-sense, verb-category, pos-of-definition) first for mpqa, and none of the
six sentiment sources in its top 5, though sst2's warm start is mpqa's best fine-tune.

A label-aware summary would add each source's class means (base model, K x D: K x 1.5 KB for
MiniLM). The target's texts, embedded once with the base model (stage 1's own pass), are then
projected on the source's centred class means, and LogME asks how well those K coordinates
separate the target's labels: do the directions along which the source's labels differ also
separate the target's? No adapter is run. This script measures it on the family benchmark's
finished targets before anything changes in the product: for each target, where the ground
truth's best warm start (and every source) lands by input similarity (the prefilter itself, on the
pool's stored summaries), by the label-aware score, and by both (mean of the two ranks).

Measured (2026-12-07, 8 targets, 40 sources each): it does not. Projected on all of a source's
class means, the score grows with the source's class count (64-class hwu64, banking77 and
go_emotions led nearly every target); on as many leading directions as the target has classes
less one, the ground truth's best warm start ranked 2nd-40th by the label score (sst2's 16th, cr's
14th, mrpc's 40th) where the prefilter's cosine ranked it 1st-3rd on 6 of 7 learnable targets
(mpqa's 10th), and the mean of the two ranks moved mpqa's relative from 10th to 5th but sst2's from
1st to 5th and mrpc's from 3rd to 24th. The base model's class directions are not what a
fine-tuned adapter learns.

    PYTHONPATH=src python benchmarks/prefilter_labels.py [--targets mpqa,cr,...] [--json OUT]

Reads ``benchmarks/family/run`` (state and pool) and ``../shared/bench-data``; writes nothing
unless ``--json`` is given. Seeds: the texts sampled with seed 0 (as the summaries are).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import task_key
from adapterpool.bench.state import read_state
from adapterpool.metrics import logme
from adapterpool.models.build import load_tokenizer
from adapterpool.pool import AdapterPool
from adapterpool.ranking.prefilter import prefilter
from adapterpool.ranking.summarize import encode, load_encoder, sample_records
from adapterpool.tasks import Task, load_task

CONFIG = "benchmarks/family/config.json"
N_TEXTS = 256


def embedded(task: Task, encoder, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Base-model sentence embeddings and labels of a seeded sample of ``task``'s training set."""
    records = sample_records(task.train, N_TEXTS, seed=0)
    return encode(encoder, records, tokenizer, max_length=64), np.asarray(records.label)


def class_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The source's centred class means (K x D): the directions its labels differ along."""
    means = np.stack([features[labels == k].mean(0) for k in np.unique(labels)])
    return means - means.mean(0)


def label_score(target: np.ndarray, labels: np.ndarray, means: np.ndarray) -> float:
    """LogME of the target's embeddings projected on a source's leading class-mean directions,
    as many as the target has classes less one (so that a source with many classes does not
    score higher by having more directions: with all of them, 64-class hwu64 led everywhere)."""
    k = max(1, min(len(np.unique(labels)) - 1, np.linalg.matrix_rank(means)))
    directions = np.linalg.svd(means, full_matrices=False)[2][:k]
    return float(logme(target @ directions.T, labels))


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 = highest."""
    order = sorted(values, key=lambda k: -values[k])
    return {k: i + 1 for i, k in enumerate(order)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=None, help="comma-separated target keys")
    parser.add_argument("--json", default=None, help="write the per-target rows here")
    args = parser.parse_args()
    config = BenchConfig.from_file(CONFIG)
    state = read_state(Path(config.run_dir) / "state.json")
    pool = AdapterPool(Path(config.run_dir) / "pool")
    encoder, tokenizer = load_encoder(pool.base_model), load_tokenizer(pool.base_model)
    specs = {task_key(s): s for s in config.all_sources()}
    wanted = args.targets.split(",") if args.targets else [
        k for k, t in (state.get("targets") or {}).items() if t.get("gt_baseline")]
    ids = {name: entry["adapter_id"] for name, entry in state["sources"].items()}
    means = {}
    for name in sorted(ids):
        task = load_task(specs[name], max_train=config.source_max_train)
        means[name] = class_means(*embedded(task, encoder, tokenizer))
    rows = {}
    for key in wanted:
        task = load_task(specs[key], max_train=config.max_train)
        target, labels = embedded(task, encoder, tokenizer)
        others = [n for n in means if n != key]
        # stage 1 as the loop runs it: the pool's stored task summaries, cosine of the means
        records = [r for r in pool.list() if r.id in {ids[n] for n in others}]
        stage1 = prefilter(task, pool, len(records), records=records, seed=0)
        cosine = {n: stage1.similarities[ids[n]] for n in others}
        label = {n: label_score(target, labels, means[n]) for n in others}
        r_cos, r_lab = ranks(cosine), ranks(label)
        both = ranks({n: -(r_cos[n] + r_lab[n]) - 1e-6 * r_lab[n] for n in others})
        finetunes = state["targets"][key].get("gt_finetune") or {}
        accuracy = {n: float(np.mean([s["test"]["accuracy"] for s in finetunes[ids[n]].values()]))
                    for n in others if ids[n] in finetunes}
        best = max(accuracy, key=accuracy.get)
        rows[key] = {"best_finetune": best, "best_accuracy": accuracy[best],
                     "rank_of_best": {"cosine": r_cos[best], "labels": r_lab[best],
                                      "both": both[best]},
                     "top5": {"cosine": sorted(others, key=r_cos.get)[:5],
                              "labels": sorted(others, key=r_lab.get)[:5],
                              "both": sorted(others, key=both.get)[:5]}}
        print(f"{key}: best fine-tune {best} ({accuracy[best]:.3f}); its rank by cosine "
              f"{r_cos[best]}, by labels {r_lab[best]}, by both {both[best]} of {len(others)}")
        for method in ("cosine", "labels", "both"):
            print(f"   top 5 by {method}: {', '.join(rows[key]['top5'][method])}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
