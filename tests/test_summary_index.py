"""Stage 1 through the FAISS summary index: the same choice as reading every summary, for both
similarities, and kept in step with the catalog (adds, removals, reindexed and dropped
summaries) by whichever process searches next."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

if os.environ.get("CI") == "true":  # the dev extras install it: there it must run
    import faiss  # noqa: F401
else:
    pytest.importorskip("faiss")

from adapterpool.errors import UsageError  # noqa: E402
from adapterpool.pool import AdapterPool  # noqa: E402
from adapterpool.pool.catalog import adapters_table, task_summaries_table  # noqa: E402
from adapterpool.pool.summary_index import SummaryIndex  # noqa: E402
from adapterpool.pool.task_summaries import attach_summary  # noqa: E402
from adapterpool.ranking.prefilter import prefilter  # noqa: E402
from adapterpool.ranking.task_summary import TaskSummary  # noqa: E402
from adapterpool.tasks import load_task  # noqa: E402

DIMS = 32  # the tiny BERT's width


def _summary(rng: np.random.Generator) -> TaskSummary:
    mean = rng.standard_normal(DIMS).astype(np.float32)
    var = rng.uniform(0.01, 0.1, DIMS).astype(np.float32)
    return TaskSummary(mean / np.linalg.norm(mean), var, 8, "probe", 0, 32)


def _clones(pool: AdapterPool, n: int) -> list[str]:
    """``n`` catalog entries beside the real adapters (copies of the first one's row and folder
    under new ids): what stage 1 reads of an adapter is its row and its summary only."""
    first = pool.list()[0]
    ids = []
    for i in range(n):
        adapter_id = f"clone-{i:03d}"
        shutil.copytree(pool.adapter_dir(first.id), pool.path / "adapters" / adapter_id)
        (pool.path / "adapters" / adapter_id / "task_embedding.safetensors").unlink(
            missing_ok=True)
        row = first.to_row() | {"id": adapter_id, "sha256": f"{i:064x}"}
        with pool.engine.begin() as conn:
            conn.execute(adapters_table.insert().values(**row))
        ids.append(adapter_id)
    return ids


def _summary_file(pool: AdapterPool, adapter_id: str):
    return pool.path / "adapters" / adapter_id / "task_embedding.safetensors"


@pytest.fixture()
def indexed_pool(pool_copy: AdapterPool) -> AdapterPool:
    """The tiny pool with 40 more entries, every one with a seeded random summary."""
    rng = np.random.default_rng(0)
    with pool_copy.engine.begin() as conn:
        conn.execute(task_summaries_table.delete())
    for record in pool_copy.list():
        (pool_copy.adapter_dir(record.id) / "task_embedding.safetensors").unlink(missing_ok=True)
    _clones(pool_copy, 40)
    for record in sorted(pool_copy.list(), key=lambda r: r.id):
        attach_summary(pool_copy, record.id, _summary(rng))
    return pool_copy


@pytest.fixture(scope="module")
def task():
    return load_task("builtin:subjectivity", max_train=32, max_eval=16, seed=1)


def _both(task, pool, keep, target, similarity, records=None):
    exact = prefilter(task, pool, keep, target=target, similarity=similarity, index=False,
                      records=records)
    indexed = prefilter(task, pool, keep, target=target, similarity=similarity, index=True,
                        records=records)
    return exact, indexed


@pytest.mark.parametrize("similarity", ["cosine", "frechet"])
def test_the_index_keeps_what_reading_every_summary_keeps(indexed_pool, task, similarity):
    rng = np.random.default_rng(1)
    records = sorted(indexed_pool.list(), key=lambda r: r.id)
    for trial in range(8):
        target = _summary(rng)
        subset = records[::2] if trial % 2 else None  # only the method-compatible ones
        exact, indexed = _both(task, indexed_pool, 5, target, similarity, subset)
        assert [r.id for r in indexed.chosen] == [r.id for r in exact.chosen]
        for adapter_id, value in indexed.similarities.items():
            assert value == pytest.approx(exact.similarities[adapter_id], abs=1e-5)
        assert indexed.index == "faiss" and exact.index is None
        assert indexed.as_json()["pool_size"] == len(subset or records)
    # asked for more than there are: every adapter, best first, as the exact path orders them
    exact, indexed = _both(task, indexed_pool, 100, target, similarity)
    assert [r.id for r in indexed.chosen] == [r.id for r in exact.chosen]


def test_the_index_follows_adds_removals_and_summaries(indexed_pool, task, tmp_path):
    rng = np.random.default_rng(2)
    target = _summary(rng)
    first = prefilter(task, indexed_pool, 3, target=target, index=True)
    best = first.chosen[0].id
    assert SummaryIndex(indexed_pool).sync().size == 43  # saved: a new process has it all
    assert SummaryIndex(indexed_pool).sync().added == 0

    # a removal (through the pool, as a server replica would): gone from the next search
    indexed_pool.remove(best)
    after = prefilter(task, indexed_pool, 3, target=target, index=True)
    assert best not in [r.id for r in after.chosen]
    assert [r.id for r in after.chosen] == [r.id for r in prefilter(
        task, indexed_pool, 3, target=target, index=False).chosen]

    # a reindexed summary (row and file replaced): the new vector is searched, not the old
    second = after.chosen[0].id
    with indexed_pool.engine.begin() as conn:
        conn.execute(task_summaries_table.delete().where(
            task_summaries_table.c.adapter_id == second))
    _summary_file(indexed_pool, second).unlink()
    attach_summary(indexed_pool, second, target)  # now the closest there can be
    moved = prefilter(task, indexed_pool, 3, target=target, index=True)
    assert moved.chosen[0].id == second
    assert moved.similarities[second] == pytest.approx(1.0, abs=1e-5)

    # a summary dropped (verify --repair does so with a broken one): the adapter comes last
    with indexed_pool.engine.begin() as conn:
        conn.execute(task_summaries_table.delete().where(
            task_summaries_table.c.adapter_id == second))
    dropped = prefilter(task, indexed_pool, 100, target=target, index=True)
    assert dropped.chosen[-1].id == second and second not in dropped.similarities
    assert "no task summary" in dropped.warnings[0]

    # an add through the pool (here a real adapter removed, then added again with a summary
    # closer to the target than any): searched at once
    real = next(r for r in indexed_pool.list() if not r.id.startswith("clone-"))
    folder = tmp_path / "again"
    shutil.copytree(indexed_pool.adapter_dir(real.id), folder)
    indexed_pool.remove(real.id)
    assert real.id not in [r.id for r in prefilter(task, indexed_pool, 100, target=target,
                                                    index=True).chosen]
    near = TaskSummary(target.mean * 0.999 + 0.001, target.var, 8, "texts", 0, 32)
    (folder / "task_embedding.safetensors").write_bytes(near.to_bytes())
    added = indexed_pool.add(folder)
    top = prefilter(task, indexed_pool, 1, target=target, index=True)
    assert top.chosen[0].id == added.id and top.as_json()["similarities"][0]["summary"] == "texts"

    # the index files deleted, or left half-written: rebuilt from the catalog
    for path in (indexed_pool.path / "index").iterdir():
        path.write_bytes(b"garbage")
    rebuilt = prefilter(task, indexed_pool, 3, target=target, index=True)
    assert [r.id for r in rebuilt.chosen] == [r.id for r in prefilter(
        task, indexed_pool, 3, target=target, index=False).chosen]
    assert not math.isnan(rebuilt.similarities[rebuilt.chosen[0].id])


def test_the_index_refuses_what_it_cannot_serve(indexed_pool, task):
    with pytest.raises(UsageError, match="no summary index for similarity"):
        SummaryIndex(indexed_pool, "l1")

    class Served:  # a pool seen through a server: no catalog of its own to index
        base_model = indexed_pool.base_model

        def list(self):
            return indexed_pool.list()

    with pytest.raises(UsageError, match="needs a local pool"):
        prefilter(task, Served(), 3, target=_summary(np.random.default_rng(3)), index=True)
