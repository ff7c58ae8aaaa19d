"""A small, focused trainer: AdamW + warm-up/decay, clipping, early stopping, best weights kept.

It runs under Hugging Face Accelerate, so ``accelerate launch`` spreads the same code over several
GPUs or nodes; on one CPU it is a plain loop.

``TrainConfig`` lives in :mod:`adapterpool.config` (no torch there, so the command line can read
its defaults without loading torch) and is re-exported here, where it has always been imported.
Early stops (early pass, hopeless cutoff) are decided by a *stop rule* from
:mod:`adapterpool.loop.strategies`, so the trainer stays ignorant of thresholds and strategies.

Every PEFT method trains through the same loop; what differs is kept here: the learning rate
(the method's, from :mod:`adapterpool.models.peft_methods`, unless the config sets one),
AdaLoRA's rank reallocation after each optimiser step, and the padding side prompt learning needs
on decoders.
Every task kind trains through it too: the loss is the model's own (cross-entropy on classes or
on target tokens); evaluation is the argmax of the logits, or generation for text2text
(:mod:`adapterpool.training.generation`), scored with the kind's threshold metrics.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from ..config import SELECTION_METRICS, TrainConfig
from ..models.build import check_room, fit_tokenizer
from ..models.peft_methods import learning_rate_for
from ..task_kinds import check_threshold_metric, get_kind
from ..tasks import Task
from .encoding import EncodedRecords, inference_loader, train_loader
from .energy import EnergyMeter, EnergyReading
from .stopping import STOP_REASONS, StopRule

__all__ = [
    "SELECTION_METRICS", "STOP_REASONS", "StopRule", "TrainConfig", "TrainResult",
    "classification_scores", "evaluate", "train",
]


@dataclass
class Resume:
    """Where a run left off: its optimiser's state (AdamW's moments and step counts, on the CPU)
    and how many steps of its learning-rate schedule it had taken. A run given it goes on with the
    same optimiser and schedule (a racing probe and its continuation are one transfer)."""

    optimizer_state: dict
    schedule_step: int


def _on_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_on_cpu(v) for v in value]
    return copy.deepcopy(value)


@dataclass
class TrainResult:
    # the trained model (its best weights); None in the loop's attempts, which keep their trained
    # state instead (adapterpool.loop.attempts): the model is AdaptResult.model
    model: PeftModel | None
    validation: dict
    test: dict | None
    epochs_run: float
    best_step: int
    energy: EnergyReading
    history: list[dict] = field(default_factory=list)
    # why it ended: "passed" / "cutoff" (a stop rule), "budget" (all epochs), "early_stopping"
    stop_reason: str = "budget"
    learning_rate: float | None = None  # as trained: the config's, else the PEFT method's
    resume: Resume | None = None  # with keep_optimizer: where a continuation would go on from

    @property
    def train_seconds(self) -> float:
        return self.energy.seconds

    @property
    def cpu_seconds(self) -> float:
        """The training's CPU time (see :mod:`adapterpool.training.energy`)."""
        return self.energy.cpu_seconds


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
    max_new_tokens: int | None = None,
    num_beams: int = 1,
) -> dict:
    """Accuracy, macro-F1 and weighted-F1 of ``model`` on encoded records; for text2text
    records the text metrics of its generations (on every process alike: generation is not
    sharded; ``max_new_tokens``, ``num_beams``: see
    :func:`adapterpool.training.generation.decoding_for`)."""
    if data.inputs == "text2text":
        from .generation import decoding_for, generate_texts, reference_texts, text_scores

        # a model prepared for several processes is wrapped (DistributedDataParallel), and the
        # wrapper has no generate()
        generating = model if accelerator is None else accelerator.unwrap_model(model)
        predictions = generate_texts(generating, data, tokenizer, batch_size=batch_size,
                                     decoding=decoding_for(max_new_tokens, num_beams))
        return text_scores(reference_texts(data, tokenizer), predictions)
    loader, _ = inference_loader(data, fit_tokenizer(tokenizer, model), batch_size)
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
    stop_rule: StopRule | None = None,
    eval_at_start: bool = False,
    resume: Resume | None = None,
    keep_optimizer: bool = False,
) -> TrainResult:
    """Fine-tune ``model`` on ``task.train``, select on ``task.validation``, report test too.

    ``stop_rule(history, config)`` is asked after every evaluation and may end the run with a
    reason from :data:`STOP_REASONS`; without one the run ends on its budget or on patience.
    ``eval_at_start`` evaluates before the first step (history entry at step 0) and counts those
    weights as a candidate for the best: a model carried over from earlier training (same-labels,
    a racing winner, the warm fallback) is then never returned worse than it came in.
    ``resume`` (a :class:`Resume` from an earlier run of the same model, made with
    ``keep_optimizer=True``) goes on with that run's optimiser state and from its step of the
    schedule, which then spans ``schedule_epochs`` in all.
    Every history entry has ``step``, ``epoch``, ``seconds`` (wall time since training started,
    the clock of ``train_seconds``) and the validation scores.
    """
    check_room(model, config.max_length)
    check_threshold_metric(task.kind, config.selection_metric)
    set_seed(config.seed)
    accelerator = Accelerator()
    tokenizer = fit_tokenizer(tokenizer, model)
    learning_rate = config.learning_rate or learning_rate_for(model.active_peft_config)
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
        lr=learning_rate,
    )
    # The schedule counts the batches of the whole data set: under several processes Accelerate
    # steps the prepared scheduler once per process for every optimiser step.
    batches = len(loader)
    schedule_steps = max(_steps(config.epochs, batches),
                         _steps(config.schedule_epochs or 0, batches))
    offset = 0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer_state)
        offset = resume.schedule_step
        for group in optimizer.param_groups:  # what the schedule scales (set by the first run)
            group.setdefault("initial_lr", group["lr"])
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * schedule_steps), schedule_steps,
        last_epoch=offset - 1,
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    # The loop counts this process's share (each process sees 1/n of every epoch), so that n
    # processes run ``config.epochs`` epochs, not n times as many, and ``epoch`` in the history
    # (what the stop rules read) means the same as on one process. One process: unchanged.
    steps_per_epoch = len(loader)
    total_steps = _steps(config.epochs, steps_per_epoch)
    eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))
    allocate = rank_allocation(accelerator.unwrap_model(model), total_steps)
    history: list[dict] = []
    best_score, best_step, best_state = -np.inf, 0, None
    step = 0
    stop_reason: str | None = None

    def checkpoint(start: float) -> str | None:
        """Evaluate, keep the best weights, then ask the stop rule and patience."""
        nonlocal best_score, best_step, best_state
        scores = evaluate(
            model, validation_data, tokenizer,
            batch_size=config.eval_batch_size, accelerator=accelerator,
            max_new_tokens=config.max_new_tokens, num_beams=config.num_beams,
        )
        history.append({
            "step": step, "epoch": step / steps_per_epoch,
            "seconds": time.perf_counter() - start, **scores,
        })
        if scores[config.selection_metric] > best_score:
            best_score, best_step = scores[config.selection_metric], step
            best_state = trained_state(accelerator.unwrap_model(model))
        reason = stop_rule(history, config) if stop_rule is not None else None
        if reason is not None and reason not in STOP_REASONS:
            raise ValueError(f"stop rule returned {reason!r}; expected one of {STOP_REASONS}")
        # patience is in epochs, whatever the evaluation cadence (4 evaluations an epoch wait
        # as long as 1 does)
        if reason is None and step - best_step >= config.patience * steps_per_epoch - 1e-9:
            reason = "early_stopping"
        return reason

    with EnergyMeter(enabled=measure_energy) as meter:
        start = time.perf_counter()
        bar = tqdm(
            total=total_steps,
            desc=description,
            disable=not show_progress or not accelerator.is_local_main_process,
            leave=False,
        )
        if eval_at_start:
            stop_reason = checkpoint(start)
        model.train()
        while stop_reason is None and step < total_steps:
            for batch in loader:
                loss = model(**batch).loss
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                if allocate is not None:  # AdaLoRA: after the step, before the gradients go
                    allocate(step)
                optimizer.zero_grad()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if step % eval_every == 0 or step == total_steps:
                    stop_reason = checkpoint(start)
                if stop_reason is not None or step >= total_steps:
                    break
        bar.close()
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        restore_state(model, best_state)
    best = next(h for h in history if h["step"] == best_step)
    validation = {k: best[k] for k in get_kind(task.kind).threshold_metrics}
    test = None
    if task.test is not None:
        test = evaluate(
            model, EncodedRecords(task.test, tokenizer, config.max_length), tokenizer,
            batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens,
            num_beams=config.num_beams,
        )
    if accelerator.device.type != "cpu":  # on CPU only a costly gc.collect() with no gain
        accelerator.free_memory()
    return TrainResult(
        model=model,
        validation=validation,
        test=test,
        epochs_run=step / steps_per_epoch,
        best_step=best_step,
        energy=meter.reading,
        history=history,
        stop_reason=stop_reason or "budget",
        learning_rate=learning_rate,
        resume=(Resume(_on_cpu(optimizer.state_dict()), offset + step) if keep_optimizer
                else None),
    )


def trained_state(model: PeftModel) -> dict:
    """A copy of what training changes: every trainable parameter (and AdaLoRA's rank pattern).

    Not peft's adapter state dict: for P-tuning that is the prompt encoder's *output* (its MLP is
    not saved) and for AdaLoRA it is cut to the current rank pattern, so loading it back would not
    give the trained model again; the parameters themselves do, for every method.
    """
    params = {name: p.detach().cpu().clone()
              for name, p in model.named_parameters() if p.requires_grad}
    config = model.active_peft_config
    return {"params": params, "rank_pattern": copy.deepcopy(getattr(config, "rank_pattern", None))}


def restore_state(model: PeftModel, state: dict) -> None:
    """Put back what :func:`trained_state` copied."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value)
    if hasattr(model.active_peft_config, "rank_pattern"):
        model.active_peft_config.rank_pattern = copy.deepcopy(state["rank_pattern"])


def rank_allocation(model: PeftModel, total_steps: int) -> Callable[[int], None] | None:
    """AdaLoRA's per-step call, ``update_and_allocate(step)``, set up for this run (None for
    every other method).

    A fresh AdaLoRA model (no rank pattern yet) spreads its rank budget over this run: its
    ``total_step`` becomes the run's real step count. A model whose ranks were allocated earlier
    in this process (a racing winner or warm fallback continuing its attempt) keeps that pattern:
    peft's final phase masks with it every step. A warm start from a saved AdaLoRA adapter holds
    only the ranks the source kept (peft resized the layers on load): those are trained as they
    are, since reallocating would measure the budget against the full initial ranks and mask
    every one.
    """
    tuner = model.base_model
    config = model.active_peft_config
    if not hasattr(tuner, "update_and_allocate") or not hasattr(config, "rank_pattern"):
        return None
    if not config.rank_pattern:
        config.total_step = total_steps
        if total_steps - config.tfinal < 2:  # peft's final allocation needs a measured step
            warnings.warn(
                f"AdaLoRA: a {total_steps}-step run (tfinal {config.tfinal}) has no step to "
                "measure importance in before the final allocation; ranks stay at init_r",
                UserWarning, stacklevel=3,
            )
            return None
        if config.tinit >= total_steps - config.tfinal:
            warnings.warn(
                f"AdaLoRA: tinit ({config.tinit}) + tfinal ({config.tfinal}) leave no steps of "
                f"this {total_steps}-step run to reallocate ranks in", UserWarning, stacklevel=3,
            )
        return tuner.update_and_allocate
    rows = sum(p.shape[0] for n, p in model.named_parameters() if ".lora_E." in n)
    full = sum(len(v) for v in config.rank_pattern.values())
    if rows != full:  # resized to the kept ranks on load: nothing to mask
        return None
    done = config.total_step
    return lambda step: tuner.update_and_allocate(done + step)


def _steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps in ``epochs`` (fractions round up; a run takes at least one step)."""
    return max(1, math.ceil(epochs * steps_per_epoch - 1e-9))
