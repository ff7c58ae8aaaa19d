"""LoRA initialisations that rewrite the base weights (PiSSA, OLoRA, CorDA, LoRA-GA), saved so
that they load on the plain base model like any LoRA.

PiSSA and OLoRA move part of each targeted weight into the adapter: the model trains on
``W_res = W - B0 A0``, so the trained factors ``B A`` alone mean nothing on the shared base
``W`` that every pool member is applied to. peft converts them when saving
(``save_pretrained(..., path_initial_model_for_weight_conversion=DIR)``):
``dW = B A - B0 A0 = [B | -B0] [A ; A0]``, a plain LoRA of rank ``2r`` on the untouched base.
Two things make that usable here:

- peft reads the initial factors from a folder saved before the first step. adapterpool keeps
  them in memory instead (:func:`remember_initial`, called where a fresh adapter is built), and
  writes that folder only inside :func:`save_converted`, in a temporary directory: nothing is
  written unasked, and an adapter built elsewhere fails with a clear error instead of a silently
  wrong file.
- peft 0.21's conversion keeps only the LoRA factors and drops ``modules_to_save`` (the head,
  BERT's pooler): the saved adapter would not even load (``KeyError: ...classifier.weight``).
  :func:`save_converted` puts those tensors back, as trained.
"""

from __future__ import annotations

import json
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import PeftConfigError
from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, REWRITING_INITS

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

# model -> its adapter's state dict at initialisation (LoRA factors and modules_to_save).
_INITIAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rewrites_base(config: PeftConfig) -> bool:
    """Whether ``config``'s initialisation changes the base weights it is applied to."""
    init = getattr(config, "init_lora_weights", None)
    return isinstance(init, str) and init.lower().startswith(REWRITING_INITS)


def remember_initial(model: PeftModel) -> None:
    """Keep the active adapter's initial tensors (a copy, in memory) where its initialisation
    rewrites the base; call it before the first training step. Other methods: nothing kept."""
    from peft import get_peft_model_state_dict

    if rewrites_base(model.active_peft_config):
        _INITIAL[model] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(
            model, save_embedding_layers=False).items()}


def save_converted(model: PeftModel, out_dir: Path) -> None:
    """Save ``model``'s adapter as the plain LoRA of rank ``2r`` that gives the same outputs on
    the unmodified base model, with its ``modules_to_save`` tensors (see the module)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    config = model.active_peft_config
    initial = _INITIAL.get(model)
    if initial is None:
        raise PeftConfigError(
            f"this adapter was initialised with init_lora_weights={config.init_lora_weights!r}, "
            "which rewrites the base weights, and its initial factors were not kept: build it "
            "with adapterpool (new_model / standard_lora_model) so that it can be saved as a "
            "LoRA that loads on the plain base model")
    with tempfile.TemporaryDirectory(prefix="adapterpool-initial-") as tmp:
        folder = Path(tmp) / "initial"
        folder.mkdir()
        save_file({k: v.contiguous() for k, v in initial.items()},
                  str(folder / ADAPTER_WEIGHTS))
        # peft writes the adapter's config into that folder itself (init_lora_weights true: the
        # factors as they are, nothing to subtract again) and reads the initial factors with
        # save_embedding_layers="auto", which asks the Hub about the base model the config
        # names (a Hub id for the embedded MiniLM): while converting, it names none
        name, config.base_model_name_or_path = config.base_model_name_or_path, None
        try:
            model.save_pretrained(str(out_dir), safe_serialization=True,
                                  save_embedding_layers=False,
                                  path_initial_model_for_weight_conversion=str(folder))
        except ValueError as exc:  # e.g. rsLoRA with a rank or alpha pattern
            raise PeftConfigError(f"peft cannot convert this adapter to LoRA: {exc}") from exc
        finally:
            config.base_model_name_or_path = name
    saved_config = json.loads((out_dir / ADAPTER_CONFIG).read_text())
    saved_config["base_model_name_or_path"] = name  # peft filled in the model's folder
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(saved_config, indent=2, sort_keys=True))
    weights = out_dir / ADAPTER_WEIGHTS
    saved = load_file(str(weights))
    trained = get_peft_model_state_dict(model, save_embedding_layers=False)
    missing = {k: v.detach().to("cpu").contiguous() for k, v in trained.items() if k not in saved}
    if missing:
        save_file(saved | missing, str(weights), metadata={"format": "pt"})


def initial_state(model: PeftModel) -> dict[str, torch.Tensor] | None:
    """The tensors :func:`remember_initial` kept for ``model`` (tests, inspection), else None."""
    return _INITIAL.get(model)
