"""The adapter pool: a catalog of PEFT adapters for one base model."""

from .catalog import AdapterRecord
from .checks import AdapterRejected
from .store import AdapterPool, DuplicateAdapterError, PoolError

__all__ = ["AdapterPool", "AdapterRecord", "AdapterRejected", "DuplicateAdapterError", "PoolError"]
