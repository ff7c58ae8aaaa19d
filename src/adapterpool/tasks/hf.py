"""Tasks from the Hugging Face Hub through ``datasets`` (``hf:NAME[:CONFIG]``).

Needs network (or a warm ``datasets`` cache); failures say so and point to local folders.
"""

from __future__ import annotations

from .local import frame_to_records
from .task import Records, Task, TaskDataError, build_task

VALIDATION_NAMES = ("validation", "valid", "dev", "validation_matched")


def load_hf(
    spec: str,
    *,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    target_field: str | None = None,
    image_field: str = "image",
) -> Task:
    """``spec`` is ``NAME`` or ``NAME:CONFIG`` (the part after ``hf:``).

    The kind follows the data: ``target_field`` given, text2text; an image column
    (``datasets.Image`` feature named ``image_field``), image; else single text or a text pair.
    """
    import datasets

    name, _, config = spec.partition(":")
    try:
        dsd = datasets.load_dataset(name, config or None)
    except Exception as exc:  # datasets raises many types: network, missing config, auth...
        raise TaskDataError(
            f"could not load Hugging Face dataset {spec!r}: {type(exc).__name__}: {exc}. "
            "Without network access, export the data to a folder with train/validation/test "
            "JSONL files and pass that folder instead."
        ) from exc
    if "train" not in dsd:
        raise TaskDataError(f"hf:{spec} has no 'train' split (splits: {list(dsd)})")
    features = dsd["train"].features
    if target_field is not None:
        kind = "text2text"
    elif isinstance(features.get(image_field), datasets.Image):
        kind = "image"
    else:
        kind = "pair" if text_pair_field else "single"
    feature = features.get(label_field)
    label_names = list(feature.names) if hasattr(feature, "names") else None
    splits: dict[str, Records] = {}
    for split, candidates in (
        ("train", ("train",)),
        ("validation", VALIDATION_NAMES),
        ("test", ("test",)),
    ):
        found = next((c for c in candidates if c in dsd), None)
        if found is None:
            continue
        frame = dsd[found].to_pandas()
        if kind == "image":  # decoded by datasets into PIL images (pandas holds raw bytes)
            frame[image_field] = list(dsd[found][image_field])
        if kind != "text2text" and label_field in frame and (frame[label_field] == -1).all():
            continue  # unlabelled test split (GLUE style): not usable for evaluation
        records, label_names = frame_to_records(
            frame,
            f"hf:{spec} [{found}]",
            text_field=text_field,
            label_field=label_field,
            text_pair_field=text_pair_field,
            label_names=label_names,
            kind=kind,
            target_field=target_field or "target",
            image_field=image_field,
        )
        splits[split] = records
    if kind == "text2text":
        label_names = []
    elif label_names is None:
        label_names = [str(i) for i in range(max(splits["train"].label) + 1)]
    return build_task(
        spec.replace("/", "__"),
        kind,
        label_names,
        splits["train"],
        splits.get("validation"),
        splits.get("test"),
        source=f"hf:{spec}",
        seed=seed,
        max_train=max_train,
        max_eval=max_eval,
    )
