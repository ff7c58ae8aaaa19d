"""The tensor names and shapes an adapter must have on a base model: the pool's shape check.

The pool (:mod:`adapterpool.pool`) checks every adapter against these before it enters, but does
not build models itself, so that listing, reading and exporting a pool need no torch: the check
is handed to it (``AdapterPool(path, shape_check=...)``), this function by default.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict
from transformers import AutoConfig

from ..errors import AdapterRejected
from ..task_kinds import get_kind
from .base_model import resolve_base_model
from .build import auto_class, base_classifier


@lru_cache(maxsize=32)
def expected_shapes(
    base_model: str, config_json: str, num_labels: int, kind: str = "single"
) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes a PEFT model with this config has on the pool's base model.

    Built on the meta device (shapes need no weights), or with the weights where peft's state
    dict depends on values (AdaLoRA cuts its tensors to the saved rank pattern). A config peft
    cannot build on this model is refused with peft's reason.
    """
    import torch

    def shapes(base: torch.nn.Module) -> dict[str, tuple[int, ...]]:
        config = PeftConfig.from_peft_type(**json.loads(config_json))
        config.inference_mode = True
        try:
            model = get_peft_model(base, config)
        except (TypeError, ValueError, KeyError, NotImplementedError) as exc:
            raise AdapterRejected(
                f"a {config.peft_type} adapter with this config cannot be built on the pool's "
                f"base model: {exc}"
            ) from exc
        # save_embedding_layers=False: "auto" would look the base model up on the Hub
        state = get_peft_model_state_dict(model, save_embedding_layers=False)
        return {k: tuple(v.shape) for k, v in state.items()}

    extra = {"num_labels": num_labels} if get_kind(kind).labelled else {}
    model_config = AutoConfig.from_pretrained(resolve_base_model(base_model), **extra)
    try:
        with torch.device("meta"):
            return shapes(auto_class(kind).from_config(model_config))
    except (NotImplementedError, RuntimeError):  # a state dict that needs values
        return shapes(base_classifier(base_model, [str(i) for i in range(num_labels)], kind))
