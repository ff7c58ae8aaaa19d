"""The adapter pool: a catalog of PEFT adapters for one base model."""

from __future__ import annotations

from .catalog import AdapterRecord
from .checks import AdapterRejected
from .store import AdapterPool, DuplicateAdapterError, PoolError

__all__ = [
    "AdapterPool", "AdapterRecord", "AdapterRejected", "DuplicateAdapterError", "PoolError",
    "open_pool",
]


def open_pool(spec: str, *, token: str | None = None) -> AdapterPool:
    """A pool from a folder (``http(s)://`` pools arrive with the pool server)."""
    if spec.startswith(("http://", "https://")):
        raise PoolError(f"remote pools ({spec}) are not supported yet; use a local pool folder")
    return AdapterPool(spec)
