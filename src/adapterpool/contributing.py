"""The one way a trained adapter enters a pool: its metadata, a PEFT folder, the checked add.

The loop, the demo, the benchmark and the tests all contribute through :func:`contribute`, so
what a pool entry records (task, scores, parent, cost, seed) is decided in one place.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .pool import AdapterRecord
    from .pool.protocol import Pool
    from .tasks import Task
    from .training.trainer import TrainResult


def adapter_metadata(task: Task, result: TrainResult, *, parent_id: str | None, seed: int) -> dict:
    """What travels with a trained adapter into ``adapterpool.json`` and the pool's catalog."""
    return {
        "adapterpool_version": __version__,
        "task": task.describe() | {"source": task.source},
        "metrics": {"validation": result.validation, "test": result.test},
        "parent_id": parent_id,
        "train_seconds": result.train_seconds,
        "energy_kwh": result.energy.kwh,
        "co2_kg": result.energy.co2_kg,
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
    }


def contribute(
    pool: Pool,
    task: Task,
    result: TrainResult,
    *,
    parent_id: str | None = None,
    seed: int = 0,
    task_name: str | None = None,
    task_summary: bool = True,
) -> AdapterRecord:
    """Add ``result``'s adapter to ``pool`` (checked, staged, atomic); returns its record.

    ``task_name`` overrides the name recorded for the task (the benchmark keys sources by it).
    The PEFT folder is written to a temporary folder and removed afterwards. ``task_summary``:
    the adapter travels with the summary of its task's texts (:func:`write_task_summary`), which
    lets a large pool prefilter candidates for a target without running them; only task kinds
    with summaries (text classification, :mod:`adapterpool.task_kinds`) write one.
    """
    from .models.saving import save_adapter
    from .task_kinds import get_kind

    meta = adapter_metadata(task, result, parent_id=parent_id, seed=seed)
    if task_name:
        meta["task"]["name"] = task_name
    with tempfile.TemporaryDirectory(prefix="adapterpool-") as tmp:
        folder = save_adapter(result.model, Path(tmp) / "adapter", meta)
        if task_summary and get_kind(task.kind).task_summary:
            write_task_summary(folder, task, pool.base_model, seed=seed)
        return pool.add(folder, parent_id=parent_id)


def write_task_summary(folder: Path, task: Task, base_model: str, *, seed: int = 0) -> Path:
    """Write ``task``'s summary into an adapter folder: the base model's mean-pooled sentence
    embeddings of a seeded sample of its training texts (their mean and per-dimension
    variance, a few KB; :mod:`adapterpool.ranking.summarize`). Only now are the texts at hand: a
    pool never sees them, so this is the one moment a ``"texts"`` summary can be made."""
    from .models.build import load_tokenizer
    from .peft_files import TASK_EMBEDDING
    from .ranking.summarize import load_encoder, records_summary

    summary = records_summary(task.train, load_encoder(base_model), load_tokenizer(base_model),
                              seed=seed)
    path = Path(folder) / TASK_EMBEDDING
    path.write_bytes(summary.to_bytes())
    return path
