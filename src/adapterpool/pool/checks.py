"""What an adapter must satisfy before it may enter a pool.

Only safetensors weights (pickles are refused, never opened), tensor names and shapes that fit the
pool's base model, sane ids and metadata, bounded size. Every refusal says exactly why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open

from ..errors import AdapterRejected
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, REWRITING_INITS

# (base model, adapter config as sorted JSON, number of labels, task kind) -> the tensor names and
# shapes such an adapter has on that base model. It needs a deep-learning framework, so the pool
# is handed one (adapterpool.models.shapes.expected_shapes by default) instead of building models.
ShapeCheck = Callable[[str, str, int, str], dict[str, tuple[int, ...]]]

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy"}
MAX_ADAPTER_BYTES = 512 * 1024 * 1024
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,126}[a-z0-9]$")


def slugify(name: str) -> str:
    """A safe id fragment: lower-case letters, digits, dots, dashes."""
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)
    return (slug or "adapter")[:80]


def check_id(adapter_id: str) -> str:
    if not isinstance(adapter_id, str) or not ID_PATTERN.match(adapter_id) or ".." in adapter_id:
        raise AdapterRejected(
            f"invalid adapter id {adapter_id!r}: "
            "use 2-128 lower-case letters, digits, '.', '_', '-'"
        )
    return adapter_id


def check_metadata(meta: dict) -> dict:
    """Task metadata every pool entry needs: name, kind (:mod:`adapterpool.task_kinds`), label
    names (none for text2text)."""
    from ..task_kinds import TASK_KINDS

    task = meta.get("task") if isinstance(meta, dict) else None
    if not isinstance(task, dict):
        raise AdapterRejected(
            "adapter metadata needs a 'task' block with name, kind and label_names"
        )
    name, kind, labels = task.get("name"), task.get("kind"), task.get("label_names")
    if not isinstance(name, str) or not name.strip():
        raise AdapterRejected("adapter metadata: task 'name' is required")
    if kind not in TASK_KINDS:
        raise AdapterRejected(
            f"adapter metadata: task 'kind' must be one of {', '.join(TASK_KINDS)}, got {kind!r}"
        )
    if not TASK_KINDS[kind].labelled:
        if labels not in ([], None):
            raise AdapterRejected(f"adapter metadata: a {kind} task has no 'label_names', "
                                  f"got {labels!r}")
        task["label_names"] = []
        return meta
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(x, str) and x for x in labels)
        or len(set(labels)) != len(labels)
    ):
        raise AdapterRejected(
            "adapter metadata: 'label_names' must be >= 2 distinct non-empty strings, "
            f"got {labels!r}"
        )
    return meta


def check_files(adapter_dir: Path) -> None:
    """Refuse pickles and links before anything is opened; other files are ignored (an add
    copies only the config and the weights)."""
    if not adapter_dir.is_dir():
        raise AdapterRejected(f"adapter folder {str(adapter_dir)!r} does not exist")
    total = 0
    for path in adapter_dir.iterdir():
        if path.is_symlink():
            raise AdapterRejected(f"{path.name}: symbolic links are not accepted")
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise AdapterRejected(
                f"{path.name}: pickle-based weights are refused (they can run code when loaded); "
                "save the adapter with safetensors (save_pretrained(..., safe_serialization=True))"
            )
        if path.is_file():
            total += path.stat().st_size
    for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / required).is_file():
            raise AdapterRejected(f"{adapter_dir}: missing {required} (PEFT format expected)")
    if total > MAX_ADAPTER_BYTES:
        raise AdapterRejected(
            f"{adapter_dir}: {total / 2**20:.1f} MiB exceeds the "
            f"{MAX_ADAPTER_BYTES // 2**20} MiB limit"
        )


def read_tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the safetensors header; a non-safetensors file is refused."""
    with open(weights, "rb") as handle:
        head = handle.read(9)
    # A pickle starts with its protocol opcode 0x80; safetensors with the 8-byte length of its
    # JSON header, then "{" (and that length may well end in the byte 0x80 too).
    if head[:1] == b"\x80" and head[8:9] != b"{":
        raise AdapterRejected(f"{weights.name} is a pickle, not safetensors; refused unopened")
    try:
        with safe_open(str(weights), framework="np") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:
        raise AdapterRejected(f"{weights.name} is not a valid safetensors file: {exc}") from exc


def read_config(adapter_dir: Path) -> dict:
    """The adapter's config; its ``peft_type`` must be one peft knows (every method of
    :mod:`adapterpool.models.peft_methods` and any other), its task type one of a task kind's."""
    from peft import PeftType

    from ..task_kinds import PEFT_TASK_TYPES

    try:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterRejected(f"{ADAPTER_CONFIG} is not valid JSON: {exc}") from exc
    known = sorted(t.value for t in PeftType)
    if not isinstance(config, dict) or config.get("peft_type") not in known:
        raise AdapterRejected(
            f"{ADAPTER_CONFIG}: peft_type "
            f"{config.get('peft_type') if isinstance(config, dict) else None!r} "
            f"is not a PEFT type peft {_peft_version()} knows ({', '.join(known)})"
        )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(REWRITING_INITS):
        raise AdapterRejected(
            f"{ADAPTER_CONFIG}: init_lora_weights {init!r}: these factors apply to a base model "
            "that initialisation rewrote, not to the pool's; save the adapter converted to "
            "LoRA (peft's save_pretrained(..., path_initial_model_for_weight_conversion=...), "
            "or adapterpool's save_adapter, which does it)"
        )
    if config.get("task_type") not in (None, *PEFT_TASK_TYPES):
        raise AdapterRejected(
            f"{ADAPTER_CONFIG}: task_type {config['task_type']!r}, expected one of "
            f"{', '.join(PEFT_TASK_TYPES)} (or none, for images)"
        )
    return config


def _peft_version() -> str:
    from peft import __version__

    return __version__


def check_tensors(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    unknown = sorted(set(shapes) - set(expected))
    if unknown:
        raise AdapterRejected(
            f"tensor {unknown[0]!r} (and {len(unknown) - 1} more) does not exist in the pool's "
            "base model with this adapter config: is it an adapter for another base model?"
        )
    wrong = [(k, shapes[k], expected[k]) for k in sorted(shapes) if shapes[k] != expected[k]]
    if wrong:
        name, got, want = wrong[0]
        raise AdapterRejected(
            f"tensor {name!r} has shape {got}, the pool's base model needs {want} "
            f"({len(wrong)} mismatched): an adapter for another base model or head size?"
        )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise AdapterRejected(f"adapter lacks tensor {missing[0]!r} ({len(missing)} missing)")


def validate_adapter_dir(
    adapter_dir: Path, *, base_model: str, meta: dict, expected_shapes: ShapeCheck,
    fingerprint: dict | None = None,
) -> dict:
    """Run every check; returns the parsed adapter config.

    ``expected_shapes`` gives the tensors an adapter of this config must have (see
    :data:`ShapeCheck`); the pool passes its own.

    ``fingerprint`` is the pool's base-model fingerprint: a declared local folder holding the
    same weights is the same base model whatever its path.
    """
    from ..models.base_model import is_same_base_model
    from ..task_kinds import TASK_KINDS

    check_files(adapter_dir)
    check_metadata(meta)
    config = read_config(adapter_dir)
    shapes = read_tensor_shapes(adapter_dir / ADAPTER_WEIGHTS)
    declared = config.get("base_model_name_or_path")
    if declared and not is_same_base_model(declared, base_model, fingerprint):
        raise AdapterRejected(
            f"adapter was trained on base model {declared!r}, this pool is for {base_model!r} "
            "(a local folder counts as the pool's model when it holds the same weights)"
        )
    num_labels = len(meta["task"]["label_names"])
    kind = meta["task"]["kind"]
    expected = TASK_KINDS[kind].peft_task_type
    if config.get("task_type") not in (None, expected):
        raise AdapterRejected(
            f"{ADAPTER_CONFIG}: task_type {config['task_type']!r} is not a {kind} adapter's "
            f"({expected or 'none'}); the metadata and the adapter disagree on the task kind"
        )
    clean = {k: v for k, v in config.items() if k != "base_model_name_or_path"}
    check_tensors(
        shapes, expected_shapes(base_model, json.dumps(clean, sort_keys=True), num_labels, kind)
    )
    return config
