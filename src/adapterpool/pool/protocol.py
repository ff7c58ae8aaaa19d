"""What the loop, scoring and the benchmark need of a pool: a local folder
(:class:`~adapterpool.pool.store.AdapterPool`), a server
(:class:`~adapterpool.pool.remote.RemotePool`) and a leave-one-out view (the benchmark's) all
satisfy it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from .catalog import AdapterRecord


@runtime_checkable
class Pool(Protocol):
    """Read adapters (records, a seeded subset, a verified local folder) and add or remove one."""

    @property
    def base_model(self) -> str: ...

    def list(self) -> list[AdapterRecord]: ...

    def get(self, adapter_id: str) -> AdapterRecord: ...

    def sample(self, n: int, seed: int) -> list[AdapterRecord]: ...

    def adapter_dir(self, adapter_id: str) -> Path: ...

    def add(self, adapter_dir: str | Path, *, meta: dict | None = None,
            parent_id: str | None = None) -> AdapterRecord: ...

    def remove(self, adapter_id: str) -> AdapterRecord: ...
