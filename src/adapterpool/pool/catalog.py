"""The pool's catalog: one row per adapter, through SQLAlchemy (SQLite by default, PostgreSQL too).

SQLite runs in WAL mode with a busy timeout so that several processes can add at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

adapters_table = Table(
    "adapters",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("task_name", String(200), nullable=False),
    Column("task_kind", String(16), nullable=False),
    Column("label_names", JSON, nullable=False),
    Column("n_train", Integer),
    Column("n_validation", Integer),
    Column("n_test", Integer),
    Column("base_model", Text, nullable=False),
    Column("peft_type", String(32), nullable=False),
    Column("peft_config", JSON, nullable=False),
    Column("metrics", JSON),
    Column("parent_id", String(160)),
    Column("created_at", String(40), nullable=False),
    Column("train_seconds", Float),
    Column("energy_kwh", Float),
    Column("co2_kg", Float),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("size_bytes", Integer, nullable=False),
    Column("description", Text),
)

# One row per adapter whose folder holds a task summary (TASK_EMBEDDING): the file's sha256, so
# that it is verified like the weights, and what it was computed from. A table of its own, so that
# pools created before it get it from create_all and old readers never see it.
task_summaries_table = Table(
    "task_summaries",
    metadata,
    Column("adapter_id", String(160), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # "texts" | "probe"
    Column("n_texts", Integer, nullable=False),
    Column("dims", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
)

tokens_table = Table(
    "write_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", String(40), nullable=False),
)


@dataclass
class AdapterRecord:
    """What the pool knows of one adapter (a catalog row)."""

    id: str
    task_name: str
    task_kind: str
    label_names: list[str]
    base_model: str
    peft_type: str
    peft_config: dict
    sha256: str
    size_bytes: int
    created_at: str
    n_train: int | None = None
    n_validation: int | None = None
    n_test: int | None = None
    metrics: dict = field(default_factory=dict)
    parent_id: str | None = None
    train_seconds: float | None = None
    energy_kwh: float | None = None
    co2_kg: float | None = None
    description: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> AdapterRecord:
        return cls.from_mapping(dict(row._mapping))

    @classmethod
    def from_mapping(cls, data: dict) -> AdapterRecord:
        """From a row's column -> value dict (a list of 100,000 builds the dicts itself: a
        row's ``_mapping`` looks its keys up anew each time)."""
        for key in ("label_names", "peft_config", "metrics"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
        data["metrics"] = data.get("metrics") or {}
        return cls(**data)

    def to_row(self) -> dict:
        return asdict(self)

    def as_json(self) -> dict:
        return asdict(self)

    @property
    def source_task(self) -> dict:
        return {
            "name": self.task_name,
            "kind": self.task_kind,
            "label_names": self.label_names,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "n_test": self.n_test,
        }


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and full fsync on commit."""
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

    return engine


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


@contextmanager
def catalog_write_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the catalog's write lock until the block ends.

    An add inserts its row and publishes its files inside one transaction, so while this lock is
    held no add is half-published and none can commit: the catalog read through this connection
    and the files in storage agree, and a folder without a row is a true orphan. Writers wait
    (SQLite's busy timeout, PostgreSQL's lock queue) and go on when the block ends.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            # Conflicts with the ROW EXCLUSIVE lock every INSERT/DELETE takes, and with itself.
            conn.exec_driver_sql("LOCK TABLE adapters IN SHARE ROW EXCLUSIVE MODE")
        else:
            raise NotImplementedError(
                f"no write lock for catalog dialect {engine.dialect.name!r}; "
                "use SQLite or PostgreSQL"
            )
        try:
            yield conn
        finally:
            conn.rollback()
