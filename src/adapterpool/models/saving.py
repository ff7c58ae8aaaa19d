"""Saving an adapter in PEFT format (plus adapterpool.json), and loading one for inference."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel, PeftType
from peft.utils import ModulesToSaveWrapper

from ..peft_files import ADAPTERPOOL_META
from .build import base_classifier
from .rewritten_base import rewrites_base, save_converted


def load_for_inference(
    base_model: str | None, label_names: list[str] | tuple[str, ...], adapter_dir: str | Path,
    kind: str = "single",
) -> torch.nn.Module:
    """The adapter with its own head, merged into the base weights where peft can (a plain fast
    classifier), else the PEFT model as it is (see :func:`can_merge`)."""
    model = PeftModel.from_pretrained(base_classifier(base_model, label_names, kind),
                                      str(adapter_dir))
    return model.merge_and_unload() if can_merge(model) else model


def can_merge(model: PeftModel) -> bool:
    """Whether ``merge_and_unload`` gives a plain model back.

    Not for prompt learning (nothing to merge: the prompt is an input). Not for methods on peft's
    generic unload path (IA3, LoHa, LoKr, ...) when a ``modules_to_save`` module has no weight of
    its own, as BERT's pooler: peft 0.21 fails putting such a module back. LoRA and AdaLoRA have
    their own unload, which handles it.
    """
    config = model.active_peft_config
    if config.is_prompt_learning:
        return False
    if config.peft_type in (PeftType.LORA, PeftType.ADALORA):
        return True
    return all(hasattr(module.original_module, "weight") for module in model.modules()
               if isinstance(module, ModulesToSaveWrapper))


def save_adapter(model: PeftModel, out_dir: str | Path, metadata: dict) -> Path:
    """PEFT's own files plus ``adapterpool.json`` (task labels etc.), ready for the pool."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rewrites_base(model.active_peft_config):
        save_converted(model, out_dir)  # PiSSA/OLoRA: as a LoRA that loads on the plain base
    else:
        model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    (out_dir / ADAPTERPOOL_META).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return out_dir
