"""Warm start: a new trainable model whose adapter starts from a pool adapter's saved tensors,
and why a pool adapter cannot warm-start the loop's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import PeftConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from ..errors import IncompatibleAdapterError
from ..peft_files import ADAPTER_WEIGHTS
from ..task_kinds import get_kind, same_family
from .base_model import canonical_name
from .build import new_model
from .heads import HEAD_MODULES

if TYPE_CHECKING:
    from ..pool import AdapterRecord


def read_adapter_config(adapter_dir: str | Path) -> PeftConfig:
    return PeftConfig.from_pretrained(str(adapter_dir))


def is_head_key(key: str) -> bool:
    """Whether a saved tensor name belongs to the classification head (source labels)."""
    return any(f".{head}." in key for head in HEAD_MODULES)


def adapter_state(adapter_dir: str | Path, *, with_head: bool) -> dict[str, torch.Tensor]:
    """The adapter's saved tensors; ``with_head=False`` drops the classification head."""
    state = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    if with_head:
        return state
    return {k: v for k, v in state.items() if not is_head_key(k)}


def warm_start_model(
    base_model: str | None,
    label_names: list[str] | tuple[str, ...],
    adapter_dir: str | Path,
    *,
    keep_head: bool = False,
    kind: str = "single",
) -> PeftModel:
    """A trainable model whose adapter starts from ``adapter_dir`` and whose head is fresh.

    The model is built from the adapter's own saved config (its method, rank, targets, virtual
    tokens), and every saved tensor but the head is loaded with peft's
    ``set_peft_model_state_dict``: LoRA's A/B, DoRA's magnitudes, AdaLoRA's E/A/B at the ranks it
    kept, IA3's vectors, LoHa/LoKr factors, prompt embeddings, the pooler. The source head has
    the source task's labels, so it stays fresh; ``keep_head=True`` carries it too, for a source
    whose label names are the target's (same order) (the ``same-labels`` strategy).

    Raises :class:`IncompatibleAdapterError` when a saved tensor is not taken up by the model or
    a tensor of the method is not in the file (nothing is half-loaded silently).
    """
    config = read_adapter_config(adapter_dir)
    model = new_model(base_model, label_names, config, kind=kind)
    fresh = get_peft_model_state_dict(model, save_embedding_layers=False)  # fresh head included
    carried = adapter_state(adapter_dir, with_head=keep_head)
    unknown = sorted(set(carried) - set(fresh))
    lacking = sorted(k for k in set(fresh) - set(carried) if not is_head_key(k))
    if unknown or lacking:
        what = (f"has tensors the model lacks: {unknown[:3]}" if unknown
                else f"lacks tensors of its method: {lacking[:3]}")
        raise IncompatibleAdapterError(f"adapter {adapter_dir} {what}")
    if keep_head:
        wrong = [k for k in carried if is_head_key(k) and carried[k].shape != fresh[k].shape]
        if wrong:
            raise IncompatibleAdapterError(
                f"adapter {adapter_dir}: head {wrong[0]} has shape "
                f"{tuple(carried[wrong[0]].shape)},"
                f" the target's {len(label_names)} labels need {tuple(fresh[wrong[0]].shape)}"
            )
    try:
        result = set_peft_model_state_dict(model, fresh | carried)
    except RuntimeError as exc:  # a size mismatch: another base model or layout
        raise IncompatibleAdapterError(f"adapter {adapter_dir} does not fit: {exc}") from exc
    # Prompt learning's embeddings are loaded into the prompt encoder apart from the rest (and
    # strictly), so load_state_dict reports them as unexpected: checked by value instead.
    prompt = model.active_peft_config.is_prompt_learning and "prompt_embeddings" in carried
    unused = [k for k in getattr(result, "unexpected_keys", [])
              if not (prompt and k == "prompt_embeddings")]
    if prompt and not torch.equal(model.prompt_encoder["default"].embedding.weight.detach().cpu(),
                                  carried["prompt_embeddings"].cpu()):
        unused.append("prompt_embeddings")
    if unused:
        raise IncompatibleAdapterError(
            f"warm start from {adapter_dir} left saved tensors unused: {sorted(unused)[:3]}"
        )
    return model


def warm_start_problem(record: AdapterRecord, *, base_model: str, peft_type: str,
                       kind: str = "single") -> str | None:
    """Why pool adapter ``record`` cannot warm-start the loop's model (None: it can).

    ``base_model``: trained on another base model; ``peft_type``: another PEFT type than the
    loop's method (a warm start carries the method's own tensors, which another method has not);
    ``task_kind``: trained on a task of another family than the target's ``kind`` (a text2text
    or image adapter is never a candidate for a text classifier, nor the other way round);
    ``task_type``: a peft task type other than the kind's. Tensor names and shapes were checked
    against the base model when the adapter entered the pool, and are again on warm start.
    """
    if canonical_name(record.base_model) != canonical_name(base_model):
        return "base_model"
    if str(record.peft_type).upper() != str(peft_type).upper():
        return "peft_type"
    if not same_family(kind, record.task_kind):
        return "task_kind"
    if (record.peft_config or {}).get("task_type") not in (None, get_kind(kind).peft_task_type):
        return "task_type"
    return None
