"""Standard LoRA (or any PEFT method) from scratch: the baseline, and the loop's fallback."""

from __future__ import annotations

from accelerate.utils import set_seed
from peft import PeftConfig, PeftModel

from ..config import TrainConfig
from ..errors import UsageError
from ..models.build import load_preprocessor, new_model
from ..models.peft_methods import method_name, peft_config
from ..tasks import Task
from .data_init import initialize_from_data, needs_data, prepare_base, reads_data_before_wrapping
from .trainer import TrainResult, train


def standard_lora_model(base_model: str | None, label_names,
                        peft: PeftConfig | str | None = None, *, seed: int,
                        kind: str = "single", task: Task | None = None,
                        max_length: int = 128) -> PeftModel:
    """A fresh adapter of method ``peft`` (default LoRA; a name of
    :data:`~adapterpool.models.peft_methods.PEFT_METHODS` or any PeftConfig) for a ``kind`` task,
    seeded: where standard LoRA and the fallback start. A method initialised from the target's
    data (EVA, CorDA, LoRA-GA) reads ``task``'s training split
    (:mod:`adapterpool.training.data_init`)."""
    set_seed(seed)
    config = peft_config(peft)
    if needs_data(config) and task is None:
        raise UsageError(f"{method_name(config)} initialisation needs the target's training data "
                         "(task=...)")

    def prepare(base, method) -> None:  # CorDA, LoRA-GA: before the adapter is added
        prepare_base(base, method, task, load_preprocessor(base_model, kind),
                     max_length=max_length, seed=seed)

    model = new_model(base_model, label_names, config, kind=kind,
                      prepare=prepare if reads_data_before_wrapping(config) else None)
    if needs_data(config) and not reads_data_before_wrapping(config):  # EVA: after
        initialize_from_data(model, task, load_preprocessor(base_model, kind),
                             max_length=max_length, seed=seed)
    return model


def train_standard(
    task: Task,
    base_model: str | None,
    config: TrainConfig,
    *,
    peft: PeftConfig | str | None = None,
    description: str = "standard LoRA",
    show_progress: bool = True,
    measure_energy: bool = True,
) -> TrainResult:
    """Standard LoRA (or method ``peft``) from scratch on ``task``: the baseline and fallback."""
    model = standard_lora_model(base_model, task.label_names, peft, seed=config.seed,
                                kind=task.kind, task=task, max_length=config.max_length)
    return train(
        model, task, load_preprocessor(base_model, task.kind), config,
        description=description, show_progress=show_progress, measure_energy=measure_energy,
    )
