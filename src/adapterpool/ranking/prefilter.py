"""Stage 1 of ranking a large pool: the N adapters whose task summaries are closest to the
target's, found without running any adapter.

One pass of the *base* model over a seeded sample of the target's training texts gives the
target's summary (:mod:`adapterpool.ranking.summarize`); every adapter's summary is read from the
pool (a few KB each, verified), and a similarity (:mod:`adapterpool.ranking.task_summary`)
orders them.
Stage 2, the precise metric with one forward pass per candidate, then runs on the N kept only
(ESM-LogME, Schulte et al. 2024, ranks 1,500+ sources from one base-model pass per target).

Adapters without a usable summary (contributed before summaries existed and not reindexed, or a
summary that failed its checks) get NaN similarity and come after all others, in a seeded random
order: with fewer than N summarised adapters the rest of the N are a random draw, as the
``random`` strategy's. Each such adapter is named in the warnings.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..pool import AdapterRecord
from ..pool.protocol import Pool
from ..tasks import Task
from .summarize import DEFAULT_SUMMARY_LENGTH, DEFAULT_SUMMARY_TEXTS
from .task_summary import TaskSummary, check_similarity, similarities

logger = logging.getLogger(__name__)  # a child of "adapterpool"


@dataclass
class Prefilter:
    """What stage 1 chose and why; ``as_json`` is what report.json records."""

    similarity: str
    keep: int
    chosen: list[AdapterRecord]
    similarities: dict[str, float]  # every adapter of the pool; NaN: no usable summary
    sources: dict[str, str]  # adapter id -> "texts" | "probe" (summarised adapters only)
    target: TaskSummary
    target_seconds: float  # the base-model pass over the target sample
    seconds: float  # all of stage 1
    warnings: list[str] = field(default_factory=list)
    pool_size: int | None = None  # with the index: ``similarities`` holds the nearest only
    index: str | None = None  # "faiss" when the summary index answered


    def as_json(self) -> dict:
        ranked = sorted(self.similarities.items(),
                        key=lambda kv: (math.isnan(kv[1]), -kv[1] if not math.isnan(kv[1]) else 0))
        return {
            "similarity": self.similarity,
            "keep": self.keep,
            "pool_size": self.pool_size or len(self.similarities),
            "index": self.index,
            "chosen": [r.id for r in self.chosen],
            "target_texts": self.target.n_texts,
            "target_seconds": self.target_seconds,
            "seconds": self.seconds,
            "similarities": [
                {"adapter_id": adapter_id,
                 "similarity": None if math.isnan(value) else value,
                 "summary": self.sources.get(adapter_id)}
                for adapter_id, value in ranked
            ],
            "warnings": self.warnings,
        }


def order_by_similarity(ids: list[str], values: np.ndarray, seed: int) -> list[int]:
    """Indices best first: finite similarities descending (ties by id), then the NaN ones in a
    seeded random order."""
    finite = [i for i in range(len(ids)) if np.isfinite(values[i])]
    finite.sort(key=lambda i: (-values[i], ids[i]))
    rest = sorted((i for i in range(len(ids)) if not np.isfinite(values[i])), key=lambda i: ids[i])
    shuffled = [rest[j] for j in np.random.default_rng(seed).permutation(len(rest))]
    return finite + shuffled


def target_summary(
    task: Task, base_model: str, *, n_texts: int = DEFAULT_SUMMARY_TEXTS, seed: int = 0,
    max_length: int = DEFAULT_SUMMARY_LENGTH,
) -> TaskSummary:
    """The target's summary: one base-model pass over a seeded sample of its training texts."""
    from ..models.build import load_tokenizer
    from .summarize import load_encoder, records_summary

    return records_summary(task.train, load_encoder(base_model), load_tokenizer(base_model),
                           n_texts=n_texts, seed=seed, max_length=max_length)


def use_index(pool: Pool, n_adapters: int, index: bool | None) -> bool:
    """Whether stage 1 goes through the FAISS summary index: asked for (``index=True``), or by
    default for a local pool of at least :data:`INDEX_MIN_ADAPTERS` when FAISS is installed."""
    from ..pool.summary_index import faiss_available

    local = hasattr(pool, "engine") and hasattr(pool, "path")
    if index is not None:
        if index and not local:
            from ..errors import UsageError

            raise UsageError(f"the summary index needs a local pool (a folder; its catalog may "
                             f"be PostgreSQL), not {type(pool).__name__}")
        return index
    return local and n_adapters >= INDEX_MIN_ADAPTERS and faiss_available()


# From this many adapters on, reading every summary file costs more than keeping an index.
INDEX_MIN_ADAPTERS = 1000


def prefilter(
    task: Task, pool: Pool, keep: int, *, similarity: str = "cosine", seed: int = 0,
    n_texts: int = DEFAULT_SUMMARY_TEXTS, max_length: int = DEFAULT_SUMMARY_LENGTH,
    target: TaskSummary | None = None, records: list | None = None, index: bool | None = None,
) -> Prefilter:
    """The ``keep`` adapters of the whole pool (or of ``records``, the pool's adapters that can
    warm-start the loop's method) most similar to ``task`` (see the module). ``index``: through
    the FAISS summary index (:mod:`adapterpool.pool.summary_index`; default: for local pools of
    :data:`INDEX_MIN_ADAPTERS` or more when FAISS is installed), the same choice without reading
    every summary."""
    from ..errors import UsageError

    if keep < 1:
        raise UsageError(f"prefilter must keep at least 1 adapter, got {keep}")
    check_similarity(similarity)  # an unknown similarity fails before any work
    start = time.perf_counter()
    records = sorted(pool.list() if records is None else records, key=lambda r: r.id)
    if use_index(pool, len(records), index):
        return _indexed(task, pool, keep, records, similarity=similarity, seed=seed,
                        n_texts=n_texts, max_length=max_length, target=target, start=start)
    ids = [r.id for r in records]
    warnings: list[str] = []
    reader = getattr(pool, "task_summaries", None)
    if reader is None:
        summaries: dict[str, TaskSummary] = {}
        warnings.append(f"this pool ({type(pool).__name__}) serves no task summaries: "
                        "the prefilter falls back to a seeded random draw")
    else:
        reading = reader(ids)
        summaries = reading.summaries
        for adapter_id, problem in sorted(reading.problems.items()):
            warnings.append(f"adapter {adapter_id}: task summary not used: {problem}")
        if reading.missing:
            warnings.append(_missing_warning(reading.missing, len(ids)))
    target, target_seconds = _target_and_seconds(task, pool, target, n_texts=n_texts, seed=seed,
                                                 max_length=max_length)
    for line in warnings:
        logger.warning("prefilter: %s", line)
    values = similarities(target, [summaries.get(i) for i in ids], similarity)
    order = order_by_similarity(ids, values, seed)
    return Prefilter(
        similarity=similarity,
        keep=keep,
        chosen=[records[i] for i in order[:keep]],
        similarities={ids[i]: float(values[i]) for i in range(len(ids))},
        sources={i: s.source for i, s in summaries.items()},
        target=target,
        target_seconds=target_seconds,
        seconds=time.perf_counter() - start,
        warnings=warnings,
    )


def _target_and_seconds(task: Task, pool, target: TaskSummary | None, *, n_texts: int,
                        seed: int, max_length: int) -> tuple[TaskSummary, float]:
    """The target's summary (computed unless given) and the seconds that took."""
    start = time.perf_counter()
    if target is None:
        target = target_summary(task, pool.base_model, n_texts=n_texts, seed=seed,
                                max_length=max_length)
    return target, time.perf_counter() - start


def _missing_warning(missing: list[str], total: int) -> str:
    return (f"{len(missing)} of {total} adapters have no task summary and come last (in a seeded "
            "random order); compute them with `adapterpool pool reindex POOL`: "
            + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))


def _indexed(task: Task, pool, keep: int, records: list, *, similarity: str, seed: int,
             n_texts: int, max_length: int, target: TaskSummary | None,
             start: float) -> Prefilter:
    """Stage 1 through the summary index: the catalog's changes applied, one search; adapters
    without a summary fill up to ``keep`` in the exact path's seeded order."""
    from ..pool.summary_index import SummaryIndex

    ids = [r.id for r in records]
    summary_index = SummaryIndex(pool, similarity)
    synced = summary_index.sync()
    warnings = [f"adapter {a}: task summary not used: {why}"
                for a, why in sorted(synced.unreadable.items()) if a in set(ids)]
    missing = [i for i in ids if i not in summary_index.ids and i not in synced.unreadable]
    if missing:
        warnings.append(_missing_warning(missing, len(ids)))
    target, target_seconds = _target_and_seconds(task, pool, target, n_texts=n_texts, seed=seed,
                                                 max_length=max_length)
    for line in warnings:
        logger.warning("prefilter: %s", line)
    hits = summary_index.search(target, keep, allowed=set(ids))
    by_id = {r.id: r for r in records}
    chosen = [by_id[a] for a, _ in hits]
    if len(chosen) < keep:  # the rest as the exact path orders NaN similarities
        found = {a for a, _ in hits}
        rest = [i for i in range(len(ids)) if ids[i] not in found]
        order = order_by_similarity([ids[i] for i in rest], np.full(len(rest), np.nan), seed)
        chosen += [records[rest[j]] for j in order[:keep - len(chosen)]]
    return Prefilter(
        similarity=similarity, keep=keep, chosen=chosen, similarities=dict(hits),
        sources={a: summary_index.rows[a]["source"] for a, _ in hits}, target=target,
        target_seconds=target_seconds,
        seconds=time.perf_counter() - start, warnings=warnings, pool_size=len(ids),
        index="faiss",
    )
