"""A small, focused trainer: AdamW + warm-up/decay, clipping, early stopping, best weights kept.

It runs under Hugging Face Accelerate, so ``accelerate launch`` spreads the same code over several
GPUs or nodes; on one CPU it is a plain loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from .encoding import EncodedRecords, inference_loader, train_loader
from .energy import EnergyMeter, EnergyReading
from .errors import UsageError
from .tasks import Task

SELECTION_METRICS = ("accuracy", "f1_macro", "f1_weighted")


@dataclass
class TrainConfig:
    """Budget and optimiser settings; ``epochs`` is the most the run may take."""

    epochs: int = 3
    learning_rate: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    evals_per_epoch: int = 2
    patience: int = 3
    selection_metric: str = "accuracy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise UsageError(
                f"selection metric {self.selection_metric!r} unknown; use one of {SELECTION_METRICS}"
            )
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: PeftModel
    validation: dict
    test: dict | None
    epochs_run: float
    best_step: int
    energy: EnergyReading
    history: list[dict] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return self.energy.seconds


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(labels, predictions, average="weighted", zero_division=0)),
    }


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    data: EncodedRecords,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 128,
    accelerator: Accelerator | None = None,
) -> dict:
    """Accuracy, macro-F1 and weighted-F1 of ``model`` on encoded records."""
    loader, _ = inference_loader(data, tokenizer, batch_size)
    device = next(model.parameters()).device
    if accelerator is not None and accelerator.num_processes > 1:
        loader = accelerator.prepare(loader)  # shard across processes, gather below
    else:
        accelerator = None
    was_training = model.training
    model.eval()
    all_preds, all_labels = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        preds = model(**batch).logits.argmax(dim=-1)
        if accelerator is not None:
            preds, labels = accelerator.gather_for_metrics((preds, labels))
        all_preds.append(preds.cpu().numpy())
        all_labels.append(labels.cpu().numpy())
    model.train(was_training)
    return classification_scores(np.concatenate(all_labels), np.concatenate(all_preds))


def train(
    model: PeftModel,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    *,
    description: str = "train",
    measure_energy: bool = True,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` on ``task.train``, select on ``task.validation``, report test too."""
    set_seed(config.seed)
    accelerator = Accelerator()
    train_data = EncodedRecords(task.train, tokenizer, config.max_length)
    validation_data = EncodedRecords(task.validation, tokenizer, config.max_length)
    loader = train_loader(train_data, tokenizer, config.batch_size, config.seed)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    total_steps = config.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    eval_every = max(1, len(loader) // max(1, config.evals_per_epoch))
    history: list[dict] = []
    best_score, best_step, best_state, stale = -np.inf, 0, None, 0
    step = 0
    stop = False
    with EnergyMeter(enabled=measure_energy) as meter:
        bar = tqdm(
            total=total_steps,
            desc=description,
            disable=not show_progress or not accelerator.is_local_main_process,
            leave=False,
        )
        model.train()
        for epoch in range(config.epochs):
            for batch in loader:
                loss = model(**batch).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if step % eval_every == 0 or step == total_steps:
                    scores = evaluate(
                        model, validation_data, tokenizer,
                        batch_size=config.eval_batch_size, accelerator=accelerator,
                    )
                    history.append({"step": step, "epoch": step / len(loader), **scores})
                    if scores[config.selection_metric] > best_score:
                        best_score, best_step, stale = scores[config.selection_metric], step, 0
                        unwrapped = accelerator.unwrap_model(model)
                        best_state = {
                            k: v.detach().cpu().clone()
                            for k, v in get_peft_model_state_dict(
                                unwrapped, save_embedding_layers=False
                            ).items()
                        }
                    else:
                        stale += 1
                        if stale >= config.patience:
                            stop = True
                            break
            if stop:
                break
        bar.close()
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        set_peft_model_state_dict(model, best_state)
    best = next(h for h in history if h["step"] == best_step)
    validation = {k: best[k] for k in SELECTION_METRICS}
    test = None
    if task.test is not None:
        test = evaluate(
            model, EncodedRecords(task.test, tokenizer, config.max_length), tokenizer,
            batch_size=config.eval_batch_size,
        )
    accelerator.free_memory()
    return TrainResult(
        model=model,
        validation=validation,
        test=test,
        epochs_run=step / len(loader),
        best_step=best_step,
        energy=meter.reading,
        history=history,
    )
