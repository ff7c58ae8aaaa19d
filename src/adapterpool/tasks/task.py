"""The Task: a named problem (text or image classification, text-to-text) with train /
validation / test splits; its kind (:mod:`adapterpool.task_kinds`) says which columns it has.

Every source (local folder, Hugging Face dataset, builtin offline data) ends in :func:`build_task`,
so validation, carving of a missing validation split and subsampling happen in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import TaskDataError
from ..task_kinds import KIND_NAMES, get_kind

TaskKind = Literal["single", "pair", "text2text", "image"]
SPLITS = ("train", "validation", "test")


@dataclass
class Records:
    """Column-oriented examples of one split: texts, optional second texts, integer labels;
    target texts (``text2text``, whose ``label`` is empty); images (``image``, whose ``text`` is
    empty): file paths, or PIL images from a ``datasets`` image column. ``references``
    (text2text, optional): every acceptable output of each input, ``target`` among them, which
    evaluation scores against (a table-to-text input has several human references)."""

    text: list[str]
    label: list[int]
    text_pair: list[str] | None = None
    target: list[str] | None = None
    image: list | None = None
    references: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.image if self.image is not None else self.text)

    def take(self, indices: Sequence[int] | np.ndarray) -> Records:
        idx = [int(i) for i in indices]

        def pick(column: list | None) -> list | None:  # an empty column is one the kind lacks
            return column if not column else [column[i] for i in idx]

        return Records(text=pick(self.text), label=pick(self.label), text_pair=pick(self.text_pair),
                       target=pick(self.target), image=pick(self.image),
                       references=pick(self.references))


@dataclass
class Task:
    """A validated task; labels are 0..C-1 indexing ``label_names`` (none for ``text2text``)."""

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


def split_records(records: Records, fraction: float, seed: int) -> tuple[Records, Records]:
    """(kept, carved): stratified by class where examples have labels, else a seeded uniform
    draw of ``fraction`` (at least one example, never all)."""
    if records.label:
        kept, carved = stratified_split(records.label, fraction, seed)
    else:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(records))
        n_carve = min(max(1, int(round(fraction * len(records)))), len(records) - 1)
        kept, carved = np.sort(order[n_carve:]), np.sort(order[:n_carve])
    return records.take(kept), records.take(carved)


def subsample_records(records: Records, max_n: int, seed: int) -> Records:
    """``min(max_n, n)`` examples, seeded: class proportions kept where there are labels."""
    if len(records) <= max_n:
        return records
    if records.label:
        return records.take(stratified_subsample(records.label, max_n, seed))
    if max_n <= 0:
        raise ValueError(f"max_n must be positive, got {max_n}")
    rng = np.random.default_rng(seed)
    return records.take(np.sort(rng.choice(len(records), size=max_n, replace=False)))


def _check_texts(column: list | None, field_name: str, where: str) -> None:
    for i, value in enumerate(column or []):
        if not isinstance(value, str) or not value.strip():
            raise TaskDataError(
                f"{where}: row {i} has an empty or non-text '{field_name}' ({value!r}); "
                "drop or fill such rows"
            )


def _validate_records(records: Records, where: str, kind: TaskKind, num_labels: int) -> None:
    spec = get_kind(kind)
    n = len(records)
    main = "image" if kind == "image" else "text"
    needed = {"label": spec.labelled, "text_pair": kind == "pair", "target": kind == "text2text"}
    columns = {name: getattr(records, name) if wanted else None
               for name, wanted in needed.items()}
    columns["text"] = records.text if kind != "image" else None
    for field_name, wanted in needed.items():
        column = columns[field_name]
        if not wanted:
            continue
        if column is None:
            raise TaskDataError(f"{where}: a {kind} task needs a {field_name!r} field")
        if len(column) != n:
            raise TaskDataError(
                f"{where}: {n} values of '{main}' but {len(column)} of {field_name!r}")
    for field_name in ("text", "text_pair", "target"):
        _check_texts(columns[field_name], field_name, where)
    if kind == "text2text" and records.references is not None:
        if len(records.references) != n:
            raise TaskDataError(f"{where}: {n} values of 'text' but {len(records.references)} "
                                "of 'references'")
        for i, refs in enumerate(records.references):
            if not refs or any(not isinstance(r, str) or not r.strip() for r in refs):
                raise TaskDataError(f"{where}: row {i} has an empty 'references' list or an "
                                    f"empty or non-text reference ({refs!r})")
    if kind == "image":
        from .images import check_images

        check_images(records.image, where)
    if not spec.labelled:
        return
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
    if kind not in KIND_NAMES:
        raise TaskDataError(
            f"task {name!r}: kind must be one of {', '.join(KIND_NAMES)}, got {kind!r}")
    labelled = get_kind(kind).labelled
    if not labelled and label_names:
        raise TaskDataError(f"task {name!r}: a {kind} task has no label names, got "
                            f"{list(label_names)}")
    if labelled and len(label_names) < 2:
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
    how = "stratified" if labelled else "uniform"
    if validation is None or len(validation) == 0:
        if len(train) < 2:
            raise TaskDataError(f"task {name!r}: one train example and no validation split")
        train, validation = split_records(train, validation_fraction, seed)
        notes.append(
            f"validation carved from train ({validation_fraction:.0%}, {how}, seed {seed})"
        )
    if labelled and len(set(train.label)) < 2:
        raise TaskDataError(
            f"task {name!r}: the train split has a single class "
            f"({label_names[train.label[0]]!r}); a classifier needs at least two"
        )
    if max_train is not None and len(train) > max_train:
        train = subsample_records(train, max_train, seed)
        notes.append(f"train subsampled to {len(train)} ({how}, seed {seed})")
    if max_eval is not None:
        if len(validation) > max_eval:
            validation = subsample_records(validation, max_eval, seed)
            notes.append(f"validation subsampled to {len(validation)}")
        if test is not None and len(test) > max_eval:
            test = subsample_records(test, max_eval, seed)
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

