"""The ``composition`` strategy: warm-start from a weighted merge of the top candidates' LoRA.

One source rarely matches a new task; several related ones together may (LoraHub, Huang et al.
2023, composes LoRA modules for unseen tasks). The merge is peft's own
``add_weighted_adapter(combination_type="svd")``: the weighted sum of the candidates' weight
updates (sum of w_i B_i A_i, each with its scaling), truncated by SVD to the rank of the first
(best-ranked) candidate, whose model the merge goes into: the result has that adapter's shape and
can be contributed like one (what peft cannot merge is a UsageError, see :func:`compose_lora`).

peft refuses to merge adapters that each carry ``modules_to_save`` (the classification heads and
BERT's pooler, all task-specific), so only the LoRA tensors are merged here; the caller warm-starts
the best-ranked candidate (its pooler, a fresh head) and replaces its LoRA tensors with the merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from peft import (
    LoraConfig,
    PeftType,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer

from ..errors import UsageError
from .build import base_classifier
from .warm_start import adapter_state, read_adapter_config

MERGED = "composed"


def score_weights(scores: Sequence[float]) -> np.ndarray:
    """Merge weights from transferability scores: a softmax of the standardised scores.

    Metrics live on different scales (an accuracy, a log-likelihood), so the scores are first
    standardised; equal scores give equal weights. The weights sum to 1, so the merged update is
    a weighted mean of the candidates' updates, on the scale of one adapter.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise UsageError(f"composition needs finite scores, got {list(scores)}")
    spread = values.std()
    z = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
    e = np.exp(z - z.max())
    return e / e.sum()


def _lora_config(adapter_dir: str | Path) -> LoraConfig:
    config = read_adapter_config(adapter_dir)
    if config.peft_type != PeftType.LORA:
        raise UsageError(f"composition merges LoRA adapters; {adapter_dir} is {config.peft_type}")
    if getattr(config, "use_dora", False):
        raise UsageError(f"composition merges plain LoRA; {adapter_dir} is DoRA (peft's merge "
                         "does not combine the magnitude vectors)")
    # No task type: a sequence-classification PeftModel would add the head to modules_to_save
    # again, and the head is not merged (the key names of the LoRA tensors stay the same).
    return replace(config, modules_to_save=None, task_type=None, inference_mode=False)


def compose_lora(base_model: str | None, label_names: Sequence[str],
                 adapter_dirs: Sequence[str | Path],
                 weights: Sequence[float], kind: str = "single") -> dict[str, torch.Tensor]:
    """The merged LoRA tensors, keyed as in a saved adapter file (ready for
    ``set_peft_model_state_dict``). Raises ``UsageError`` when the adapters cannot be merged
    (another PEFT method, other target modules: peft's own checks)."""
    if len(adapter_dirs) != len(weights) or len(adapter_dirs) < 2:
        raise UsageError(f"composition needs >= 2 adapters and one weight each, got "
                         f"{len(adapter_dirs)} adapters and {len(weights)} weights")
    names = [f"c{i}" for i in range(len(adapter_dirs))]
    model = get_peft_model(base_classifier(base_model, list(label_names), kind),
                           _lora_config(adapter_dirs[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapter_dirs[1:], strict=True):
        model.add_adapter(name, _lora_config(folder))
    for name, folder in zip(names, adapter_dirs, strict=True):
        lora = {k: v for k, v in adapter_state(folder, with_head=False).items() if "lora_" in k}
        result = set_peft_model_state_dict(model, lora, adapter_name=name)
        unset = [k for k in getattr(result, "missing_keys", []) if f"lora_A.{name}" in k
                 or f"lora_B.{name}" in k]
        if unset:
            raise UsageError(f"composition: {folder} lacks LoRA weights the model has: {unset[:2]}")
    rank = model.peft_config[names[0]].r
    try:
        model.add_weighted_adapter(names, [float(w) for w in weights], MERGED,
                                   combination_type="svd", svd_rank=rank)
    except ValueError as exc:  # peft's check: mixed ranks/targets it cannot merge
        raise UsageError(f"composition: peft cannot merge these adapters: {exc}") from exc
    # peft gives the merge its own scaling (alpha = r); the tensors go into a model configured
    # as the first candidate, so B is rescaled to that scaling: the same update, exactly.
    for module in model.modules():
        if isinstance(module, LoraLayer) and MERGED in module.lora_B:
            factor = module.scaling[MERGED] / module.scaling[names[0]]
            module.lora_B[MERGED].weight.data.mul_(factor)
    # save_embedding_layers=False: "auto" looks the base model up on the Hub (a network call)
    merged = get_peft_model_state_dict(model, adapter_name=MERGED, save_embedding_layers=False)
    return {k: v.detach().clone() for k, v in merged.items() if "lora_" in k}
