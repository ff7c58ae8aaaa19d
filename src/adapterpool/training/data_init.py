"""Initialisations that read the target's own training data before the first step.

peft's EVA (``LoraConfig(init_lora_weights="eva")``) sets each LoRA ``A`` from an SVD of the
activations its layer sees on the target's inputs; peft builds the model with placeholder
weights and leaves that pass to :func:`peft.initialize_lora_eva_weights`. Wherever adapterpool
builds a fresh adapter for a task (standard LoRA, the loop's fallback, the benchmark's peers) it
calls :func:`initialize_from_data`, so ``--peft eva`` is a complete recipe and not a model that
silently starts from the placeholders. EVA leaves the base weights alone, so its adapters load
on the plain base model like any LoRA (unlike PiSSA/OLoRA, which rewrite the base weights).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError
from ..task_kinds import get_kind

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

    from ..tasks import Task

DATA_DRIVEN_INITS = ("eva",)


def needs_data(config: PeftConfig) -> bool:
    """Whether ``config``'s initialisation reads the target's data (:data:`DATA_DRIVEN_INITS`)."""
    return getattr(config, "init_lora_weights", None) in DATA_DRIVEN_INITS


def initialize_from_data(model: PeftModel, task: Task, preprocessor, *, max_length: int,
                         seed: int, batch_size: int = 32) -> None:
    """Run the data-driven step of ``model``'s initialisation over ``task``'s training split (the
    same seeded batches training starts with; the labels are not inputs of that pass)."""
    from peft import initialize_lora_eva_weights

    from .encoding import EncodedRecords, train_loader

    if get_kind(task.kind).inputs != "tokenizer":
        raise UsageError(f"EVA initialisation reads token inputs; a {task.kind} task has none "
                         "(use another --peft method)")
    data = EncodedRecords(task.train, preprocessor, max_length)
    batches = [{k: v for k, v in batch.items() if k != "labels"}
               for batch in train_loader(data, preprocessor, batch_size, seed)]
    initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)
