"""Evaluation of text2text models by generation, and the threshold metrics of generated text.

Decoding is fixed and documented (:data:`DECODING`): greedy search (one beam, no sampling), up
to 32 new tokens, special tokens dropped from the decoded text; ``TrainConfig.max_new_tokens``
and ``num_beams`` (beam search) change it. Never sampling makes every evaluation deterministic,
so the gate compares like with like across attempts and runs.

The scores are the maintained packages' own, not re-implemented: ROUGE-L F-measure from
``rouge-score`` (Google's reference implementation, with its stemmer), chrF from ``sacrebleu``
(corpus level, its defaults: character 6-grams, beta 2), divided by 100 so that every threshold
metric lies in [0, 1] as accuracy does; exact match after whitespace normalisation and case
folding. Where the data gives several references per input (``Records.references``), each metric
scores against all of them: ROUGE-L and exact match take the best, chrF reads them as sacrebleu's
reference streams.
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


def decoding_for(max_new_tokens: int | None, num_beams: int = 1) -> DecodingConfig:
    """:data:`DECODING` with ``max_new_tokens`` where set and ``num_beams``
    (``TrainConfig.max_new_tokens`` / ``num_beams``)."""
    decoding = DECODING if max_new_tokens is None else replace(DECODING,
                                                               max_new_tokens=max_new_tokens)
    return decoding if num_beams == 1 else replace(decoding, num_beams=num_beams)


# One reference per prediction, or every acceptable one (a table-to-text input has several).
References = list[str] | list[list[str]]


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _as_lists(references: References) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def exact_match(references: References, predictions: list[str]) -> float:
    """Share of predictions equal to one of their references (whitespace-normalised,
    case-folded)."""
    if not references:
        return 0.0
    return float(np.mean([any(_normalise(r) == _normalise(p) for r in refs)
                          for refs, p in zip(_as_lists(references), predictions, strict=True)]))


def rouge_l(references: References, predictions: list[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, stemmed); against several references, the best
    (rouge-score's ``score_multi``, as the E2E and WebNLG evaluations take the maximum)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values = [scorer.score_multi(refs, p)["rougeL"].fmeasure
              for refs, p in zip(_as_lists(references), predictions, strict=True)]
    return float(np.mean(values)) if values else 0.0


def chrf(references: References, predictions: list[str]) -> float:
    """Corpus chrF (sacrebleu) / 100; several references per prediction are sacrebleu's
    reference streams (padded with None where an input has fewer)."""
    from sacrebleu.metrics import CHRF

    lists = _as_lists(references)
    width = max((len(refs) for refs in lists), default=1)
    streams = [[refs[j] if j < len(refs) else None for refs in lists] for j in range(width)]
    return float(CHRF().corpus_score(predictions, streams).score / 100.0)


TEXT_METRICS = {"rouge_l": rouge_l, "exact_match": exact_match, "chrf": chrf}


def text_scores(references: References, predictions: list[str]) -> dict[str, float]:
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


def reference_texts(data: EncodedRecords, tokenizer: PreTrainedTokenizerBase) -> References:
    """The targets as the model is trained on them (tokenised, truncated, decoded again), so that
    truncation and the tokenizer's normalisation (an uncased one lower-cases) do not count
    against the model; every reference of each input, so treated, where the data has them."""
    if data.references is None:
        return tokenizer.batch_decode([f["labels"] for f in data.features],
                                      skip_special_tokens=True)
    flat = [r for refs in data.references for r in refs]
    ids = tokenizer(text_target=flat, truncation=True, max_length=data.max_length)["input_ids"]
    decoded = iter(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return [[next(decoded) for _ in refs] for refs in data.references]


def trivial_baselines(records, tokenizer: PreTrainedTokenizerBase, max_length: int,
                      train_targets: list[str]) -> dict[str, dict[str, float]]:
    """What a model must beat to have learned anything, scored like its generations (same
    references, same tokenizer round trip): ``copy_input`` outputs each input as it is fed to
    the model (table-to-text inputs already hold most content words, so ROUGE-L is far from 0);
    ``most_frequent_target`` outputs the train split's most frequent target for every input
    (ties: the first in train order)."""
    data = EncodedRecords(records, tokenizer, max_length)
    references = reference_texts(data, tokenizer)
    copies = tokenizer.batch_decode([f["input_ids"] for f in data.features],
                                    skip_special_tokens=True)
    counts: dict[str, int] = {}
    for target in train_targets:
        counts[target] = counts.get(target, 0) + 1
    frequent = max(counts, key=counts.__getitem__)
    ids = tokenizer(text_target=frequent, truncation=True, max_length=max_length)["input_ids"]
    frequent = tokenizer.decode(ids, skip_special_tokens=True)
    return {"copy_input": text_scores(references, copies),
            "most_frequent_target": text_scores(references, [frequent] * len(data))}


def sample_outputs(model: torch.nn.Module, records, tokenizer: PreTrainedTokenizerBase, *,
                   n: int = 3, max_length: int = 128,
                   decoding: DecodingConfig = DECODING) -> list[dict]:
    """The model's outputs for the first ``n`` examples of ``records`` beside their inputs and
    references: what a person reads to see whether it learned (the scores say how much)."""
    head = records.take(range(min(n, len(records))))
    data = EncodedRecords(head, tokenizer, max_length)
    outputs = generate_texts(model, data, tokenizer, decoding=decoding)
    references = head.references or [[t] for t in head.target]
    return [{"input": text, "output": output, "references": list(refs)}
            for text, output, refs in zip(head.text, outputs, references, strict=True)]
