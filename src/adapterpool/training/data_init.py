"""Initialisations that read the target's own training data before the first step.

peft offers three for LoRA, each needing a pass over the target's examples:

- EVA (``init_lora_weights="eva"``) sets each LoRA ``A`` from an SVD of the activations its
  layer sees; peft builds the model with placeholder weights and leaves that pass to
  :func:`peft.initialize_lora_eva_weights`, *after* the adapter is added
  (:func:`initialize_from_data`). EVA leaves the base weights alone.
- CorDA (``"corda"``, instruction-previewed mode) and LoRA-GA (``"lora_ga"``) read the data
  *before* the adapter is added: peft's ``preprocess_corda`` collects each targeted layer's input
  covariance (one example a forward pass: peft's hook takes one sequence), ``preprocess_loraga``
  each targeted weight's gradient of the training loss; ``get_peft_model`` then builds ``A`` and
  ``B`` from them and removes ``B A`` from the base weight, as PiSSA does
  (:func:`prepare_base`; saved as a plain LoRA by :mod:`adapterpool.models.rewritten_base`).

Wherever adapterpool builds a fresh adapter for a task (standard LoRA, the loop's fallback, the
benchmark's peers) it goes through :func:`adapterpool.training.standard.standard_lora_model`,
which runs these passes, so ``--peft eva|corda|lora-ga`` is a complete recipe and never a model
that silently starts from placeholders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import UsageError
from ..task_kinds import get_kind

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

    from ..tasks import Task

AFTER_WRAPPING = ("eva",)  # the pass runs on the built PeftModel
BEFORE_WRAPPING = ("corda", "lora_ga")  # the pass runs on the base model, before get_peft_model
DATA_DRIVEN_INITS = AFTER_WRAPPING + BEFORE_WRAPPING
CORDA_EXAMPLES = 256  # peft's CorDA guide: about 256 distinct samples make a stable covariance


def _init(config: PeftConfig) -> object:
    return getattr(config, "init_lora_weights", None)


def needs_data(config: PeftConfig) -> bool:
    """Whether ``config``'s initialisation reads the target's data (:data:`DATA_DRIVEN_INITS`)."""
    return _init(config) in DATA_DRIVEN_INITS


def reads_data_before_wrapping(config: PeftConfig) -> bool:
    """CorDA and LoRA-GA: their pass runs on the base model (:func:`prepare_base`)."""
    return _init(config) in BEFORE_WRAPPING


def _batches(task: Task, preprocessor, *, max_length: int, seed: int, batch_size: int,
             labels: bool) -> list[dict[str, torch.Tensor]]:
    """The seeded training batches training starts with (labels kept only where asked)."""
    from .encoding import EncodedRecords, train_loader

    if get_kind(task.kind).inputs != "tokenizer":
        raise UsageError(f"a data-driven initialisation (EVA, CorDA, LoRA-GA) reads token inputs; "
                         f"a {task.kind} task has none (use another --peft method)")
    data = EncodedRecords(task.train, preprocessor, max_length)
    return [{k: v for k, v in batch.items() if labels or k != "labels"}
            for batch in train_loader(data, preprocessor, batch_size, seed)]


def initialize_from_data(model: PeftModel, task: Task, preprocessor, *, max_length: int,
                         seed: int, batch_size: int = 32) -> None:
    """EVA: the data-driven step on the built model, over ``task``'s training split (the labels
    are not inputs of that pass)."""
    from peft import initialize_lora_eva_weights

    batches = _batches(task, preprocessor, max_length=max_length, seed=seed,
                       batch_size=batch_size, labels=False)
    initialize_lora_eva_weights(model, dataloader=batches, show_progress_bar=False)


def prepare_base(base: torch.nn.Module, config: PeftConfig, task: Task, preprocessor, *,
                 max_length: int, seed: int, batch_size: int = 32) -> None:
    """CorDA or LoRA-GA: the pass over ``task``'s training split that ``get_peft_model`` builds
    the adapter from, run on ``base`` (the model the adapter will be added to, head included).

    CorDA sees up to :data:`CORDA_EXAMPLES` examples, one a forward pass and unpadded (peft's
    covariance hook takes one sequence); LoRA-GA averages the gradient of the training loss over
    every batch (labels included), with the base's own dropout in train mode, as peft does."""
    from peft.tuners.lora import LoraModel
    from peft.tuners.lora.corda import preprocess_corda
    from peft.tuners.lora.loraga import preprocess_loraga

    if config.target_modules is None:  # peft's table, as get_peft_model would pick (CorDA's
        # preprocessing does not look it up itself)
        model_type = LoraModel.get_model_config(base)["model_type"]
        modules = LoraModel.target_module_mapping.get(model_type)
        if modules is None:
            raise UsageError(f"peft has no default target modules for {model_type}: set "
                             "target_modules")
        config.target_modules = set(modules)
    if _init(config) == "corda":
        batches = _batches(task, preprocessor, max_length=max_length, seed=seed, batch_size=1,
                           labels=True)[:CORDA_EXAMPLES]

        def run_model() -> None:
            with torch.no_grad():
                for batch in batches:
                    base(**batch)

        preprocess_corda(base, config, run_model=run_model)
    elif _init(config) == "lora_ga":
        batches = _batches(task, preprocessor, max_length=max_length, seed=seed,
                           batch_size=batch_size, labels=True)

        def train_step() -> None:
            for batch in batches:
                base(**batch).loss.backward()

        preprocess_loraga(base, config, train_step=train_step)
    else:
        raise ValueError(f"no pass before wrapping for init_lora_weights={_init(config)!r}")
