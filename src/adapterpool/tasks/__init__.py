"""Task loading: one entry point for folders, Hugging Face datasets and builtin offline tasks."""

from __future__ import annotations

from pathlib import Path

from .task import SPLITS, Records, Task, TaskDataError, build_task

__all__ = ["SPLITS", "Records", "Task", "TaskDataError", "build_task", "load_task"]


def load_task(
    spec: str | Path,
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
    """Load ``builtin:NAME``, ``hf:NAME[:CONFIG]`` or a local folder as a validated
    :class:`Task`.

    ``target_field``: the target-text column of a text2text task (a local folder's default is
    ``target``; for ``hf:`` datasets giving it makes the task text2text). ``image_field``: the
    image column of an image task."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        from .builtin import load_builtin

        return load_builtin(
            spec[len("builtin:"):], seed=seed, max_train=max_train, max_eval=max_eval
        )
    fields = dict(text_field=text_field, text_pair_field=text_pair_field, label_field=label_field,
                  image_field=image_field)
    if spec.startswith("hf:"):
        from .hf import load_hf

        return load_hf(spec[3:], seed=seed, max_train=max_train, max_eval=max_eval,
                       target_field=target_field, **fields)
    from .local import load_local

    return load_local(spec, seed=seed, max_train=max_train, max_eval=max_eval,
                      target_field=target_field or "target", **fields)
