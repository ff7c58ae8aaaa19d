"""Task summaries in a pool: one small file per adapter, ``task_embedding.safetensors`` in its
folder, and a catalog row (``task_summaries``) with that file's sha256, its source and size.

The same rules as the weights: a summary is checked before it is staged, published by one rename
inside the catalog transaction that records it, read back only when its sha256 matches, and
``verify`` checks it. A summary is derived data: a broken one can be dropped (``verify --repair``)
and computed again (``pool reindex``); an adapter without one is still a full pool member.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..errors import PoolError, TaskSummaryError
from ..peft_files import TASK_EMBEDDING
from ..ranking.task_summary import TaskSummary
from .catalog import adapters_table, task_summaries_table
from .storage import sha256_stream

if TYPE_CHECKING:
    from .store import AdapterPool


def summary_dims(pool: AdapterPool) -> int | None:
    """The base model's hidden size, from the fingerprint in pool.json (no model is loaded)."""
    config = (pool.info.get("fingerprint") or {}).get("config") or {}
    return config.get("hidden_size")


def sha256_bytes(data: bytes) -> str:
    import io

    return sha256_stream(io.BytesIO(data))


def check_summary_bytes(data: bytes, dims: int | None) -> TaskSummary:
    """Parse a summary file's bytes for a pool of width ``dims``; TaskSummaryError otherwise."""
    return TaskSummary.from_bytes(data, dims=dims)


def summary_row(adapter_id: str, sha: str, summary: TaskSummary) -> dict:
    return {
        "adapter_id": adapter_id, "sha256": sha, "source": summary.source,
        "n_texts": summary.n_texts, "dims": summary.dims,
        "created_at": datetime.now(UTC).isoformat(),
    }


def attach_summary(pool: AdapterPool, adapter_id: str, summary: TaskSummary) -> None:
    """Give a catalogued adapter that has none its task summary, atomically.

    Checked, staged in ``.staging/``, then recorded and published (one rename) in one catalog
    transaction: a crash leaves the pool without the summary, or at worst an unrecorded file
    that ``verify --repair`` removes; never a row without its file. An adapter that already has
    a summary, or is gone, raises :class:`PoolError` and changes nothing.
    """
    data = summary.to_bytes()
    check_summary_bytes(data, summary_dims(pool))
    pool.get(adapter_id)
    staging = pool.path / ".staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    staged = staging / TASK_EMBEDDING
    try:
        with open(staged, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        publishing = False  # set before the rename: a failure inside it may leave the file
        try:
            with pool.engine.begin() as conn:
                # the insert takes the write lock first: no remove can commit in between
                conn.execute(insert(task_summaries_table).values(
                    **summary_row(adapter_id, sha256_bytes(data), summary)))
                exists = conn.execute(
                    select(adapters_table.c.id).where(adapters_table.c.id == adapter_id)
                    .with_for_update()
                ).first()
                if exists is None:
                    raise PoolError(f"adapter {adapter_id} was removed meanwhile")
                publishing = True
                pool.storage.publish_file(staged, adapter_id, TASK_EMBEDDING)
        except IntegrityError as exc:
            raise PoolError(f"adapter {adapter_id} already has a task summary") from exc
        except BaseException:
            if publishing and _row(pool, adapter_id) is None:  # rolled back: the file goes too
                pool.storage.delete_file(adapter_id, TASK_EMBEDDING)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _row(pool: AdapterPool, adapter_id: str):
    with pool.engine.connect() as conn:
        return conn.execute(select(task_summaries_table).where(
            task_summaries_table.c.adapter_id == adapter_id)).first()


def summary_rows(pool: AdapterPool, conn: Connection | None = None) -> dict[str, dict]:
    """Every summary row by adapter id."""
    if conn is not None:
        return {r.adapter_id: dict(r._mapping) for r in conn.execute(select(task_summaries_table))}
    with pool.engine.connect() as own:
        return summary_rows(pool, own)


@dataclass
class SummaryReading:
    """What :func:`read_summaries` found: usable summaries, ids without one, and ids whose
    summary could not be used (with why)."""

    summaries: dict[str, TaskSummary] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)


def verified_summary_bytes(pool: AdapterPool, adapter_id: str, row: dict) -> bytes:
    """The summary file of ``adapter_id`` as recorded (sha256 checked); raises otherwise."""
    data = pool.storage.read_file(adapter_id, TASK_EMBEDDING)
    if data is None:
        raise TaskSummaryError(f"{TASK_EMBEDDING} is missing; run `adapterpool pool verify`")
    if sha256_bytes(data) != row["sha256"]:
        raise TaskSummaryError(f"{TASK_EMBEDDING} was altered on disk (sha256 differs)")
    return data


def read_summary(pool: AdapterPool, adapter_id: str, row: dict) -> TaskSummary:
    """The recorded summary of ``adapter_id``, checked against its sha256; raises otherwise."""
    return check_summary_bytes(verified_summary_bytes(pool, adapter_id, row), summary_dims(pool))


def read_summaries(pool: AdapterPool, adapter_ids: list[str]) -> SummaryReading:
    """The summaries of ``adapter_ids``: one catalog query, then one small file each."""
    rows = summary_rows(pool)
    reading = SummaryReading()
    for adapter_id in adapter_ids:
        row = rows.get(adapter_id)
        if row is None:
            reading.missing.append(adapter_id)
            continue
        try:
            reading.summaries[adapter_id] = read_summary(pool, adapter_id, row)
        except (TaskSummaryError, OSError) as exc:
            reading.problems[adapter_id] = str(exc)
    return reading


def verify_summaries(pool: AdapterPool, conn: Connection, catalogued: set[str],
                     *, repair: bool) -> dict:
    """Summary findings for ``verify``, under its catalog write lock (``conn``).

    corrupt: recorded but missing, altered or unreadable; unrecorded: a summary file of a
    catalogued adapter without a row (a crash after the rename, before the commit); dangling:
    rows of adapters no longer catalogued (removed by a version that knew no summaries).
    ``repair`` drops all three (rows and files), so that ``pool reindex`` can compute them anew.
    """
    rows = summary_rows(pool, conn)
    corrupt, unrecorded = [], []
    dangling = sorted(set(rows) - catalogued)
    for adapter_id in sorted(catalogued):
        row = rows.get(adapter_id)
        if row is None:
            if pool.storage.read_file(adapter_id, TASK_EMBEDDING) is not None:
                unrecorded.append(adapter_id)
            continue
        try:
            read_summary(pool, adapter_id, row)
        except (TaskSummaryError, OSError):
            corrupt.append(adapter_id)
    if repair and (corrupt or unrecorded or dangling):
        for adapter_id in corrupt + unrecorded:
            pool.storage.delete_file(adapter_id, TASK_EMBEDDING)
        conn.execute(delete(task_summaries_table).where(
            task_summaries_table.c.adapter_id.in_(corrupt + dangling)))
        conn.commit()
    return {
        "task_summaries": len(rows) - len(dangling) - len(corrupt),
        "task_summaries_corrupt": corrupt,
        "task_summaries_unrecorded": unrecorded,
        "task_summaries_dangling": dangling,
    }


def stage_summary_file(source: Path, staging: Path, dims: int | None) -> TaskSummary | None:
    """For an add: check ``source``'s summary file, if it has one, and copy it into ``staging``.

    Returns the parsed summary (None without a file); a bad file raises TaskSummaryError, an
    :class:`AdapterRejected`, before anything is published.
    """
    path = source / TASK_EMBEDDING
    if not path.is_file():
        return None
    if path.is_symlink():
        raise TaskSummaryError(f"{TASK_EMBEDDING}: symbolic links are not accepted")
    data = path.read_bytes()
    summary = check_summary_bytes(data, dims)
    (staging / TASK_EMBEDDING).write_bytes(data)
    return summary


def delete_summary_row(conn: Connection, adapter_id: str) -> None:
    conn.execute(delete(task_summaries_table).where(
        task_summaries_table.c.adapter_id == adapter_id))
