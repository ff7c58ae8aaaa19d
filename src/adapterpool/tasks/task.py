"""The Task: a named text-classification problem with train / validation / test splits.

Every source (local folder, Hugging Face dataset, builtin offline data) ends in :func:`build_task`,
so validation, carving of a missing validation split and subsampling happen in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import TaskDataError

TaskKind = Literal["single", "pair"]
SPLITS = ("train", "validation", "test")


@dataclass
class Records:
    """Column-oriented examples of one split: texts, optional second texts, integer labels."""

    text: list[str]
    label: list[int]
    text_pair: list[str] | None = None

    def __len__(self) -> int:
        return len(self.label)

    def take(self, indices: Sequence[int] | np.ndarray) -> Records:
        idx = [int(i) for i in indices]
        return Records(
            text=[self.text[i] for i in idx],
            label=[self.label[i] for i in idx],
            text_pair=None if self.text_pair is None else [self.text_pair[i] for i in idx],
        )


@dataclass
class Task:
    """A validated classification task; labels are 0..C-1 indexing ``label_names``."""

    name: str
    kind: TaskKind
    label_names: tuple[str, ...]
    train: Records
    validation: Records
    test: Records | None = None
    source: str = ""
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Records | None:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def describe(self) -> dict:
        """The task block of report.json."""
        return {
            "name": self.name,
            "kind": self.kind,
            "label_names": list(self.label_names),
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "n_test": 0 if self.test is None else len(self.test),
        }


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, carved) with about ``fraction`` of each class carved out, seeded.

    Classes with a single example stay in ``kept``; every class with >= 2 examples gives at least
    one to ``carved`` so that a carved validation split sees every class.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    kept, carved = [], []
    for cls in np.unique(labels_arr):
        members = np.flatnonzero(labels_arr == cls)
        rng.shuffle(members)
        n_carve = 0 if len(members) < 2 else max(1, int(round(fraction * len(members))))
        n_carve = min(n_carve, len(members) - 1) if len(members) >= 2 else 0
        carved.append(members[:n_carve])
        kept.append(members[n_carve:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def stratified_subsample(labels: Sequence[int], max_n: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly ``min(max_n, n)`` examples keeping class proportions, seeded.

    Per-class quotas follow the largest-remainder rule, so rounding never loses an example.
    """
    n = len(labels)
    if max_n <= 0:
        raise ValueError(f"max_n must be positive, got {max_n}")
    if n <= max_n:
        return np.arange(n)
    labels_arr = np.asarray(labels)
    classes, counts = np.unique(labels_arr, return_counts=True)
    exact = counts * max_n / n
    quotas = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - quotas), kind="stable")
    quotas[remainder_order[: max_n - quotas.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels_arr == cls), quota, replace=False)
        for cls, quota in zip(classes, quotas, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _validate_records(records: Records, where: str, kind: TaskKind, num_labels: int) -> None:
    if len(records.text) != len(records.label):
        raise TaskDataError(f"{where}: {len(records.text)} texts but {len(records.label)} labels")
    if kind == "pair":
        if records.text_pair is None:
            raise TaskDataError(
                f"{where}: a text-pair task needs a second text field ('text_pair')"
            )
        if len(records.text_pair) != len(records.text):
            raise TaskDataError(f"{where}: 'text_pair' and 'text' have different lengths")
    for field_name, column in (("text", records.text), ("text_pair", records.text_pair or [])):
        for i, value in enumerate(column):
            if not isinstance(value, str) or not value.strip():
                raise TaskDataError(
                    f"{where}: row {i} has an empty or non-text '{field_name}' ({value!r}); "
                    "drop or fill such rows"
                )
    for i, label in enumerate(records.label):
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise TaskDataError(f"{where}: row {i} has label {label!r}; labels must be integers")
        if not 0 <= label < num_labels:
            raise TaskDataError(
                f"{where}: row {i} has label {label}, outside the {num_labels} label names "
                f"(valid: 0..{num_labels - 1}); fix the data or the label names in meta.json"
            )


def build_task(
    name: str,
    kind: TaskKind,
    label_names: Sequence[str],
    train: Records,
    validation: Records | None = None,
    test: Records | None = None,
    *,
    source: str = "",
    seed: int = 0,
    validation_fraction: float = 0.1,
    max_train: int | None = None,
    max_eval: int | None = None,
) -> Task:
    """Validate the splits, carve a missing validation split from train, subsample; all seeded."""
    label_names = tuple(str(n) for n in label_names)
    if kind not in ("single", "pair"):
        raise TaskDataError(f"task {name!r}: kind must be 'single' or 'pair', got {kind!r}")
    if len(label_names) < 2:
        raise TaskDataError(
            f"task {name!r}: needs at least two label names, got {list(label_names)}"
        )
    if len(set(label_names)) != len(label_names):
        raise TaskDataError(f"task {name!r}: duplicate label names {list(label_names)}")
    notes: list[str] = []
    for split_name, recs in (("train", train), ("validation", validation), ("test", test)):
        if recs is not None:
            _validate_records(recs, f"task {name!r}, split {split_name!r}", kind, len(label_names))
    if len(train) == 0:
        raise TaskDataError(f"task {name!r}: the train split is empty")
    if validation is None or len(validation) == 0:
        kept, carved = stratified_split(train.label, validation_fraction, seed)
        train, validation = train.take(kept), train.take(carved)
        notes.append(
            f"validation carved from train ({validation_fraction:.0%}, stratified, seed {seed})"
        )
    if len(set(train.label)) < 2:
        raise TaskDataError(
            f"task {name!r}: the train split has a single class "
            f"({label_names[train.label[0]]!r}); a classifier needs at least two"
        )
    if max_train is not None and len(train) > max_train:
        train = train.take(stratified_subsample(train.label, max_train, seed))
        notes.append(f"train subsampled to {len(train)} (stratified, seed {seed})")
    if max_eval is not None:
        if len(validation) > max_eval:
            validation = validation.take(stratified_subsample(validation.label, max_eval, seed))
            notes.append(f"validation subsampled to {len(validation)}")
        if test is not None and len(test) > max_eval:
            test = test.take(stratified_subsample(test.label, max_eval, seed))
            notes.append(f"test subsampled to {len(test)}")
    return Task(
        name=name,
        kind=kind,
        label_names=label_names,
        train=train,
        validation=validation,
        test=test if test is not None and len(test) > 0 else None,
        source=source,
        seed=seed,
        notes=notes,
    )

