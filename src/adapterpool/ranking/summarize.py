"""Task summaries: a few KB per adapter that say what texts it was trained on, so that a target
can be compared with every adapter of a large pool without running any adapter (stage 1).

Following Vu et al. 2020 ("Exploring and Predicting Transferability across NLP Tasks", TextEmb),
a task is described by the mean of its texts' embeddings from the *base* model: tasks whose means
are close tend to transfer to each other. The embedding of a text is what sentence-transformers
computes for MiniLM: the attention-masked mean of the last hidden state, L2-normalised. A summary
keeps that mean and the per-dimension variance (the diagonal of the covariance; a full covariance
at 384 dims would be 576 KB), 2 x D float32 values: 3 KB for MiniLM.

Two sources of summaries:

- ``"texts"``: the task's own training texts (a seeded sample), written when an adapter is
  contributed. This is the summary stage 1 is designed for.
- ``"probe"``: for adapters that entered the pool without one (``pool reindex``), whose training
  texts are not known. A fixed, packaged probe set (``data/probe_texts.txt``: 132 short texts of
  22 common genres, written for this project) is embedded with the base model, and each probe
  text is weighted by how far the adapter moves its embedding (the distance between the unit
  sentence embeddings with and without the adapter). LoRA's low-rank updates respond most to the
  kind of text they were trained on, so the weighted mean leans towards the source task's texts,
  and it stays in the base model's space, comparable with a target's summary. It is a proxy,
  chosen by measurement: on the 21-adapter realistic pool (6 targets), its similarities agree
  with the texts-based ones with Spearman 0.26-0.67 per target (mean 0.42), better than
  weighting by the head's confidence (-0.01-0.41) or taking the adapter's own embeddings (-0.22-
  0.41). ``source`` says which kind a summary is, and the ranking reports it.

The summary itself (format, comparison) is :mod:`adapterpool.ranking.task_summary`.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..errors import UsageError
from ..tasks import Records
from ..training.encoding import EncodedRecords, inference_loader, restore_order
from .task_summary import TaskSummary, summarize

DEFAULT_SUMMARY_TEXTS = 256
DEFAULT_SUMMARY_LENGTH = 128


# -- embedding texts ------------------------------------------------------------------------------
def sample_records(records: Records, n: int, seed: int) -> Records:
    """A seeded uniform sample of ``n`` examples (all when fewer): labels play no part."""
    if n < 1:
        raise UsageError(f"a task summary needs at least 1 text, got n={n}")
    if len(records) <= n:
        return records
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return records.take(chosen)


@torch.inference_mode()
def encode(
    model: torch.nn.Module, records: Records, tokenizer: PreTrainedTokenizerBase, *,
    max_length: int = DEFAULT_SUMMARY_LENGTH, batch_size: int = 64,
) -> np.ndarray:
    """Sentence embeddings (mean-pooled last hidden state, L2-normalised; (n, D) float32, input
    order) of ``records`` from ``model``: a bare encoder, or a classifier with an adapter."""
    device = next(model.parameters()).device
    data = EncodedRecords(records, tokenizer, max_length)
    loader, order = inference_loader(data, tokenizer, batch_size)
    model.eval()
    pooled = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1] if out.hidden_states is not None else out.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled.append(torch.nn.functional.normalize(mean.float(), dim=-1).cpu())
    return restore_order(torch.cat(pooled).numpy(), order)


def load_encoder(base_model: str | None) -> torch.nn.Module:
    """The bare base model (no head), on the scoring device."""
    from transformers import AutoModel

    from ..models.base_model import resolve_base_model
    from ..models.build import pick_device

    return AutoModel.from_pretrained(resolve_base_model(base_model)).to(pick_device()).eval()


def records_summary(
    records: Records, encoder: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *,
    n_texts: int = DEFAULT_SUMMARY_TEXTS, seed: int = 0,
    max_length: int = DEFAULT_SUMMARY_LENGTH,
) -> TaskSummary:
    """Summary of a seeded sample of ``records``' texts, embedded by the base ``encoder``."""
    sample = sample_records(records, n_texts, seed)
    embeddings = encode(encoder, sample, tokenizer, max_length=max_length)
    return summarize(embeddings, source="texts", seed=seed, max_length=max_length)


# -- summaries of adapters without their texts -----------------------------------------------
def probe_texts() -> list[str]:
    """The packaged probe set (comment lines dropped), in file order."""
    text = resources.files("adapterpool").joinpath("data/probe_texts.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def probe_records() -> Records:
    texts = probe_texts()
    return Records(text=texts, label=[0] * len(texts))


def embedding_shift(base_embeddings: np.ndarray, adapter_embeddings: np.ndarray) -> np.ndarray:
    """How far the adapter moves each text's unit embedding (0 to 2)."""
    return np.linalg.norm(np.asarray(adapter_embeddings, dtype=np.float64)
                          - np.asarray(base_embeddings, dtype=np.float64), axis=1)


def probe_summary(
    base_embeddings: np.ndarray, adapter_embeddings: np.ndarray, *, max_length: int,
) -> TaskSummary:
    """The probe set's base-model embeddings, each weighted by how far the adapter moves it (see
    the module docstring); an adapter that moves nothing gives the plain mean."""
    weights = embedding_shift(base_embeddings, adapter_embeddings)
    if weights.sum() <= 1e-12:
        weights = np.ones_like(weights)
    return summarize(base_embeddings, source="probe", seed=0, max_length=max_length,
                     weights=weights)


