"""Prepare task records once (tokenise), batch them.

Text batches are padded dynamically; inference batches are sorted by length (less padding, same
results); training batches are shuffled with a seeded generator. Images are opened and run
through the image processor when a batch asks for them (as ``datasets``' ``set_transform``
does), so a task holds paths, not every image's pixel tensor. What an example becomes follows
its columns: text (+ pair) and a label (classification), text and target token ids
(``labels``, text2text), or ``pixel_values`` and a label (images).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, PreTrainedTokenizerBase

from ..tasks import Records


class EncodedRecords(Dataset):
    """Model inputs of every example (token ids without padding, or pixel values) and its
    ``labels``: the class, or the target's token ids (text2text). ``processor`` is the tokenizer,
    or the image processor for image records: each image is opened and processed on access
    (pixel values of a 224 x 224 RGB image take 0.6 MB: a few thousand of them held at once
    would not fit in memory)."""

    inputs: Literal["classification", "text2text", "image"]

    def __init__(self, records: Records, processor, max_length: int) -> None:
        if records.image is not None:
            self.inputs = "image"
            self.features = [{"image": item, "labels": int(label)}
                             for item, label in zip(records.image, records.label, strict=True)]
            self.lengths = np.zeros(len(self.features), dtype=int)
            self.processor = processor
            return
        # encoder-decoder models take no token types (T5 and BART have none)
        types = {"return_token_type_ids": False} if records.target is not None else {}
        encoded = processor(
            records.text,
            records.text_pair,
            truncation=True,
            max_length=max_length,
            padding=False,
            **types,
        )
        self.references = None
        self.max_length = max_length
        if records.target is not None:
            self.inputs = "text2text"
            self.references = records.references
            targets = processor(text_target=records.target, truncation=True,
                                max_length=max_length, padding=False)["input_ids"]
        else:
            self.inputs = "classification"
            targets = [int(label) for label in records.label]
        self.features = [
            {key: encoded[key][i] for key in encoded.keys()} | {"labels": targets[i]}
            for i in range(len(records))
        ]
        self.lengths = np.array([len(f["input_ids"]) for f in self.features])

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        feature = self.features[index]
        if self.inputs != "image":
            return feature
        from ..tasks.images import open_image

        pixels = self.processor(images=[open_image(feature["image"])],
                                return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "labels": feature["labels"]}


class _Ordered(Dataset):
    def __init__(self, base: EncodedRecords, order: np.ndarray) -> None:
        self.base, self.order = base, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict:
        return self.base[int(self.order[index])]


def collator(data: EncodedRecords, processor) -> Callable[[list[dict]], dict]:
    """How ``data``'s examples become a batch: stacked pixel values; target ids padded with
    -100 (ignored by the loss; the model shifts them into its decoder inputs); padded ids."""
    if data.inputs == "image":
        return default_collate
    if data.inputs == "text2text":
        return DataCollatorForSeq2Seq(processor, label_pad_token_id=-100)
    return DataCollatorWithPadding(processor)


def inference_loader(
    data: EncodedRecords, tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> tuple[DataLoader, np.ndarray]:
    """Length-sorted loader and the order used: ``outputs[argsort(order)]`` restores input order."""
    order = np.argsort(-data.lengths, kind="stable")
    loader = DataLoader(
        _Ordered(data, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collator(data, tokenizer),
    )
    return loader, order


def train_loader(
    data: EncodedRecords, tokenizer: PreTrainedTokenizerBase, batch_size: int, seed: int
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collator(data, tokenizer),
    )


def restore_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored
