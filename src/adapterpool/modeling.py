"""Models: a base encoder with a PEFT adapter and a classification head, built, warm-started, saved.

Adapters are PEFT's own format; the head travels inside the adapter (``modules_to_save``), so one
folder is enough to score a candidate on target data with its *source* head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    TaskType,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from .base_model import canonical_name, resolve_base_model
from .peft_files import ADAPTER_WEIGHTS, ADAPTERPOOL_META

HEAD_MODULES = ("classifier", "score")


@dataclass
class LoraSettings:
    """Standard LoRA defaults for BERT-like encoders (attention q/k/v, head trained)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    # BERT's pooler is what its classifier reads; trained and carried over on warm-start.
    modules_to_save: list[str] = field(default_factory=lambda: ["classifier", "pooler"])

    def to_peft(self) -> LoraConfig:
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            modules_to_save=list(self.modules_to_save),
        )


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(base_model: str | None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_base_model(base_model))


def base_classifier(base_model: str | None, label_names: list[str] | tuple[str, ...]):
    """The base model with a fresh sequence-classification head for ``label_names``."""
    labels = list(label_names)
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_base_model(base_model),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def new_model(
    base_model: str | None, label_names: list[str] | tuple[str, ...], peft_config: PeftConfig
) -> PeftModel:
    """A fresh trainable PEFT model (standard LoRA from scratch when ``peft_config`` is LoRA).

    ``modules_to_save`` entries the architecture lacks (a pooler, say) are dropped.
    """
    base = base_classifier(base_model, label_names)
    if peft_config.modules_to_save:
        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        peft_config.modules_to_save = [m for m in peft_config.modules_to_save if m in names]
    model = get_peft_model(base, peft_config)
    config = model.peft_config["default"]
    config.base_model_name_or_path = canonical_name(base_model)
    if isinstance(config.modules_to_save, list):
        # peft appends its task's head names (classifier, score) even when the list, read from a
        # saved adapter, already holds them: without this every warm start saved one copy more.
        config.modules_to_save = list(dict.fromkeys(config.modules_to_save))
    return model


def read_adapter_config(adapter_dir: str | Path) -> PeftConfig:
    return PeftConfig.from_pretrained(str(adapter_dir))


def adapter_state(adapter_dir: str | Path, *, with_head: bool) -> dict[str, torch.Tensor]:
    """The adapter's saved tensors; ``with_head=False`` drops the classification head."""
    state = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    if with_head:
        return state
    return {k: v for k, v in state.items() if not any(f".{h}." in k for h in HEAD_MODULES)}


def warm_start_model(
    base_model: str | None,
    label_names: list[str] | tuple[str, ...],
    adapter_dir: str | Path,
    *,
    keep_head: bool = False,
) -> PeftModel:
    """A trainable model whose adapter starts from ``adapter_dir`` and whose head is fresh.

    The source head has the source task's labels, so only the adapter weights carry over.
    ``keep_head=True`` carries the head too: for a source whose label names are the target's
    (same order), whose head then already means the right thing (the ``same-labels`` strategy).
    """
    config = read_adapter_config(adapter_dir)
    config.inference_mode = False
    model = new_model(base_model, label_names, config)
    state = get_peft_model_state_dict(model, save_embedding_layers=False)  # fresh head included
    carried = adapter_state(adapter_dir, with_head=keep_head)
    unknown = sorted(set(carried) - set(state))
    if unknown:
        raise ValueError(f"adapter {adapter_dir} has tensors the model lacks: {unknown[:3]}")
    if keep_head:
        wrong = [k for k in carried if carried[k].shape != state[k].shape]
        if wrong:
            raise ValueError(
                f"adapter {adapter_dir}: head {wrong[0]} has shape "
                f"{tuple(carried[wrong[0]].shape)},"
                f" the target's {len(label_names)} labels need {tuple(state[wrong[0]].shape)}"
            )
    result = set_peft_model_state_dict(model, state | carried)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"warm start from {adapter_dir} left LoRA weights unset: {missing[:3]}")
    return model


def load_for_inference(
    base_model: str | None, label_names: list[str] | tuple[str, ...], adapter_dir: str | Path
) -> torch.nn.Module:
    """The adapter with its own head, merged into the base weights: a plain fast classifier."""
    model = PeftModel.from_pretrained(base_classifier(base_model, label_names), str(adapter_dir))
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The classification head, whose input is the pooled feature the metrics read."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    for name in HEAD_MODULES:
        module = getattr(inner, name, None)
        if module is not None:
            return module
    raise ValueError(f"{type(inner).__name__} has no classification head named {HEAD_MODULES}")


def save_adapter(model: PeftModel, out_dir: str | Path, metadata: dict) -> Path:
    """PEFT's own files plus ``adapterpool.json`` (task labels etc.), ready for the pool."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    (out_dir / ADAPTERPOOL_META).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    return out_dir
