"""Evaluation of text2text models by generation, and the threshold metrics of generated text.

Decoding is fixed and documented (:data:`DECODING`): greedy search (one beam, no sampling), up
to 32 new tokens, special tokens dropped from the decoded text. Greedy decoding makes every
evaluation deterministic, so the gate compares like with like across attempts and runs.

The scores are the maintained packages' own, not re-implemented: ROUGE-L F-measure from
``rouge-score`` (Google's reference implementation, with its stemmer), chrF from ``sacrebleu``
(corpus level, its defaults: character 6-grams, beta 2), divided by 100 so that every threshold
metric lies in [0, 1] as accuracy does; exact match after whitespace normalisation and case
folding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .encoding import EncodedRecords, inference_loader, restore_order


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class DecodingConfig:
    """How validation and test targets are generated (``model.generate`` keyword arguments)."""

    max_new_tokens: int = field(default=32, metadata=_help("most tokens generated per example"))
    num_beams: int = field(default=1, metadata=_help("1: greedy search"))
    do_sample: bool = field(default=False, metadata=_help("never sample: deterministic"))

    def as_kwargs(self) -> dict:
        return asdict(self)


DECODING = DecodingConfig()


def decoding_for(max_new_tokens: int | None) -> DecodingConfig:
    """:data:`DECODING` with ``max_new_tokens`` (``TrainConfig.max_new_tokens``) where set."""
    return DECODING if max_new_tokens is None else replace(DECODING, max_new_tokens=max_new_tokens)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(references: list[str], predictions: list[str]) -> float:
    """Share of predictions equal to their reference (whitespace-normalised, case-folded)."""
    if not references:
        return 0.0
    return float(np.mean([_normalise(r) == _normalise(p)
                          for r, p in zip(references, predictions, strict=True)]))


def rouge_l(references: list[str], predictions: list[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, stemmed)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values = [scorer.score(r, p)["rougeL"].fmeasure
              for r, p in zip(references, predictions, strict=True)]
    return float(np.mean(values)) if values else 0.0


def chrf(references: list[str], predictions: list[str]) -> float:
    """Corpus chrF (sacrebleu) / 100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(predictions, [references]).score / 100.0)


TEXT_METRICS = {"rouge_l": rouge_l, "exact_match": exact_match, "chrf": chrf}


def text_scores(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Every text2text threshold metric (:data:`TEXT_METRICS`) of ``predictions``."""
    return {name: fn(references, predictions) for name, fn in TEXT_METRICS.items()}


@torch.inference_mode()
def generate_texts(model: torch.nn.Module, data: EncodedRecords,
                   tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 64,
                   decoding: DecodingConfig = DECODING) -> list[str]:
    """The model's decoded outputs for ``data``'s inputs, in input order."""
    loader, order = inference_loader(data, tokenizer, batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    for batch in loader:
        ids = model.generate(input_ids=batch["input_ids"].to(device),
                             attention_mask=batch["attention_mask"].to(device),
                             **decoding.as_kwargs())
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
    model.train(was_training)
    return list(restore_order(np.array(texts, dtype=object), order))


def reference_texts(data: EncodedRecords, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The targets as the model is trained on them (tokenised, truncated, decoded again), so that
    truncation does not count against the model."""
    return tokenizer.batch_decode([f["labels"] for f in data.features], skip_special_tokens=True)
