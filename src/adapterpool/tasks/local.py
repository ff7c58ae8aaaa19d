"""Tasks from a local folder: ``train``/``validation``/``test`` as JSONL, CSV or Parquet
+ meta.json; for ``image`` tasks also ``train/``/``validation/``/``test/`` class folders.

This is the layout of ``../shared/bench-data`` and what users export from their own pipelines.
meta.json's ``task_type`` names the kind (``single``, ``pair``, ``text2text``, ``image``); without
it a folder with a ``train/`` sub-folder is an image task, else a text-classification one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..task_kinds import get_kind
from .images import read_image_folder
from .task import Records, Task, TaskDataError, build_task

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SPLIT_ALIASES = {
    "train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)
}


def _find_split_file(folder: Path, split: str) -> Path | None:
    found = [
        folder / f"{stem}{suffix}"
        for stem in SPLIT_ALIASES[split]
        for suffix in SUFFIXES
        if (folder / f"{stem}{suffix}").is_file()
    ]
    if len(found) > 1:
        raise TaskDataError(
            f"{folder}: several files for split {split!r}: {[p.name for p in found]}"
        )
    return found[0] if found else None


def _find_split_dir(folder: Path, split: str) -> Path | None:
    """An image split's class-folder directory (ImageFolder layout), if there is one."""
    found = [folder / stem for stem in SPLIT_ALIASES[split] if (folder / stem).is_dir()]
    if len(found) > 1:
        raise TaskDataError(
            f"{folder}: several folders for split {split!r}: {[p.name for p in found]}"
        )
    return found[0] if found else None


def _read_table(path: Path) -> pd.DataFrame:
    kind = SUFFIXES[path.suffix]
    try:
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if kind == "csv":
            return pd.read_csv(path, keep_default_na=False)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise TaskDataError(f"{path}: cannot be read as {kind}: {exc}") from exc


def frame_to_records(
    frame: pd.DataFrame,
    where: str,
    *,
    text_field: str,
    label_field: str,
    text_pair_field: str | None,
    label_names: list[str] | None,
    kind: str = "single",
    target_field: str = "target",
    image_field: str = "image",
    root: Path | None = None,
) -> tuple[Records, list[str] | None]:
    """Columns to :class:`Records`; string labels are mapped through ``label_names``.

    Which columns are read follows ``kind``: an image task's ``image`` values are paths relative
    to ``root`` (the task folder) or in-memory images; a text2text task has no labels.
    """
    spec = get_kind(kind)
    flags = {text_field: "--text-field", label_field: "--label-field",
             text_pair_field: "--text-pair-field", target_field: "--target-field",
             image_field: "--image-field"}
    needed = [image_field if kind == "image" else text_field,
              label_field if spec.labelled else None,
              text_pair_field if kind in ("single", "pair") else None,
              target_field if kind == "text2text" else None]
    for field_name in needed:
        if field_name is not None and field_name not in frame.columns:
            raise TaskDataError(
                f"{where}: no column {field_name!r} (columns: {list(frame.columns)}); "
                f"name the right one with {flags[field_name]}"
            )
    if kind == "text2text":
        targets = _texts(frame[target_field])
        return Records(text=_texts(frame[text_field]), label=[], target=targets,
                       references=_references(frame, where, targets)), None
    labels, label_names = _labels(frame, where, label_field, label_names)
    if kind == "image":
        images = [str(root / v) if isinstance(v, str) and root is not None else v
                  for v in frame[image_field].tolist()]
        return Records(text=[], label=labels, image=images), label_names
    texts = _texts(frame[text_field])
    pairs = None if text_pair_field is None else frame[text_pair_field].tolist()
    return Records(text=texts, label=labels, text_pair=pairs), label_names


def _texts(column: pd.Series) -> list:
    return ["" if v is None else v for v in column.tolist()]


REFERENCES_FIELD = "references"


def _references(frame: pd.DataFrame, where: str, targets: list) -> list[list[str]] | None:
    """A text2text split's ``references`` column (every acceptable output of each input, as
    evaluation sets of table-to-text data give them), with each row's ``target`` put first when
    it is not among them; None without the column. A row without references has its target."""
    if REFERENCES_FIELD not in frame.columns:
        return None
    rows = []
    for i, (value, target) in enumerate(zip(frame[REFERENCES_FIELD].tolist(), targets,
                                            strict=True)):
        if value is None or (isinstance(value, float) and value != value):  # missing (NaN)
            value = []
        elif isinstance(value, str):
            value = [value]
        elif not hasattr(value, "__iter__"):
            raise TaskDataError(f"{where}: row {i}: 'references' must be a list of texts, "
                                f"got {type(value).__name__}")
        refs = list(value)
        rows.append(refs if target in refs else [target, *refs])
    return rows


def _labels(frame: pd.DataFrame, where: str, label_field: str,
            label_names: list[str] | None) -> tuple[list[int], list[str] | None]:
    """Integer labels of ``label_field``; string labels mapped through ``label_names``."""
    if frame[label_field].isna().any():
        row = int(frame[label_field].isna().to_numpy().nonzero()[0][0])
        raise TaskDataError(f"{where}: row {row} has no value in label column {label_field!r}")
    raw_labels = frame[label_field].tolist()
    if all(isinstance(v, str) for v in raw_labels):
        if label_names is None:
            label_names = sorted(set(raw_labels))
        index = {name: i for i, name in enumerate(label_names)}
        unknown = sorted(set(raw_labels) - set(index))
        if unknown:
            raise TaskDataError(
                f"{where}: labels {unknown[:5]} are not among the label names {label_names}"
            )
        labels = [index[v] for v in raw_labels]
    else:
        try:
            labels = [int(v) for v in raw_labels]
        except (TypeError, ValueError) as exc:
            raise TaskDataError(
                f"{where}: label column {label_field!r} is not integer: {exc}"
            ) from exc
        if any(int(v) != v for v in raw_labels if isinstance(v, float)):
            raise TaskDataError(f"{where}: label column {label_field!r} has non-integer numbers")
    return labels, label_names


def load_local(
    folder: str | Path,
    *,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    target_field: str = "target",
    image_field: str = "image",
) -> Task:
    """Load a task folder; meta.json (optional) gives name, task_type and label_names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskDataError(
            f"task folder {str(folder)!r} does not exist; a task is a folder with "
            "train/validation/test files, 'hf:NAME[:CONFIG]' or 'builtin:NAME' "
            "(see `adapterpool tasks`)"
        )
    meta: dict = {}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{meta_path}: invalid JSON: {exc}") from exc
    label_names = meta.get("label_names")
    kind = meta.get("task_type", meta.get("kind"))
    if kind is None:
        image_folders = (folder / "train").is_dir() and _find_split_file(folder, "train") is None
        kind = "image" if image_folders else "pair" if text_pair_field else "single"
    try:
        spec = get_kind(kind)
    except TaskDataError as exc:
        raise TaskDataError(f"{meta_path}: 'task_type': {exc}") from exc
    if kind == "pair" and text_pair_field is None:
        text_pair_field = "text_pair"
    splits: dict[str, Records] = {}
    for split in ("train", "validation", "test"):
        path = _find_split_file(folder, split)
        # a split file wins: its images may well live in a folder named like the split
        split_dir = _find_split_dir(folder, split) if kind == "image" and path is None else None
        if split_dir is not None:
            splits[split], label_names = read_image_folder(split_dir, label_names)
            continue
        if path is None:
            continue
        records, label_names = frame_to_records(
            _read_table(path),
            str(path),
            text_field=text_field,
            label_field=label_field,
            text_pair_field=text_pair_field,
            label_names=label_names,
            kind=kind,
            target_field=target_field,
            image_field=image_field,
            root=folder,
        )
        splits[split] = records
    if "train" not in splits:
        raise TaskDataError(
            f"{folder}: no train file (expected train.jsonl, train.csv or train.parquet"
            + (", or a train/ folder of class sub-folders)" if kind == "image" else ")")
        )
    if not spec.labelled:
        label_names = []
    elif label_names is None:
        n_classes = max(max(r.label) for r in splits.values()) + 1
        label_names = [str(i) for i in range(n_classes)]
    return build_task(
        meta.get("name", folder.name),
        kind,
        label_names,
        splits["train"],
        splits.get("validation"),
        splits.get("test"),
        source=str(folder),
        seed=seed,
        max_train=max_train,
        max_eval=max_eval,
    )
