"""The adapter pool: a catalog of PEFT adapters for one base model."""

from __future__ import annotations

from .catalog import AdapterRecord
from .checks import AdapterRejected
from .protocol import Pool
from .store import AdapterPool, DuplicateAdapterError, PoolError

__all__ = [
    "AdapterPool", "AdapterRecord", "AdapterRejected", "DuplicateAdapterError", "Pool",
    "PoolError", "open_pool",
]


def open_pool(spec: str, *, token: str | None = None) -> Pool:
    """A local pool folder, or a pool server at ``http(s)://HOST:PORT`` (token for writes)."""
    if spec.startswith(("http://", "https://")):
        from .remote import RemotePool

        return RemotePool(spec, token=token)
    return AdapterPool(spec)
