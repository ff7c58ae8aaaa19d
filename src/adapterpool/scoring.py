"""Transferability scoring: one forward pass per candidate adapter, every chosen metric from it.

The pass yields the pooled features that the candidate's head reads, its source-head probabilities
and their argmax — the inputs of all metrics in :mod:`adapterpool.metrics`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.utils import find_executable_batch_size
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from .encoding import EncodedRecords, inference_loader, restore_order
from .metrics import ENSEMBLE, ENSEMBLE_MEMBERS, compute_metric, ensemble, per_candidate_metrics
from .modeling import head_module, load_for_inference, pick_device
from .pool import AdapterPool, AdapterRecord
from .tasks import Records, Task
from .tasks.task import stratified_subsample


@dataclass
class CandidateOutputs:
    features: np.ndarray  # (n, d) float32: the input of the classification head
    source_probs: np.ndarray  # (n, c_source) float64
    seconds: float


@dataclass
class CandidateScore:
    adapter_id: str
    source_task: str
    scores: dict[str, float]
    seconds: float  # forward pass + metrics
    metric_seconds: dict[str, float] = field(default_factory=dict)


def scoring_sample(task: Task, max_samples: int | None, seed: int) -> Records:
    """The target examples that every candidate sees: a stratified, seeded sample of train."""
    if max_samples is None or len(task.train) <= max_samples:
        return task.train
    return task.train.take(stratified_subsample(task.train.label, max_samples, seed))


@torch.inference_mode()
def candidate_outputs(
    model: torch.nn.Module,
    data: EncodedRecords,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
) -> CandidateOutputs:
    """Run ``model`` over ``data`` (length-sorted batches), capturing head inputs and probs."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []

    def hook(_module, inputs, _output) -> None:  # noqa: ANN001
        pooled = inputs[0]
        captured.append((pooled[:, 0] if pooled.ndim == 3 else pooled).float().cpu())

    handle = head_module(model).register_forward_hook(hook)
    model.eval()
    probs: list[torch.Tensor] = []
    loader, order = inference_loader(data, tokenizer, batch_size)
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            logits = model(**batch).logits
            probs.append(torch.softmax(logits.double(), dim=-1).cpu())
    finally:
        handle.remove()
    return CandidateOutputs(
        features=restore_order(torch.cat(captured).numpy(), order),
        source_probs=restore_order(torch.cat(probs).numpy(), order),
        seconds=time.perf_counter() - start,
    )


def score_outputs(
    outputs: CandidateOutputs, labels: np.ndarray, metrics: list[str], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Every metric on one candidate's outputs; a metric that fails numerically gives NaN."""
    scores, seconds = {}, {}
    for name in metrics:
        start = time.perf_counter()
        try:
            scores[name] = float(
                compute_metric(
                    name,
                    features=outputs.features,
                    source_probs=outputs.source_probs,
                    labels=labels,
                    seed=seed,
                )
            )
        except (np.linalg.LinAlgError, FloatingPointError):
            scores[name] = math.nan
        seconds[name] = time.perf_counter() - start
    return scores, seconds


def auto_batch_size(device: torch.device) -> int:
    """Start large on a GPU (halved on out-of-memory), moderate on CPU where bigger buys nothing."""
    return 256 if device.type == "cuda" else 64


def rank_key(score: CandidateScore, metric: str) -> tuple[bool, float]:
    value = score.scores.get(metric, math.nan)
    return (math.isnan(value), -value if not math.isnan(value) else 0.0)


def score_candidates(
    pool: AdapterPool,
    candidates: list[AdapterRecord],
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    metrics: list[str],
    *,
    max_samples: int | None = 1000,
    max_length: int = 128,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> list[CandidateScore]:
    """Scores of every candidate, best first by the first metric."""
    if not metrics:
        raise ValueError("at least one metric is needed")
    computed = per_candidate_metrics(metrics)  # unknown names fail here, before any work
    sample = scoring_sample(task, max_samples, seed)
    data = EncodedRecords(sample, tokenizer, max_length)
    labels = np.asarray(sample.label)
    device = pick_device()
    results = []
    for record in tqdm(candidates, desc="scoring", disable=not show_progress, leave=False):
        start = time.perf_counter()
        model = load_for_inference(pool.base_model, record.label_names, pool.adapter_dir(record.id))
        model = model.to(device)
        outputs = find_executable_batch_size(
            lambda size: candidate_outputs(model, data, tokenizer, batch_size=size),
            starting_batch_size=batch_size or auto_batch_size(device),
        )()
        scores, metric_seconds = score_outputs(outputs, labels, computed, seed)
        results.append(
            CandidateScore(
                adapter_id=record.id,
                source_task=record.task_name,
                scores=scores,
                seconds=time.perf_counter() - start,
                metric_seconds=metric_seconds,
            )
        )
    if ENSEMBLE in metrics and results:
        combined = ensemble({m: [r.scores[m] for r in results] for m in ENSEMBLE_MEMBERS})
        for result, value in zip(results, combined):
            result.scores[ENSEMBLE] = float(value)
    return sorted(results, key=lambda s: rank_key(s, metrics[0]))
