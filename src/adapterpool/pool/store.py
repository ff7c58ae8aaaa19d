"""A local pool: adapters in PEFT format under ``adapters/<id>/`` and a catalog beside them.

An add is staged in ``.staging/``, checked, then published by one rename inside the catalog
transaction, so a crash at any instant leaves either the old pool or the new one — at worst an
orphan folder that ``verify --repair`` removes. Catalog rows always have their files.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from ..errors import DuplicateAdapterError, PoolError, UsageError
from ..models.base_model import canonical_name
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from .catalog import AdapterRecord, adapters_table, create_schema, make_engine, task_summaries_table
from .checks import AdapterRejected, ShapeCheck, check_id, slugify, validate_adapter_dir
from .storage import open_storage, sha256_stream
from .task_summaries import delete_summary_row, stage_summary_file, summary_dims, summary_row

POOL_MARKER = "pool.json"
FORMAT_VERSION = "1"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def seeded_sample(records: list, n: int, seed: int, *, key=lambda r: r.id) -> list:
    """A seeded random subset of ``n`` adapters (all of them when the pool is smaller).

    Sorted by ``key`` (the id) first, so the draw depends on the seed and the ids only; the
    benchmark replays the same draw over its candidates.
    """
    records = sorted(records, key=key)
    if n <= 0:
        raise UsageError(f"subset size must be positive, got {n}")
    if n >= len(records):
        return records
    chosen = np.random.default_rng(seed).choice(len(records), size=n, replace=False)
    return [records[i] for i in sorted(chosen)]


class AdapterPool:
    """Open an existing pool folder; create one with :meth:`AdapterPool.init`."""

    def __init__(self, path: str | Path, *, catalog_url: str | None = None,
                 shape_check: ShapeCheck | None = None) -> None:
        """``shape_check``: the tensor shapes an adapter must have to enter (see
        :data:`~adapterpool.pool.checks.ShapeCheck`); default the model layer's
        (:func:`adapterpool.models.shapes.expected_shapes`), imported on the first add only, so
        that listing, reading and exporting a pool never load torch."""
        self.path = Path(path)
        self._shape_check = shape_check
        marker = self.path / POOL_MARKER
        if not marker.is_file():
            raise PoolError(
                f"{str(self.path)!r} is not an adapter pool (no {POOL_MARKER}); "
                f"create one with `adapterpool pool init {self.path}`"
            )
        self.info = json.loads(marker.read_text())
        self.catalog_url = catalog_url or self.info.get("catalog") or self._default_catalog()
        self.engine = make_engine(self.catalog_url)
        create_schema(self.engine)
        self.storage = open_storage(self.info.get("storage"), self.path)

    def _default_catalog(self) -> str:
        return f"sqlite:///{(self.path / 'catalog.sqlite').resolve()}"

    @classmethod
    def init(
        cls, path: str | Path, *, base_model: str | None = None, catalog_url: str | None = None,
        storage_url: str | None = None,
    ) -> AdapterPool:
        """Create an empty pool for ``base_model`` (default: the embedded MiniLM).

        ``catalog_url``: a SQLAlchemy URL (default SQLite in the folder); ``storage_url``: an
        fsspec URL for the adapter files (default the folder's ``adapters/``).
        """
        from ..models.base_model import base_model_fingerprint

        path = Path(path)
        if (path / POOL_MARKER).exists():
            raise PoolError(f"{path} is already a pool")
        if path.exists() and any(path.iterdir()):
            raise PoolError(f"{path} exists and is not empty; choose a new folder")
        fingerprint = base_model_fingerprint(base_model)
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapters").mkdir(exist_ok=True)
        info = {
            "format_version": FORMAT_VERSION,
            "base_model": canonical_name(base_model),
            "fingerprint": fingerprint,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if catalog_url:
            info["catalog"] = catalog_url
        if storage_url:
            info["storage"] = storage_url
        tmp = path / f".{POOL_MARKER}.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path / POOL_MARKER)
        return cls(path)

    @property
    def shape_check(self) -> ShapeCheck:
        if self._shape_check is None:
            from ..models.shapes import expected_shapes

            self._shape_check = expected_shapes
        return self._shape_check

    # -- reading -------------------------------------------------------------------------------
    @property
    def base_model(self) -> str:
        return self.info["base_model"]

    def list(self) -> list[AdapterRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(adapters_table).order_by(adapters_table.c.created_at))
            keys = list(rows.keys())
            return [AdapterRecord.from_mapping(dict(zip(keys, r, strict=True))) for r in rows]

    def get(self, adapter_id: str) -> AdapterRecord:
        check_id(adapter_id)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(adapters_table).where(adapters_table.c.id == adapter_id)
            ).first()
        if row is None:
            raise PoolError(f"no adapter {adapter_id!r} in pool {self.path}")
        return AdapterRecord.from_row(row)

    def adapter_dir(self, adapter_id: str) -> Path:
        """The folder of a catalogued adapter (PEFT format), checked against its sha256."""
        record = self.get(adapter_id)
        folder = self.storage.local_dir(record.id, record.sha256)
        if folder is None or sha256_file(folder / ADAPTER_WEIGHTS) != record.sha256:
            raise PoolError(
                f"adapter {adapter_id}: weights missing or altered on disk; "
                "run `adapterpool pool verify`"
            )
        return folder

    def sample(self, n: int, seed: int) -> list[AdapterRecord]:
        return seeded_sample(self.list(), n, seed)

    def task_summaries(self, adapter_ids: list[str]):
        """The verified task summaries of ``adapter_ids`` (a :class:`SummaryReading`)."""
        from .task_summaries import read_summaries

        return read_summaries(self, adapter_ids)

    # -- writing -------------------------------------------------------------------------------
    def add(
        self,
        adapter_dir: str | Path,
        *,
        meta: dict | None = None,
        parent_id: str | None = None,
        adapter_id: str | None = None,
    ) -> AdapterRecord:
        """Check, stage and publish an adapter; returns its catalog record.

        ``meta`` defaults to the folder's ``adapterpool.json`` (task block, metrics, timing). A
        task summary in the folder (``task_embedding.safetensors``) is checked, kept and recorded
        with its sha256 in the same transaction; a folder without one is added all the same.
        """
        source = Path(adapter_dir)
        if meta is None:
            meta_path = source / ADAPTERPOOL_META
            if not meta_path.is_file():
                raise AdapterRejected(
                    f"{source}: no adapterpool.json; pass the task name, kind and label names "
                    "(`pool import --task-name --kind --labels`)"
                )
            meta = json.loads(meta_path.read_text())
        fingerprint = self.info.get("fingerprint")
        config = validate_adapter_dir(
            source, base_model=self.base_model, meta=meta, fingerprint=fingerprint,
            expected_shapes=self.shape_check,
        )
        if parent_id is not None:
            self.get(parent_id)
        staging = self.path / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            shutil.copyfile(source / ADAPTER_WEIGHTS, staging / ADAPTER_WEIGHTS)
            # Recorded under the pool's name: a copy that loads anywhere, not from the
            # contributor's folder (which validation found to hold the same weights).
            config["base_model_name_or_path"] = self.base_model
            (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
            (staging / ADAPTERPOOL_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            summary = stage_summary_file(source, staging, summary_dims(self))
            config = validate_adapter_dir(staging, base_model=self.base_model, meta=meta,
                                          expected_shapes=self.shape_check)
            sha = sha256_file(staging / ADAPTER_WEIGHTS)
            task = meta["task"]
            record = AdapterRecord(
                id=check_id(
                    adapter_id if adapter_id is not None else f"{slugify(task['name'])}-{sha[:10]}"
                ),
                task_name=task["name"],
                task_kind=task["kind"],
                label_names=list(task["label_names"]),
                n_train=task.get("n_train"),
                n_validation=task.get("n_validation"),
                n_test=task.get("n_test"),
                base_model=self.base_model,
                peft_type=config["peft_type"],
                peft_config=config,
                metrics=meta.get("metrics") or {},
                parent_id=parent_id or meta.get("parent_id"),
                created_at=datetime.now(UTC).isoformat(),
                train_seconds=meta.get("train_seconds"),
                energy_kwh=meta.get("energy_kwh"),
                co2_kg=meta.get("co2_kg"),
                sha256=sha,
                size_bytes=sum(p.stat().st_size for p in staging.iterdir()),
                description=meta.get("description"),
            )
            _fsync_tree(staging)
            published = False
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(adapters_table).values(**record.to_row()))
                    # a summary row under this new id can only be a leftover (a remove by a
                    # version without summaries): it goes, whether or not this add has one
                    delete_summary_row(conn, record.id)
                    if summary is not None:
                        summary_sha = sha256_file(staging / TASK_EMBEDDING)
                        conn.execute(insert(task_summaries_table).values(
                            **summary_row(record.id, summary_sha, summary)))
                    self.storage.publish(staging, record.id)
                    published = True
            except IntegrityError as exc:
                existing = self._id_for_sha(sha) or record.id
                raise DuplicateAdapterError(
                    f"these weights are already in the pool as {existing}", existing
                ) from exc
            except BaseException:
                if published and self._id_for_sha(sha) is None:  # commit failed after publishing
                    self.storage.delete(record.id)
                raise
            return record
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _id_for_sha(self, sha: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(adapters_table.c.id).where(adapters_table.c.sha256 == sha)
            ).first()
        return None if row is None else row[0]

    def remove(self, adapter_id: str) -> AdapterRecord:
        """Drop from the catalog, then delete the files (a crash leaves only an orphan)."""
        record = self.get(adapter_id)
        with self.engine.begin() as conn:
            conn.execute(delete(adapters_table).where(adapters_table.c.id == record.id))
            delete_summary_row(conn, record.id)
        self.storage.delete(record.id)
        return record


__all__ = ["AdapterPool", "AdapterRejected", "DuplicateAdapterError", "PoolError"]
