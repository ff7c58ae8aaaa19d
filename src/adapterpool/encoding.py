"""Tokenise task records once, batch them with dynamic padding.

Inference batches are sorted by length (less padding, same results); training batches are
shuffled with a seeded generator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .tasks import Records


class EncodedRecords(Dataset):
    """Token ids of every example, without padding, plus its label."""

    def __init__(
        self, records: Records, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> None:
        encoded = tokenizer(
            records.text,
            records.text_pair,
            truncation=True,
            max_length=max_length,
            padding=False,
        )
        self.features = [
            {key: encoded[key][i] for key in encoded.keys()} | {"labels": int(records.label[i])}
            for i in range(len(records))
        ]
        self.lengths = np.array([len(f["input_ids"]) for f in self.features])

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]


class _Ordered(Dataset):
    def __init__(self, base: EncodedRecords, order: np.ndarray) -> None:
        self.base, self.order = base, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict:
        return self.base[int(self.order[index])]


def inference_loader(
    data: EncodedRecords, tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> tuple[DataLoader, np.ndarray]:
    """Length-sorted loader and the order used: ``outputs[argsort(order)]`` restores input order."""
    order = np.argsort(-data.lengths, kind="stable")
    loader = DataLoader(
        _Ordered(data, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=DataCollatorWithPadding(tokenizer),
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
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


def restore_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored
