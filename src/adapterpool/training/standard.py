"""Standard LoRA (or any PEFT method) from scratch: the baseline, and the loop's fallback."""

from __future__ import annotations

from accelerate.utils import set_seed
from peft import PeftConfig, PeftModel

from ..config import TrainConfig
from ..models.build import load_preprocessor, new_model
from ..tasks import Task
from .trainer import TrainResult, train


def standard_lora_model(base_model: str | None, label_names,
                        peft: PeftConfig | str | None = None, *, seed: int,
                        kind: str = "single") -> PeftModel:
    """A fresh adapter of method ``peft`` (default LoRA; a name of
    :data:`~adapterpool.models.peft_methods.PEFT_METHODS` or any PeftConfig) for a ``kind`` task,
    seeded: where standard LoRA and the fallback start."""
    set_seed(seed)
    return new_model(base_model, label_names, peft, kind=kind)


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
                                kind=task.kind)
    return train(
        model, task, load_preprocessor(base_model, task.kind), config,
        description=description, show_progress=show_progress, measure_energy=measure_energy,
    )
