"""adapterpool: reuse a pool of PEFT adapters — rank by transferability, warm-start, contribute.

Heavy modules (torch, transformers) load on first use of the names below, so that the command
line starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .task_kinds import DEFAULT_METRIC, DEFAULT_SCORING_SAMPLES, DEFAULT_STRATEGY

__version__ = "0.1.0"


_EXPORTS = {
    "AdapterPool": "adapterpool.pool",
    "load_task": "adapterpool.tasks",
    "rank": "adapterpool.ranking.rank",
    "adapt": "adapterpool.loop.adapt",
    "AdaptConfig": "adapterpool.config",
    "AdaptResult": "adapterpool.loop.adapt",
    "train_standard": "adapterpool.training.standard",
    "contribute": "adapterpool.contributing",
    "TrainConfig": "adapterpool.config",
    "peft_config": "adapterpool.models.peft_methods",
    "PEFT_METHODS": "adapterpool.models.peft_methods",
}

__all__ = ["DEFAULT_METRIC", "DEFAULT_SCORING_SAMPLES", "DEFAULT_STRATEGY", "__version__",
           *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adapterpool' has no attribute {name!r}")
