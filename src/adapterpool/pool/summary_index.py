"""A FAISS index over a pool's task summaries: stage 1 of ranking without reading every summary.

Reading and verifying one small file per adapter costs ~0.1 ms each: seconds at 100,000 adapters,
on every ranking. The index keeps each summary as a vector in FAISS (``faiss-cpu``, the extra
``adapterpool[faiss]``) and answers "the N closest" with an exact search:

- ``cosine``: inner product of the unit-length means (``IndexFlatIP``);
- ``frechet``: the squared Fréchet distance of two diagonal Gaussians is the squared L2 distance
  of ``[mean, sqrt(var)]`` vectors (``IndexFlatL2``), so the same search gives it exactly.

Exact (flat) indexes, so stage 1 picks what :func:`~adapterpool.ranking.task_summary.similarities`
would (in float32 rather than float64: a tie in the 7th digit may order differently).

Kept in step with the catalog, not with any one process: before each search the catalog's summary
rows (one query: adapter id and the file's sha256) are compared with what the index holds; rows
it lacks (adds, reindexed adapters) are read — verified against their sha256, as every summary
read is — and added, entries whose rows are gone (removals, summaries dropped by ``verify
--repair``) are removed. The index is then saved beside the pool (``index/``, temp file and
``os.replace``): derived data, rebuilt from the catalog if deleted, and safe to share between
processes (each save is a whole, consistent index; the next search applies what it missed).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from ..errors import TaskSummaryError, UsageError
from ..ranking.task_summary import TaskSummary
from .catalog import task_summaries_table
from .task_summaries import read_summary, summary_dims

if TYPE_CHECKING:
    from .store import AdapterPool

INDEX_FOLDER = "index"


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise UsageError("the summary index needs FAISS: `pip install adapterpool[faiss]` (or "
                         "`pip install faiss-cpu`)") from exc
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except UsageError:
        return False
    return True


def summary_vector(summary: TaskSummary, similarity: str) -> np.ndarray:
    """What the index stores for ``summary`` (see the module): float32, one row."""
    mean = summary.mean.astype(np.float32)
    if similarity == "cosine":
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else mean
    return np.concatenate([mean, np.sqrt(np.maximum(summary.var, 0)).astype(np.float32)])


@dataclass
class SyncReport:
    """What one reconciliation with the catalog did."""

    added: int
    removed: int
    unreadable: dict[str, str]  # adapter id -> why its summary was not indexed
    size: int


class SummaryIndex:
    """The index of one pool for one similarity (see the module)."""

    def __init__(self, pool: AdapterPool, similarity: str = "cosine") -> None:
        if similarity not in ("cosine", "frechet"):
            raise UsageError(f"no summary index for similarity {similarity!r}")
        self.faiss = import_faiss()
        self.pool, self.similarity = pool, similarity
        self.folder = Path(pool.path) / INDEX_FOLDER
        self.dims = summary_dims(pool)
        self.index: Any = None
        self.ids: dict[str, tuple[int, str]] = {}  # adapter id -> (faiss id, summary sha256)
        self.next_id = 0
        self.rows: dict[str, dict] = {}  # the catalog's summary rows at the last sync
        self._load()

    # -- persistence ---------------------------------------------------------------------------
    @property
    def _paths(self) -> tuple[Path, Path]:
        stem = self.folder / f"summaries-{self.similarity}"
        return stem.with_suffix(".faiss"), stem.with_suffix(".json")

    def _new_index(self, width: int) -> Any:
        flat = (self.faiss.IndexFlatIP(width) if self.similarity == "cosine"
                else self.faiss.IndexFlatL2(width))
        return self.faiss.IndexIDMap2(flat)

    def _load(self) -> None:
        index_path, ids_path = self._paths
        try:
            meta = json.loads(ids_path.read_text())
            index = self.faiss.read_index(str(index_path))
        except (OSError, ValueError, RuntimeError):
            return  # none yet, or unreadable: rebuilt from the catalog at the first sync
        if index.ntotal != len(meta["ids"]):
            return  # the two files of different saves: rebuild
        self.index, self.next_id = index, meta["next_id"]
        self.ids = {k: (v[0], v[1]) for k, v in meta["ids"].items()}

    def _save(self) -> None:
        """Both files, each by temp file + ``os.replace``; the ids file names the index size so
        that a mismatched pair (two processes saving at once) is rebuilt, never trusted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        index_path, ids_path = self._paths
        for path, write in (
            (index_path, lambda tmp: self.faiss.write_index(self.index, tmp)),
            (ids_path, lambda tmp: Path(tmp).write_text(json.dumps(
                {"next_id": self.next_id, "ids": self.ids}))),
        ):
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}-")
            os.close(fd)
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    # -- keeping in step -----------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Apply the catalog's adds and removals since the index was saved (see the module)."""
        with self.pool.engine.connect() as conn:  # the three columns it needs, for 100,000
            rows = self.rows = {r[0]: {"adapter_id": r[0], "sha256": r[1], "source": r[2]}
                                for r in conn.execute(select(
                                    task_summaries_table.c.adapter_id,
                                    task_summaries_table.c.sha256,
                                    task_summaries_table.c.source))}
        gone = [a for a, (_, sha) in self.ids.items()
                if a not in rows or rows[a]["sha256"] != sha]
        new = sorted(a for a, row in rows.items()
                     if a not in self.ids or self.ids[a][1] != row["sha256"])
        if self.index is None:
            width = (self.dims or 0) * (1 if self.similarity == "cosine" else 2)
            if not width:
                raise UsageError("the pool's base-model fingerprint records no hidden size: "
                                 "no summary index for it")
            self.index, self.ids, self.next_id = self._new_index(width), {}, 0
            gone, new = [], sorted(rows)
        if gone:
            self.index.remove_ids(np.array([self.ids.pop(a)[0] for a in gone], dtype=np.int64))
        vectors, faiss_ids, unreadable = [], [], {}
        for adapter_id in new:
            try:
                summary = read_summary(self.pool, adapter_id, rows[adapter_id])
            except (TaskSummaryError, OSError) as exc:
                unreadable[adapter_id] = str(exc)
                continue
            vectors.append(summary_vector(summary, self.similarity))
            faiss_ids.append(self.next_id)
            self.ids[adapter_id] = (self.next_id, rows[adapter_id]["sha256"])
            self.next_id += 1
        if vectors:
            self.index.add_with_ids(np.stack(vectors), np.array(faiss_ids, dtype=np.int64))
        if gone or vectors:
            self._save()
        return SyncReport(len(vectors), len(gone), unreadable, int(self.index.ntotal))

    # -- searching -----------------------------------------------------------------------------
    def search(self, target: TaskSummary, k: int, allowed: set[str] | None = None,
               ) -> list[tuple[str, float]]:
        """The ``k`` indexed adapters (of ``allowed``, when given) closest to ``target``, best
        first, with their similarity (cosine, or minus the squared Fréchet distance); ties by
        id. Call :meth:`sync` first."""
        if self.index is None or self.index.ntotal == 0 or k < 1:
            return []
        if target.dims != self.dims:
            return []  # another width: no summary compares (NaN in the exact path)
        by_faiss = {fid: a for a, (fid, _) in self.ids.items()}
        params = None
        if allowed is not None:
            chosen = np.array(sorted(self.ids[a][0] for a in allowed if a in self.ids),
                              dtype=np.int64)
            if not len(chosen):
                return []
            params = self.faiss.SearchParameters(sel=self.faiss.IDSelectorBatch(chosen))
            k = min(k, len(chosen))
        k = min(k, int(self.index.ntotal))
        query = summary_vector(target, self.similarity)[None, :]
        # one more than asked, so that a tie at the boundary is seen and ordered by id
        values, found = self.index.search(query, min(k + 1, int(self.index.ntotal)),
                                          params=params)
        hits = [(by_faiss[int(f)], float(v)) for f, v in zip(found[0], values[0], strict=True)
                if f >= 0]
        sign = 1.0 if self.similarity == "cosine" else -1.0
        hits = sorted(((a, sign * v) for a, v in hits), key=lambda h: (-h[1], h[0]))
        return hits[:k]
