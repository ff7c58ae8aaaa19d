"""What the server reads of the catalog, kept in memory and re-read only when the catalog changed.

A list, a show, a page or a download asks the view; the view asks the catalog only for its version
(SQLite's ``PRAGMA data_version`` on a connection of its own: it changes whenever any other
connection, in this process or another, commits) and re-reads the adapters and task-summary rows
when it differs. The weights are never touched. Catalogs without such a counter (PostgreSQL) are
re-read on every request, as before.

A catalog row never changes once written (adds insert, removes delete), so a re-read fetches the
(id, sha256, created_at) of every row and the full rows only of those it has not seen; each
record's JSON is made once. A pool of a few thousand adapters under a stream of uploads then
costs a light query per change instead of parsing and serializing every row again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..pool.catalog import AdapterRecord, adapters_table
from ..pool.task_summaries import summary_rows

if TYPE_CHECKING:
    from ..pool.store import AdapterPool


def record_json(record: AdapterRecord) -> bytes:
    """What ``record.as_json()`` serializes to (its fields are JSON values already; asdict's
    deep copy is what made a list of thousands slow)."""
    return json.dumps(vars(record)).encode()


@dataclass
class Snapshot:
    """The catalog at one version: records in the order ``pool.list()`` gives (oldest first),
    with each record's JSON."""

    records: list[AdapterRecord]
    summaries: dict[str, dict]
    json_of: dict[str, bytes]
    by_id: dict[str, AdapterRecord] = field(init=False)
    children: dict[str, list[str]] = field(init=False)
    list_json: bytes = field(init=False)
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        import hashlib

        self.by_id = {r.id: r for r in self.records}
        self.children = {}
        for record in self.records:
            if record.parent_id:
                self.children.setdefault(record.parent_id, []).append(record.id)
        self.list_json = b"[" + b", ".join(self.json_of[r.id] for r in self.records) + b"]"
        digest = hashlib.sha256()
        for r in self.records:
            digest.update(f"{r.id} {r.sha256} {r.created_at}\n".encode())
        digest.update(json.dumps(self.summaries, sort_keys=True).encode())
        self.etag = digest.hexdigest()[:32]

    def ancestors(self, adapter_id: str) -> list[str]:
        """Parent, grandparent, ... (a parent no longer in the pool ends the chain, included)."""
        chain, seen = [], {adapter_id}
        parent = self.by_id[adapter_id].parent_id if adapter_id in self.by_id else None
        while parent and parent not in seen:
            chain.append(parent)
            seen.add(parent)
            parent = self.by_id[parent].parent_id if parent in self.by_id else None
        return chain

    def descendants(self, adapter_id: str) -> list[tuple[int, str]]:
        """Children, grandchildren, ... as (depth, id), depth first."""
        out: list[tuple[int, str]] = []
        seen = {adapter_id}

        def walk(node: str, depth: int) -> None:
            for child in sorted(self.children.get(node, [])):
                if child not in seen:
                    seen.add(child)
                    out.append((depth, child))
                    walk(child, depth + 1)

        walk(adapter_id, 1)
        return out


class CatalogView:
    """The current :class:`Snapshot` of ``pool``'s catalog (thread-safe)."""

    def __init__(self, pool: AdapterPool) -> None:
        self.pool = pool
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._version: int | None = None
        self._known: dict[str, tuple[tuple, AdapterRecord, bytes]] = {}  # id -> (key, record, json)
        self._probe: sqlite3.Connection | None = None
        url = pool.engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self._probe = sqlite3.connect(url.database, check_same_thread=False)

    def _catalog_version(self) -> int | None:
        if self._probe is None:
            return None
        return self._probe.execute("PRAGMA data_version").fetchone()[0]

    def current(self) -> Snapshot:
        with self._lock:
            version = self._catalog_version()
            # read the version before the rows: a commit in between makes the next call re-read
            if self._snapshot is None or version is None or version != self._version:
                self._snapshot = self._read()
                self._version = version
            return self._snapshot

    def _read(self) -> Snapshot:
        from sqlalchemy import select

        table = adapters_table
        with self.pool.engine.connect() as conn:
            keys = conn.execute(select(table.c.id, table.c.sha256, table.c.created_at)
                                .order_by(table.c.created_at)).all()
            wanted = [k.id for k in keys if self._known.get(k.id, (None,))[0] != tuple(k)]
            fresh: dict[str, AdapterRecord] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for row in conn.execute(select(table).where(table.c.id.in_(chunk))):
                    record = AdapterRecord.from_row(row)
                    fresh[record.id] = record
            summaries = summary_rows(self.pool, conn)
        known = {}
        for key in keys:
            if key.id in fresh:
                record = fresh[key.id]
                known[key.id] = (tuple(key), record, record_json(record))
            elif key.id in self._known:
                known[key.id] = self._known[key.id]
            # else: removed between the two queries; the next change re-reads it
        self._known = known
        records = [known[k.id][1] for k in keys if k.id in known]
        return Snapshot(records, summaries, {i: v[2] for i, v in known.items()})

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
