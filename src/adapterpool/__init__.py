"""adapterpool: reuse a pool of PEFT adapters — rank by transferability, warm-start, contribute.

Heavy modules (torch, transformers) load on first use of the names below, so that the command
line starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# The metric `rank` and `adapt` use unless told otherwise: the best by weighted Kendall tau in
# benchmarks/results/small-pool/README.md (kept here so the command line can name it without
# loading it).
DEFAULT_METRIC = "knn"

_EXPORTS = {
    "AdapterPool": "adapterpool.pool",
    "load_task": "adapterpool.tasks",
    "rank": "adapterpool.loop",
    "adapt": "adapterpool.loop",
    "AdaptConfig": "adapterpool.config",
    "AdaptResult": "adapterpool.loop",
    "train_standard": "adapterpool.loop",
    "contribute": "adapterpool.contributing",
    "TrainConfig": "adapterpool.training",
    "peft_config": "adapterpool.peft_methods",
    "PEFT_METHODS": "adapterpool.peft_methods",
}

__all__ = ["DEFAULT_METRIC", "__version__"] + list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapterpool' has no attribute {name!r}")
