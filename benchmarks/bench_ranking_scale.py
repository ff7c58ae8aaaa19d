"""Ranking cost against pool size, and what the prefilter keeps of the precise ranking.

    PYTHONPATH=src python benchmarks/bench_ranking_scale.py [--source-pool DIR]
        [--sizes 10,100,1000] [--keep 5] [--max-samples 200] [--max-length 64]
        [--full-up-to 100] [--out benchmarks/results]

1. Agreement, on real adapters: for each target of the realistic benchmark, leave-one-out over
   the source pool, the prefilter's top ``--keep`` by task-summary similarity, then the precise
   metric (kNN) on those, against kNN on every candidate ("scoring all"). The kNN scores and
   fine-tuned accuracies are the benchmark's recorded ground truth (``--ground-truth``), so both
   sides use the very same scores; only stage 1 is computed here. Both kinds of summary are
   tried: ``texts`` (what contribution writes) and ``probe`` (what ``pool reindex`` writes).
2. Cost curve: a temporary pool built with the pool's own API (``AdapterPool.add``): the real
   adapters, each with the summary of its source texts, then perturbed copies (LoRA and head
   weights x (1 + 1% seeded noise), summary mean + seeded noise) up to each size. For each size:
   stage 1 alone (one base-model pass over the target + reading every summary), the two stages
   (``rank --subset-strategy prefilter``) and scoring every adapter (``--full-up-to`` sizes;
   larger ones extrapolated from the measured seconds per candidate, and marked so).

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (when matplotlib is installed) to
``--out``. Times are wall-clock seconds on this machine, with whatever else runs on it: the load
average is recorded beside each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from adapterpool.models.build import load_tokenizer
from adapterpool.peft_files import ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from adapterpool.pool import AdapterPool
from adapterpool.pool.summary_index import SummaryIndex, faiss_available
from adapterpool.ranking.prefilter import INDEX_MIN_ADAPTERS, prefilter
from adapterpool.ranking.rank import rank
from adapterpool.ranking.reindex import probe_summaries
from adapterpool.ranking.summarize import load_encoder, records_summary
from adapterpool.ranking.task_summary import TaskSummary, similarities
from adapterpool.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
BENCH_RUN = Path("~/.cache/adapterpool/bench-run").expanduser()
TARGETS = ("sst2", "trec6", "mrpc", "tweet_irony", "builtin-debate-role", "builtin-verb-category")


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def target_spec(key: str) -> str:
    """A benchmark target key as load_task takes it."""
    if key.startswith("builtin-"):
        return "builtin:" + key[len("builtin-"):]
    return str((ROOT.parent / "shared" / "bench-data" / key).resolve())


def source_spec(pool: AdapterPool, adapter_id: str) -> str:
    """Where an adapter's training data came from (its adapterpool.json), as load_task takes it."""
    source = json.loads((pool.adapter_dir(adapter_id) / ADAPTERPOOL_META).read_text())["task"][
        "source"]
    return source if ":" in source else str((ROOT / source).resolve())


# -- 1. agreement on real adapters -------------------------------------------------------------
def text_summaries(pool: AdapterPool, *, max_train: int, seed: int) -> dict[str, TaskSummary]:
    """Each adapter's summary as contribution writes it, from its recorded source task."""
    encoder, tokenizer = load_encoder(pool.base_model), load_tokenizer(pool.base_model)
    out = {}
    for record in pool.list():
        task = load_task(source_spec(pool, record.id), seed=seed, max_train=max_train)
        out[record.id] = records_summary(task.train, encoder, tokenizer, seed=seed)
    return out


def random_subset_baseline(knn: np.ndarray, acc: np.ndarray, keep: int) -> tuple[float, float]:
    """Exact expectations over every ``keep``-subset: P(kNN's overall top-1 is kept), regret."""
    best = int(np.argmax(knn))
    hits, regrets = [], []
    for subset in itertools.combinations(range(len(knn)), keep):
        chosen = subset[int(np.argmax(knn[list(subset)]))]
        hits.append(chosen == best)
        regrets.append(acc.max() - acc[chosen])
    return float(np.mean(hits)), float(np.mean(regrets))


def agreement(pool: AdapterPool, ground_truth: Path, summaries: dict[str, dict[str, TaskSummary]],
              *, keep: int, seed: int, similarity: str) -> dict:
    """Per target: does prefilter (top ``keep``) + kNN pick what kNN over all candidates picks?"""
    encoder, tokenizer = load_encoder(pool.base_model), load_tokenizer(pool.base_model)
    rows = []
    for key in TARGETS:
        part = ground_truth / f"ground-truth-{key}.json"
        if not part.is_file():
            continue
        recorded = json.loads(part.read_text())["targets"][key]
        ids = sorted(recorded["scores"])
        knn = np.array([recorded["scores"][i]["scores"]["knn"] for i in ids])
        acc = np.array([recorded["finetune"][i]["test"]["accuracy"] for i in ids])
        task = load_task(target_spec(key), seed=seed, max_train=1000)
        target = records_summary(task.train, encoder, tokenizer, seed=seed)
        full = int(np.argmax(knn))
        p_random, regret_random = random_subset_baseline(knn, acc, keep)
        row = {"target": key, "candidates": len(ids), "scoring_all_top1": ids[full],
               "scoring_all_regret": float(acc.max() - acc[full]) * 100,
               "random_keeps_top1": p_random, "random_regret": regret_random * 100}
        for kind, by_id in summaries.items():
            sims = similarities(target, [by_id.get(i) for i in ids], similarity)
            kept = np.argsort(-sims, kind="stable")[:keep]
            chosen = int(kept[np.argmax(knn[kept])])
            row[kind] = {"kept": [ids[i] for i in kept], "top1": ids[chosen],
                         "agrees": chosen == full,
                         "regret": float(acc.max() - acc[chosen]) * 100}
        rows.append(row)
    kinds = list(summaries)
    mean = {kind: {"agreement": float(np.mean([r[kind]["agrees"] for r in rows])),
                   "regret": float(np.mean([r[kind]["regret"] for r in rows]))} for kind in kinds}
    mean["random"] = {"agreement": float(np.mean([r["random_keeps_top1"] for r in rows])),
                      "regret": float(np.mean([r["random_regret"] for r in rows]))}
    mean["scoring_all"] = {"agreement": 1.0,
                           "regret": float(np.mean([r["scoring_all_regret"] for r in rows]))}
    return {"keep": keep, "similarity": similarity, "targets": rows, "mean": mean}


# -- 2. cost curve ---------------------------------------------------------------------------------
def perturbed_copy(source: Path, folder: Path, summary: TaskSummary, copy: int, seed: int) -> Path:
    """A copy of an adapter folder with seeded 1% noise on every weight and on its summary."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng([seed, copy])
    shutil.copytree(source, folder)
    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    save_file({k: (v * (1 + 0.01 * rng.standard_normal(v.shape))).astype(v.dtype)
               for k, v in weights.items()}, str(folder / ADAPTER_WEIGHTS))
    meta = json.loads((folder / ADAPTERPOOL_META).read_text())
    meta["task"]["name"] = f"{meta['task']['name']}-copy{copy:04d}"
    (folder / ADAPTERPOOL_META).write_text(json.dumps(meta))
    noisy = TaskSummary((summary.mean + 0.01 * rng.standard_normal(summary.dims)).astype(
        np.float32), summary.var, summary.n_texts, summary.source, summary.seed,
        summary.max_length)
    (folder / TASK_EMBEDDING).write_bytes(noisy.to_bytes())
    return folder


class CopiesPool:
    """The pool as ``rank`` sees it, where a catalog-only copy (see :func:`catalog_copies`)
    warm-starts from the weights of the adapter it copies: everything else is the pool's own."""

    def __init__(self, pool: AdapterPool, copy_of: dict[str, str]) -> None:
        self._pool, self.copy_of = pool, copy_of

    def __getattr__(self, name: str):
        return getattr(self._pool, name)

    def adapter_dir(self, adapter_id: str) -> Path:
        return self._pool.adapter_dir(self.copy_of.get(adapter_id, adapter_id))


def catalog_copies(pool: AdapterPool, summaries: dict[str, TaskSummary], start: int, size: int,
                   seed: int, copy_of: dict[str, str], batch: int = 5000) -> None:
    """Copies ``start`` .. ``size - 1`` as catalog rows and summaries only: a copy's row is its
    original's under a new id (and a unique stand-in sha256), its summary the original's + 1%
    seeded noise, written as a summary file and row as ``attach_summary`` writes them. No weight
    files: 1.5 MB each would be 150 GB at 100,000; stage 2 scores a kept copy with its
    original's weights (:class:`CopiesPool`). Inserted ``batch`` rows a transaction."""
    from adapterpool.pool.catalog import adapters_table, task_summaries_table
    from adapterpool.pool.task_summaries import sha256_bytes, summary_row

    real = sorted(summaries)
    originals = {r.id: r for r in pool.list() if r.id in summaries}
    for first in range(start, size, batch):
        rows, summary_rows = [], []
        for have in range(first, min(size, first + batch)):
            original = originals[real[have % len(real)]]
            rng = np.random.default_rng([seed, have])
            summary = summaries[original.id]
            noisy = TaskSummary((summary.mean + 0.01 * rng.standard_normal(summary.dims)).astype(
                np.float32), summary.var, summary.n_texts, summary.source, summary.seed,
                summary.max_length)
            adapter_id = f"{original.task_name}-copy{have:06d}"
            folder = pool.path / "adapters" / adapter_id
            folder.mkdir()
            data = noisy.to_bytes()
            (folder / TASK_EMBEDDING).write_bytes(data)
            rows.append(original.to_row() | {
                "id": adapter_id, "task_name": f"{original.task_name}-copy{have:06d}",
                "sha256": sha256_bytes(f"{original.sha256} copy {have}".encode())})
            summary_rows.append(summary_row(adapter_id, sha256_bytes(data), noisy))
            copy_of[adapter_id] = original.id
        with pool.engine.begin() as conn:
            conn.execute(adapters_table.insert(), rows)
            conn.execute(task_summaries_table.insert(), summary_rows)


def grow(pool: AdapterPool, source: AdapterPool, summaries: dict[str, TaskSummary], size: int,
         scratch: Path, seed: int, *, add_up_to: int = 1000,
         copy_of: dict[str, str] | None = None) -> float:
    """Add real adapters, then perturbed copies (``pool.add``) up to ``add_up_to``, then
    catalog-only copies, until ``pool`` holds ``size``; returns seconds."""
    start = time.perf_counter()
    real = sorted(summaries)
    have = len(pool.list())
    if have >= add_up_to and size > have:
        catalog_copies(pool, summaries, have, size, seed, {} if copy_of is None else copy_of)
        return time.perf_counter() - start
    while have < min(size, max(add_up_to, len(real))):
        adapter_id = real[have % len(real)]
        folder = scratch / f"add-{have}"
        if have < len(real):
            shutil.copytree(source.adapter_dir(adapter_id), folder)
            (folder / TASK_EMBEDDING).write_bytes(summaries[adapter_id].to_bytes())
        else:
            perturbed_copy(source.adapter_dir(adapter_id), folder, summaries[adapter_id], have,
                           seed)
        pool.add(folder)
        shutil.rmtree(folder)
        have += 1
    if have < size:
        catalog_copies(pool, summaries, have, size, seed, {} if copy_of is None else copy_of)
    return time.perf_counter() - start


def timed_rank(task, pool: AdapterPool, **kwargs) -> tuple[float, dict]:
    start = time.perf_counter()
    result = rank(task, pool, ["knn"], show_progress=False, measure_energy=False, **kwargs)
    return time.perf_counter() - start, result.as_json()


def cost_curve(source: AdapterPool, summaries: dict[str, TaskSummary], args) -> list[dict]:
    task = load_task(target_spec(args.target), seed=args.seed, max_train=1000)
    work = Path(tempfile.mkdtemp(prefix="adapterpool-scale-"))
    try:
        real_pool = AdapterPool.init(work / "pool", base_model=source.base_model)
        copy_of: dict[str, str] = {}
        pool = CopiesPool(real_pool, copy_of)
        rows, per_candidate = [], getattr(args, "per_candidate", None)
        for size in args.sizes:
            add_seconds = grow(real_pool, source, summaries, size, work, args.seed,
                               add_up_to=args.add_up_to, copy_of=copy_of)
            load = load_average()
            indexed = size >= INDEX_MIN_ADAPTERS and faiss_available()
            sync_seconds = None
            if indexed:  # the index brought in step with what was just added (timed apart)
                started = time.perf_counter()
                SummaryIndex(real_pool).sync()
                sync_seconds = time.perf_counter() - started
            stage1 = prefilter(task, pool, args.keep, seed=args.seed)
            two_seconds, two = timed_rank(task, pool, subset=args.keep, seed=args.seed,
                                          subset_strategy="prefilter",
                                          max_samples=args.max_samples,
                                          max_length=args.max_length)
            row = {"size": size, "keep": args.keep, "add_seconds": add_seconds,
                   "catalog_only_copies": len(copy_of), "stage1_index": stage1.index,
                   "date": time.strftime("%Y-%m-%d"), "source_pool": args.source_pool,
                   "index_sync_seconds": sync_seconds,
                   "stage1_seconds": stage1.seconds,
                   "stage1_target_pass_seconds": stage1.target_seconds,
                   "stage1_summaries_seconds": stage1.seconds - stage1.target_seconds,
                   "two_stage_seconds": two_seconds, "two_stage_top1": two["scores"][0][
                       "adapter_id"], "load_average": load}
            if size <= args.full_up_to:
                full_seconds, full = timed_rank(task, pool, subset=size, seed=args.seed,
                                                max_samples=args.max_samples,
                                                max_length=args.max_length)
                per_candidate = full_seconds / size
                row |= {"full_seconds": full_seconds, "full_measured": True,
                        "full_top1": full["scores"][0]["adapter_id"]}
                row["two_stage_agrees"] = row["full_top1"] == row["two_stage_top1"]
            elif per_candidate is not None:
                row |= {"full_seconds": per_candidate * size, "full_measured": False}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.default_settings:
            seconds, _ = timed_rank(task, pool, subset=args.keep, seed=args.seed,
                                    subset_strategy="prefilter")
            rows[-1]["two_stage_default_settings_seconds"] = seconds
            print(f"two stages at {args.sizes[-1]} with rank's defaults (1000 samples, 128 "
                  f"tokens): {seconds:.1f}s", flush=True)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- output ----------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = [
        "# Ranking cost against pool size", "",
        f"Target {result['target']}; stage 2 = kNN on {result['max_samples']} target examples "
        f"({result['max_length']} tokens), N = {result['keep']} kept; MiniLM "
        f"(all-MiniLM-L6-v2) on this {os.cpu_count()}-CPU machine (its load average, the "
        "benchmark's own included, in the table). Written by "
        "`benchmarks/bench_ranking_scale.py`.", "",
        "| adapters | stage 1 only (s) | of which target pass (s) | stage 1 via | two stages (s) "
        "| scoring all (s) | top-1, two stages / all | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["scaling"]:
        full = row.get("full_seconds")
        full_text = "-" if full is None else (f"{full:.1f}" if row.get("full_measured")
                                              else f"~{full:.0f} (extrapolated)")
        lines.append(f"| {row['size']} | {row['stage1_seconds']:.1f} | "
                     f"{row['stage1_target_pass_seconds']:.1f} | "
                     f"{'FAISS index' if row.get('stage1_index') else 'every summary read'} | "
                     f"{row['two_stage_seconds']:.1f} | "
                     f"{full_text} | {row['two_stage_top1']} / {row.get('full_top1', '-')} | "
                     f"{row['load_average']:.1f} |")
    copies = [r for r in result["scaling"] if r.get("catalog_only_copies")]
    if copies:
        lines += ["", "Rows of " + ", ".join(f"{r['size']:,}" for r in copies) + " adapters: "
                  "measured on " + ", ".join(sorted({r.get('date', '?') for r in copies}))
                  + " from the source pool " + ", ".join(sorted({str(r.get('source_pool'))
                                                               for r in copies}))
                  + "; past the real adapters, copies are catalog rows with their summaries "
                  "only (the weight files of 100,000 MiniLM adapters would be 150 GB): stage 1 "
                  "reads and indexes every copy's summary as it would a real adapter's, and "
                  "stage 2 scores a kept copy with the weights of the adapter it copies. The "
                  "FAISS index was brought in step with the new rows before the timed ranking "
                  "(" + ", ".join(f"{r['index_sync_seconds']:.1f} s at {r['size']:,}"
                                  for r in copies if r.get("index_sync_seconds") is not None)
                  + "); the timed two stages include listing the whole catalog, applying any "
                  "catalog change to the index, the target pass, the search and stage 2."]
    lines += ["", "The pool: the real adapters, then copies of them with 1% seeded noise on every "
              "weight and on the summary, so a top-1 that differs between the two columns may "
              "be a near-duplicate of the other."]
    last = result["scaling"][-1]
    if "two_stage_default_settings_seconds" in last:
        lines += ["", f"Two stages at {last['size']} adapters with `rank`'s default settings "
                  f"(1,000 target examples, 128 tokens): "
                  f"{last['two_stage_default_settings_seconds']:.1f} s."]
    if result.get("agreement"):
        agreement = result["agreement"]
        lines += ["", f"## Prefilter (top {agreement['keep']} by {agreement['similarity']}) + kNN "
                  "vs kNN on every candidate, real adapters", "",
                  "Leave-one-out over the 21-adapter realistic pool (20 candidates a target); kNN "
                  "scores and fine-tuned test accuracies are the benchmark's recorded ground "
                  "truth. Regret: accuracy points below the best candidate's.", "",
                  "| target | scoring all: top-1 | " + " | ".join(
                      f"{k} summaries: same top-1? (regret)" for k in agreement["mean"]
                      if k not in ("random", "scoring_all")) + " | random N: P(same) |",
                  "|---|---|" + "---|" * (len(agreement["mean"]) - 1)]
        kinds = [k for k in agreement["mean"] if k not in ("random", "scoring_all")]
        for row in agreement["targets"]:
            lines.append(f"| {row['target']} | {row['scoring_all_top1']} "
                         f"({row['scoring_all_regret']:.1f}) | " + " | ".join(
                             f"{'yes' if row[k]['agrees'] else 'no'} ({row[k]['regret']:.1f})"
                             for k in kinds) + f" | {row['random_keeps_top1']:.2f} |")
        mean = agreement["mean"]
        lines.append(f"| **mean** | regret {mean['scoring_all']['regret']:.2f} | " + " | ".join(
            f"{mean[k]['agreement']:.2f} (regret {mean[k]['regret']:.2f})" for k in kinds)
            + f" | {mean['random']['agreement']:.2f} (regret {mean['random']['regret']:.2f}) |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["scaling"]
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [r["stage1_seconds"] for r in rows], "o-", label="stage 1 only")
    ax.plot(sizes, [r["two_stage_seconds"] for r in rows], "s-",
            label=f"two stages (N={result['keep']})")
    measured = [r for r in rows if r.get("full_measured")]
    ax.plot([r["size"] for r in measured], [r["full_seconds"] for r in measured], "^-",
            label="scoring all")
    guessed = [r for r in rows if "full_seconds" in r]
    ax.plot([r["size"] for r in guessed], [r["full_seconds"] for r in guessed], "^:",
            color=ax.lines[-1].get_color(), alpha=0.5, label="scoring all (extrapolated)")
    ax.axhline(60, color="grey", lw=0.8, ls="--", label="60 s")
    ax.set(xscale="log", yscale="log", xlabel="adapters in the pool", ylabel="seconds",
           title="Ranking time against pool size")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-pool", default=str(BENCH_RUN / "pool"))
    parser.add_argument("--ground-truth", default=str(BENCH_RUN / "parts"))
    parser.add_argument("--sizes", default="10,100,1000,10000,100000")
    parser.add_argument("--add-up-to", type=int, default=1000,
                        help="copies up to this size go through pool.add with their own "
                        "weights; beyond, catalog rows and summaries only (see catalog_copies)")
    parser.add_argument("--append", action="store_true",
                        help="keep --out's scaling.json rows of the sizes not measured now")
    parser.add_argument("--stored-summaries", action="store_true",
                        help="the source pool's recorded summaries instead of recomputing them "
                        "from each adapter's source texts")
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("--target", default="sst2")
    parser.add_argument("--max-samples", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--full-up-to", type=int, default=100)
    parser.add_argument("--similarity", default="cosine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-agreement", action="store_true")
    parser.add_argument("--default-settings", action="store_true",
                        help="also time two stages at the largest size with rank's defaults")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite scaling.md and scaling.png from --out's scaling.json")
    args = parser.parse_args()
    if args.report_only:
        out = Path(args.out)
        result = json.loads((out / "scaling.json").read_text())
        (out / "scaling.md").write_text(markdown(result))
        plot(result, out / "scaling.png")
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    source = AdapterPool(args.source_pool)
    start = time.perf_counter()
    if args.stored_summaries:
        from adapterpool.pool.task_summaries import read_summaries

        texts = read_summaries(source, [r.id for r in source.list()]).summaries
    else:
        texts = text_summaries(source, max_train=2000, seed=args.seed)
    print(f"text summaries of {len(texts)} adapters: {time.perf_counter() - start:.1f}s",
          flush=True)
    result = {"target": args.target, "keep": args.keep, "max_samples": args.max_samples,
              "max_length": args.max_length, "cpus": os.cpu_count(),
              "source_pool": args.source_pool, "agreement": None}
    previous = Path(args.out) / "scaling.json"
    if args.no_agreement and previous.is_file():  # keep what an earlier run measured
        result["agreement"] = json.loads(previous.read_text()).get("agreement")
    if not args.no_agreement and Path(args.ground_truth).is_dir():
        probes = {r.id: s for r, s, _ in probe_summaries(source, source.list(),
                                                         show_progress=False) if s is not None}
        result["agreement"] = agreement(source, Path(args.ground_truth),
                                        {"texts": texts, "probe": probes}, keep=args.keep,
                                        seed=args.seed, similarity=args.similarity)
        print(json.dumps(result["agreement"]["mean"]), flush=True)
    kept = []
    if args.append and previous.is_file():
        kept = [r for r in json.loads(previous.read_text())["scaling"]
                if r["size"] not in args.sizes]
    args.per_candidate = next((r["full_seconds"] / r["size"] for r in reversed(kept)
                               if r.get("full_measured")), None)
    result["scaling"] = sorted(kept + cost_curve(source, texts, args), key=lambda r: r["size"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["load_average_after"] = load_average()
    (out / "scaling.json").write_text(json.dumps(result, indent=1))
    (out / "scaling.md").write_text(markdown(result))
    if plot(result, out / "scaling.png"):
        print(f"wrote {out / 'scaling.png'}")
    print(markdown(result))


if __name__ == "__main__":
    main()
