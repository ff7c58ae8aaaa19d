"""Transferability scoring: one forward pass per candidate adapter, every chosen metric from it.

The pass yields the pooled features that the candidate's head reads (the first token or pooler
output of an encoder, the last non-pad token of a decoder, as transformers picks it), its
source-head probabilities and their argmax — the inputs of all metrics in
:mod:`adapterpool.metrics`. Image classifiers give the same (their head reads the first token).
A text2text candidate has no source head: its pass is teacher-forced on the target texts and gives
each example's mean token log-likelihood (``target-loglik``) and the mean-pooled encoder states.

The base model is built once per ranking (:class:`SharedBase`): each candidate's adapter is merged
into it for its pass and taken out again, since rebuilding the base for every candidate costs
more than the adapter itself. A candidate that cannot be loaded, run or scored gets NaN scores, an
``error`` and a warning on the ``adapterpool`` logger, and is ranked last; the ranking goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import torch
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..errors import describe_error
from ..metrics import (
    ENSEMBLE,
    ENSEMBLE_MEMBERS,
    check_metric_kind,
    compute_metric,
    ensemble,
    get_metric,
    per_candidate_metrics,
)
from ..metrics.validation import encode_labels
from ..models.build import base_classifier, fit_tokenizer, pick_device
from ..models.heads import head_module, pooled_head_input
from ..pool import AdapterPool, AdapterRecord
from ..task_kinds import DEFAULT_SCORING_SAMPLES, get_kind
from ..tasks import Records, Task
from ..tasks.task import subsample_records
from ..training.encoding import EncodedRecords, inference_loader, restore_order
from .shared_base import CandidateModels

logger = logging.getLogger(__name__)  # a child of "adapterpool": configure that one
T = TypeVar("T")


@dataclass
class CandidateOutputs:
    features: np.ndarray  # (n, d) float32: the input of the classification head
    source_probs: np.ndarray  # (n, c_source) float64; (n, 0) for text2text (no source classes)
    seconds: float
    layer_features: np.ndarray | None = None  # (n, d) float32, with layer_mean=True
    target_loglik: np.ndarray | None = None  # (n,) float64: text2text, mean token log-likelihood
    target_features: np.ndarray | None = None  # (n, d) float32: text2text, targets' encoder states


def layer_mean_features(hidden_states: tuple[torch.Tensor, ...],
                        attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Every transformer layer's output mean-pooled over the real tokens, then averaged over the
    layers: (batch, hidden). TransformerRanker's "layer mean" (Garbas et al. 2024), which lifts
    LogME's agreement with fine-tuned accuracy over the last layer alone. The embedding layer's
    output (``hidden_states[0]``) is left out: an adapter on the attention does not change it, so
    it would only dilute the differences between candidates. Without a mask (image patches)
    every position counts.
    """
    if attention_mask is None:
        attention_mask = hidden_states[-1].new_ones(hidden_states[-1].shape[:2])
    mask = attention_mask.unsqueeze(-1).float()
    extra = hidden_states[-1].shape[1] - mask.shape[1]
    if extra > 0:  # prompt learning: its virtual tokens come first, and every one is attended
        mask = torch.cat([mask.new_ones(mask.shape[0], extra, 1), mask], dim=1)
    count = mask.sum(dim=1).clamp(min=1.0)
    pooled = [(layer.float() * mask).sum(dim=1) / count for layer in hidden_states[1:]]
    return torch.stack(pooled).mean(dim=0)


@dataclass
class CandidateScore:
    adapter_id: str
    source_task: str
    scores: dict[str, float]
    seconds: float  # model ready + forward pass + metrics
    metric_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why some or all scores are NaN; None when all are fine
    load_seconds: float = 0.0  # getting the model ready (and putting the shared base back)


def scoring_sample(task: Task, max_samples: int | None, seed: int) -> Records:
    """The target examples that every candidate sees: a seeded sample of train (stratified where
    there are labels)."""
    if max_samples is None or len(task.train) <= max_samples:
        return task.train
    return subsample_records(task.train, max_samples, seed)


def _scoring_data(task: Task, tokenizer: PreTrainedTokenizerBase, max_samples: int | None,
                  max_length: int, seed: int) -> tuple[EncodedRecords, np.ndarray]:
    """The encoded scoring sample and its labels: the same for every candidate and for the bare
    base model's reference, so their scores compare."""
    sample = scoring_sample(task, max_samples, seed)
    labels = np.asarray(sample.label)
    if get_kind(task.kind).labelled:
        encode_labels(labels)  # a sample no metric can use (one class) fails here
    return EncodedRecords(sample, tokenizer, max_length), labels


@torch.inference_mode()
def candidate_outputs(
    model: torch.nn.Module,
    data: EncodedRecords,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
    layer_mean: bool = False,
) -> CandidateOutputs:
    """Run ``model`` over ``data`` (length-sorted batches), capturing head inputs and probs;
    with ``layer_mean`` also :func:`layer_mean_features` from the same pass."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    given: dict[str, torch.Tensor | None] = {}  # the ids the classifier itself received

    def see_ids(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        given["input_ids"] = kwargs.get("input_ids", args[0] if args else None)

    def hook(_module: torch.nn.Module, inputs: tuple, _output: object) -> None:
        pooled = pooled_head_input(model, inputs[0], given.get("input_ids"))
        captured.append(pooled.float().cpu())

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    handles = [inner.register_forward_pre_hook(see_ids, with_kwargs=True),
               head_module(model).register_forward_hook(hook)]
    model.eval()
    probs: list[torch.Tensor] = []
    layers: list[torch.Tensor] = []
    loader, order = inference_loader(data, fit_tokenizer(tokenizer, model), batch_size)
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            out = model(**batch, output_hidden_states=layer_mean)
            probs.append(torch.softmax(out.logits.double(), dim=-1).cpu())
            if layer_mean:
                layers.append(layer_mean_features(out.hidden_states,
                                                  batch.get("attention_mask")).cpu())
    finally:
        for handle in handles:
            handle.remove()
    return CandidateOutputs(
        features=restore_order(torch.cat(captured).numpy(), order),
        source_probs=restore_order(torch.cat(probs).numpy(), order),
        seconds=time.perf_counter() - start,
        layer_features=restore_order(torch.cat(layers).numpy(), order) if layer_mean else None,
    )


@torch.inference_mode()
def seq2seq_outputs(
    model: torch.nn.Module,
    data: EncodedRecords,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 64,
    target_features: bool = False,
) -> CandidateOutputs:
    """A text2text candidate's teacher-forced pass over the target sample: per example the mean
    log-probability of its target tokens (the negative of its token-averaged loss) and the
    attention-masked mean of the encoder's last states (the feature); with ``target_features``
    also the same mean for the target text run through the encoder (what ``logme-targets``
    regresses on: a second encoder pass, so only when that metric is asked for)."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    model.eval()
    loader, order = inference_loader(data, tokenizer, batch_size)
    features, loglik, targets = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        labels = batch["labels"]
        mask = labels != -100
        token_logp = torch.log_softmax(out.logits.double(), dim=-1).gather(
            -1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        loglik.append(((token_logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)).cpu())
        features.append(_masked_mean(out.encoder_last_hidden_state, batch["attention_mask"]))
        if target_features:
            encoded = model.get_encoder()(input_ids=labels.clamp(min=0),
                                          attention_mask=mask.long())
            targets.append(_masked_mean(encoded.last_hidden_state, mask))
    pooled = restore_order(torch.cat(features).numpy(), order)
    return CandidateOutputs(
        features=pooled,
        source_probs=np.zeros((len(pooled), 0)),
        seconds=time.perf_counter() - start,
        target_loglik=restore_order(torch.cat(loglik).numpy(), order),
        target_features=restore_order(torch.cat(targets).numpy(), order) if targets else None,
    )


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).float()
    return ((states.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)).cpu()


def score_outputs(
    outputs: CandidateOutputs, labels: np.ndarray, metrics: list[str], seed: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Every metric on one candidate's outputs; a metric that fails or is not finite gives NaN."""
    scores, seconds, _ = _score_outputs(outputs, labels, metrics, seed)
    return scores, seconds


def _score_outputs(
    outputs: CandidateOutputs, labels: np.ndarray, metrics: list[str], seed: int
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    scores, seconds, problems = {}, {}, []
    for name in metrics:
        start = time.perf_counter()
        try:
            value = float(
                compute_metric(
                    name,
                    features=outputs.features,
                    source_probs=outputs.source_probs,
                    labels=labels,
                    seed=seed,
                    layer_features=outputs.layer_features,
                    target_loglik=outputs.target_loglik,
                    target_features=outputs.target_features,
                )
            )
            if not math.isfinite(value):
                problems.append(f"{name} is {value}")
                value = math.nan
        except Exception as exc:  # one metric's failure must not end the ranking
            problems.append(f"{name}: {describe_error(exc)}")
            value = math.nan
        scores[name] = value
        seconds[name] = time.perf_counter() - start
    return scores, seconds, problems


def auto_batch_size(device: torch.device) -> int:
    """Start large on a GPU (smaller on out-of-memory), moderate on CPU where bigger buys
    nothing."""
    return 256 if device.type == "cuda" else 64


class BatchSizer:
    """The scoring batch size, found once per ranking and kept for every later candidate.

    accelerate's ``find_executable_batch_size`` empties the device cache and runs a full
    ``gc.collect()`` before every call: measured 0.28 s a candidate on the CPU, 40% of scoring
    five candidates on 16 examples, and on a GPU, where a candidate's pass takes milliseconds,
    most of the ranking. Here the cache is cleared only after an out-of-memory error
    (accelerate's ``should_reduce_batch_size`` says which), and the size shrinks by 0.9 as
    accelerate's does, for this call and every later one."""

    def __init__(self, size: int) -> None:
        self.size = size

    def run(self, function: Callable[[int], T]) -> T:
        """``function(batch_size)``, retried at a smaller size while it runs out of memory."""
        while True:
            try:
                return function(self.size)
            except Exception as exc:
                if self.size <= 1 or not should_reduce_batch_size(exc):
                    raise
                clear_device_cache(garbage_collection=True)
                self.size = max(1, int(self.size * 0.9))


def ranking_warnings(scores: list[CandidateScore]) -> list[str]:
    """One line per candidate with an error: what the ranking's output and report.json show, so
    a NaN in the table always comes with its reason."""
    return [f"adapter {s.adapter_id}: {s.error}" for s in scores if s.error]


def rank_key(score: CandidateScore, metric: str) -> tuple[bool, float]:
    value = score.scores.get(metric, math.nan)
    return (math.isnan(value), -value if not math.isnan(value) else 0.0)


def _with_ensemble(results: list[CandidateScore]) -> None:
    """Add the rank-average ensemble over the candidates that have any member score.

    A member that is NaN counts as that member's worst rank (see ``metrics.ensemble``); a
    candidate without any member score gets NaN and takes no rank, so failures elsewhere do not
    move the others' ensemble values.
    """
    ranked = [r for r in results if any(not math.isnan(r.scores[m]) for m in ENSEMBLE_MEMBERS)]
    for result in results:
        result.scores[ENSEMBLE] = math.nan
    if ranked:
        combined = ensemble({m: [r.scores[m] for r in ranked] for m in ENSEMBLE_MEMBERS})
        for result, value in zip(ranked, combined, strict=True):
            result.scores[ENSEMBLE] = float(value)


def score_candidates(
    pool: AdapterPool,
    candidates: list[AdapterRecord],
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    metrics: list[str],
    *,
    max_samples: int | None = DEFAULT_SCORING_SAMPLES,
    max_length: int = 128,
    batch_size: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
    reuse_base: bool = True,
) -> list[CandidateScore]:
    """Scores of every candidate, best first by the first metric; failed candidates last, NaN.

    ``reuse_base=False`` builds every candidate's model from scratch (slower, same scores).
    """
    if not metrics:
        raise ValueError("at least one metric is needed")
    computed = per_candidate_metrics(metrics)  # unknown names fail here, before any work
    for name in metrics:
        check_metric_kind(name, task.kind)  # and names that do not apply to the task's kind
    needs = {get_metric(name).needs for name in computed}
    data, labels = _scoring_data(task, tokenizer, max_samples, max_length, seed)
    if data.inputs == "text2text":
        outputs_of = partial(seq2seq_outputs, target_features="target_features" in needs)
    else:
        outputs_of = partial(candidate_outputs, layer_mean="layer_features" in needs)
    device = pick_device()
    models = CandidateModels(pool.base_model, device, reuse_base=reuse_base, kind=task.kind)
    sizer = BatchSizer(batch_size or auto_batch_size(device))
    results = []
    for record in tqdm(candidates, desc="scoring", disable=not show_progress, leave=False):
        start = time.perf_counter()
        load_seconds = 0.0
        try:
            model, release = models.open(record, pool.adapter_dir(record.id))
            load_seconds = time.perf_counter() - start
            try:
                outputs = sizer.run(
                    lambda size, model=model: outputs_of(model, data, tokenizer, batch_size=size))
            finally:
                released = time.perf_counter()
                release()
                load_seconds += time.perf_counter() - released
            finite = np.isfinite(outputs.features).all() and np.isfinite(outputs.source_probs).all()
            for extra in (outputs.layer_features, outputs.target_loglik, outputs.target_features):
                if extra is not None:
                    finite = finite and np.isfinite(extra).all()
            if not finite:
                raise FloatingPointError("the forward pass gave NaN or infinite values")
        except Exception as exc:  # one candidate's failure must not end the ranking
            error = describe_error(exc)
            logger.warning("adapter %s not scored, ranked last: %s", record.id, error)
            scores = {name: math.nan for name in computed}
            metric_seconds: dict[str, float] = {}
        else:
            scores, metric_seconds, problems = _score_outputs(outputs, labels, computed, seed)
            error = "; ".join(problems) or None
            if error:
                logger.warning("adapter %s: NaN for %s", record.id, error)
        results.append(
            CandidateScore(
                adapter_id=record.id,
                source_task=record.task_name,
                scores=scores,
                seconds=time.perf_counter() - start,
                metric_seconds=metric_seconds,
                error=error,
                load_seconds=load_seconds,
            )
        )
    if ENSEMBLE in metrics:
        _with_ensemble(results)
    return sorted(results, key=lambda s: rank_key(s, metrics[0]))


# Metrics that read only the features (no source head): the ones a bare base model has too.
FEATURE_NEEDS = ("features", "layer_features")


def reference_scores(
    base_model: str | None,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    metrics: list[str],
    *,
    max_samples: int | None = DEFAULT_SCORING_SAMPLES,
    max_length: int = 128,
    batch_size: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The base model's own score on the target's scoring sample (the same sample, seed and
    metrics as :func:`score_candidates`; no adapter): what a candidate's score is measured
    against. A metric's scale can depend on the target (kNN accuracy on 2 classes vs 77), so
    "is this candidate any good" asks how far it moves the score above the bare base model.
    Metrics that read a source head (LEEP, NCE, ...) have no reference and get NaN."""
    computed = [n for n in per_candidate_metrics(metrics) if get_metric(n).needs in FEATURE_NEEDS]
    data, labels = _scoring_data(task, tokenizer, max_samples, max_length, seed)
    if data.inputs == "text2text":
        return {name: math.nan for name in metrics}
    device = pick_device()
    model = base_classifier(base_model, task.label_names, task.kind).to(device).eval()
    needs_layers = any(get_metric(n).needs == "layer_features" for n in computed)
    outputs = candidate_outputs(model, data, tokenizer, batch_size=batch_size or
                                auto_batch_size(device), layer_mean=needs_layers)
    scores, _, problems = _score_outputs(outputs, labels, computed, seed)
    if problems:
        logger.warning("base model reference: NaN for %s", "; ".join(problems))
    return {name: scores.get(name, math.nan) for name in metrics}
