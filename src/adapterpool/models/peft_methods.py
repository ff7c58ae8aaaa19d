"""The PEFT methods adapterpool trains, in one table: ``--peft`` name -> the peft config it builds.

As peft's ``utils/constants.py`` maps model types to target modules, :data:`PEFT_METHODS` maps a
method name to a peft config type, the defaults that differ from peft's own, the learning rate it
trains with, and one line of help. ``target_modules`` is always left to peft (``None``): its
per-architecture table picks the layers of each model family (BERT's query and value, GPT-2's
``c_attn``, Llama's ``q_proj``/``v_proj``; for IA3 also the feed-forward output), so one method
name works on any base model peft knows.

Any other config peft accepts comes in as a :class:`peft.PeftConfig` (Python) or as its JSON
(``--peft-config FILE.json``, the format of ``adapter_config.json``), checked by peft's own config
class: a field it does not have, or a value its ``__post_init__`` refuses, is a
:class:`~adapterpool.errors.PeftConfigError` naming it.

Every call returns a *fresh* config: ``get_peft_model`` mutates the one it is given. Nothing heavy
is imported at module level, so that the command line lists the methods without loading peft.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PeftConfigError, did_you_mean

if TYPE_CHECKING:
    from peft import PeftConfig

DEFAULT_METHOD = "lora"
# Trained and saved with the adapter for the methods that take modules_to_save: BERT's pooler
# is what its classifier reads (kept on warm starts); names a model lacks are dropped when the
# model is built, and peft adds the head (classifier or score) itself.
MODULES_TO_SAVE = ("classifier", "pooler")
# Modules a model type's built checkpoint leaves untrained, trained in full and saved beside the
# adapter on text2text tasks (as ``modules_to_save``, PEFT's own format, so warm starts carry
# them): an EncoderDecoderModel warm-started from two encoders (BERT2BERT, Rothe et al. 2020)
# gets fresh cross-attention in every decoder layer and, from a checkpoint without an MLM head
# (all-MiniLM-L6-v2), a fresh LM-head transform. Frozen, they stay random, and LoRA on query/value
# alone learned next to nothing (validation ROUGE-L 0.028 after 2 epochs on 500 builtin
# definitions; benchmarks/results/text2text/notes.md).
FRESH_MODULES = {"encoder-decoder": ("crossattention", "transform")}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class PeftMethod:
    """One ``--peft`` method: which peft config it builds, with what, and how it is trained."""

    peft_type: str = field(metadata=_help("peft's PeftType value; its config class is peft's"))
    defaults: Mapping[str, Any] = field(
        metadata=_help("config fields that differ from peft's defaults (task_type is SEQ_CLS)")
    )
    learning_rate: float = field(
        metadata=_help("AdamW peak learning rate when TrainConfig.learning_rate is None")
    )
    help: str = field(metadata=_help("what it trains, for --help and the README"))
    shorthands: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_help("command-line shorthands (r, alpha, dropout) -> this config's field"),
    )

    def config(self, **overrides: Any) -> PeftConfig:
        """A fresh config: the defaults, then ``overrides`` (peft field names, checked by peft)."""
        values = {k: copy.deepcopy(v) for k, v in self.defaults.items()}
        return _build(self.peft_type, values | overrides, "--peft")


_LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "modules_to_save": list(MODULES_TO_SAVE)}
_LORA_SHORTHANDS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
_LYCORIS = {"r": 8, "alpha": 8, "modules_to_save": list(MODULES_TO_SAVE)}

PEFT_METHODS: dict[str, PeftMethod] = {
    "lora": PeftMethod(
        "LORA", _LORA, 1e-3,
        "LoRA: low-rank updates (r 16, alpha 32, dropout 0.1) of the layers peft's table picks",
        _LORA_SHORTHANDS,
    ),
    "eva": PeftMethod(
        "LORA", _LORA | {"init_lora_weights": "eva", "eva_config": {}}, 1e-3,
        "EVA: LoRA's defaults, A initialised from an SVD of the target's own layer inputs (one "
        "pass over its training data before training; peft's EVA)",
        _LORA_SHORTHANDS,
    ),
    "pissa": PeftMethod(
        "LORA", _LORA | {"init_lora_weights": "pissa"}, 1e-3,
        "PiSSA: LoRA's defaults, A and B initialised from the principal singular vectors of each "
        "weight (removed from the base while training; saved as a rank-2r LoRA on the plain base)",
        _LORA_SHORTHANDS,
    ),
    "olora": PeftMethod(
        "LORA", _LORA | {"init_lora_weights": "olora"}, 1e-3,
        "OLoRA: LoRA's defaults, A and B initialised from a QR decomposition of each weight "
        "(removed from the base while training; saved as a rank-2r LoRA on the plain base)",
        _LORA_SHORTHANDS,
    ),
    "corda": PeftMethod(
        "LORA", _LORA | {"init_lora_weights": "corda", "corda_config": {"corda_method": "ipm"}},
        1e-3,
        "CorDA: LoRA's defaults, A and B from an SVD of each weight times the covariance of its "
        "inputs on the target's own examples (instruction-previewed mode; a pass over up to 256 "
        "training examples first; removed from the base while training; saved as a rank-2r LoRA "
        "on the plain base)",
        _LORA_SHORTHANDS,
    ),
    "lora-ga": PeftMethod(
        "LORA", _LORA | {"init_lora_weights": "lora_ga", "lora_ga_config": {}}, 1e-3,
        "LoRA-GA: LoRA's defaults, A and B from an SVD of each weight's gradient on the target's "
        "training data (one forward and backward pass over it first; removed from the base "
        "while training; saved as a rank-2r LoRA on the plain base)",
        _LORA_SHORTHANDS,
    ),
    "dora": PeftMethod(
        "LORA", _LORA | {"use_dora": True}, 1e-3,
        "DoRA: LoRA's defaults plus a learned magnitude per output (weight-decomposed)",
        _LORA_SHORTHANDS,
    ),
    "rslora": PeftMethod(
        "LORA", _LORA | {"use_rslora": True}, 1e-3,
        "rsLoRA: LoRA's defaults, updates scaled by alpha/sqrt(r) instead of alpha/r",
        _LORA_SHORTHANDS,
    ),
    "adalora": PeftMethod(
        "ADALORA",
        {"init_r": 12, "target_r": 8, "lora_alpha": 32, "lora_dropout": 0.1, "total_step": 1,
         "modules_to_save": list(MODULES_TO_SAVE)},
        1e-3,
        "AdaLoRA: SVD-form LoRA whose rank budget (init_r 12 -> target_r 8 a layer) moves to the "
        "important layers while training; total_step is set to the run's real step count",
        {"alpha": "lora_alpha", "dropout": "lora_dropout"},
    ),
    "ia3": PeftMethod(
        "IA3", {"modules_to_save": list(MODULES_TO_SAVE)}, 3e-3,
        "(IA)^3: learned scaling of attention keys/values and the feed-forward output "
        "(peft's table gives both target_modules and feedforward_modules)",
    ),
    "loha": PeftMethod(
        "LOHA", _LYCORIS, 1e-3,
        "LoHa: low-rank Hadamard-product updates (r 8, alpha 8); nn.Linear/Conv layers only",
        {"r": "r", "alpha": "alpha"},
    ),
    "lokr": PeftMethod(
        "LOKR", _LYCORIS, 1e-3,
        "LoKr: low-rank Kronecker-product updates (r 8, alpha 8); nn.Linear/Conv layers only",
        {"r": "r", "alpha": "alpha"},
    ),
    "prefix": PeftMethod(
        "PREFIX_TUNING", {"num_virtual_tokens": 20}, 1e-2,
        "prefix tuning: 20 learned key/value prefixes in every layer (needs a model whose forward "
        "takes past_key_values; none does under transformers 5, see the README)",
    ),
    "prompt": PeftMethod(
        "PROMPT_TUNING", {"num_virtual_tokens": 20}, 3e-2,
        "prompt tuning: 20 learned virtual-token embeddings before the input",
    ),
    "ptuning": PeftMethod(
        "P_TUNING", {"num_virtual_tokens": 20, "encoder_hidden_size": 128}, 1e-3,
        "P-tuning: 20 virtual tokens produced by a small MLP prompt encoder",
    ),
}


def peft_config(method: str | PeftConfig | Mapping[str, Any] | None = None,
                **overrides: Any) -> PeftConfig:
    """A fresh sequence-classification config for ``method``.

    ``method`` is a name of :data:`PEFT_METHODS` (default ``lora``; ``overrides`` are peft field
    names applied on top of its defaults), a :class:`peft.PeftConfig` (copied), or the dict of
    one (as in ``adapter_config.json``). Unknown names and fields fail here, naming them.
    """
    from peft import PeftConfig

    if method is None or isinstance(method, str):
        name = method or DEFAULT_METHOD
        if name not in PEFT_METHODS:
            raise PeftConfigError(
                f"unknown PEFT method {name!r}{did_you_mean(name, PEFT_METHODS)}; choose from "
                f"{', '.join(PEFT_METHODS)} or pass --peft-config FILE.json"
            )
        return PEFT_METHODS[name].config(**overrides)
    if isinstance(method, PeftConfig):
        data = {f.name: copy.deepcopy(getattr(method, f.name)) for f in fields(method) if f.init}
        return _build(_type_name(method.peft_type), data | overrides, type(method).__name__)
    if isinstance(method, Mapping):
        data = dict(method) | overrides
        if "peft_type" not in data:
            raise PeftConfigError(f"a PEFT config needs 'peft_type' (one of {_peft_types()})")
        return _build(_type_name(data.pop("peft_type")), data, "PEFT config")
    raise PeftConfigError(f"cannot make a PEFT config of {type(method).__name__}")


def load_peft_config(path: str | Path) -> PeftConfig:
    """The config in a JSON file (what ``adapter_config.json`` holds; ``peft_type`` required)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PeftConfigError(f"--peft-config {path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict) or "peft_type" not in data:
        raise PeftConfigError(
            f"--peft-config {path}: a JSON object with 'peft_type' (one of {_peft_types()}) and "
            "the fields of its peft config is expected"
        )
    return _build(_type_name(data.pop("peft_type")), data, f"--peft-config {path}")


def with_shorthands(method: str, **values: Any) -> dict[str, Any]:
    """Command-line shorthands (``r``, ``alpha``, ``dropout``; None: not given) as ``method``'s
    peft field names; a shorthand the method has no field for is an error naming both."""
    entry = PEFT_METHODS.get(method)
    given = {k: v for k, v in values.items() if v is not None}
    if entry is None:
        if given:
            raise PeftConfigError(f"--lora-{next(iter(given))} needs --peft (not --peft-config)")
        return {}
    missing = [k for k in given if k not in entry.shorthands]
    if missing:
        raise PeftConfigError(
            f"--lora-{missing[0]} does not apply to --peft {method}; set its fields with "
            "--peft-config FILE.json"
        )
    return {entry.shorthands[k]: v for k, v in given.items()}


def for_task_kind(config: PeftConfig, kind: str, model: Any = None) -> PeftConfig:
    """``config`` (a fresh one, as :func:`peft_config` returns) set up for task kind ``kind``:
    the kind's peft task type (:mod:`adapterpool.task_kinds`); no head in ``modules_to_save``
    where there is none (text2text: the LM head is the base model's), but what the model's
    checkpoint left fresh (:data:`FRESH_MODULES`, for ``model``'s type); and, for a method with
    ``target_modules`` left to peft on a model type peft's table lacks (ViT, an
    EncoderDecoderModel), the kind's fallback targets that ``model`` (the base ``nn.Module``)
    has: its attention query and value projections."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    from ..task_kinds import get_kind

    spec = get_kind(kind)
    config.task_type = spec.peft_task_type
    if not spec.labelled and getattr(config, "modules_to_save", None):
        config.modules_to_save = None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if (model is not None and not config.is_prompt_learning
            and hasattr(config, "target_modules") and config.target_modules is None
            and model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING):
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        found = next((t for t in spec.fallback_target_modules if names.issuperset(t)), None)
        if found is not None:
            config.target_modules = list(found)
    if not spec.labelled and model is not None:
        _train_fresh_modules(config, model)
    return config


def _train_fresh_modules(config: PeftConfig, model: Any) -> None:
    """Put the modules :data:`FRESH_MODULES` names for ``model``'s type (those it has) in
    ``config.modules_to_save``, and keep the adapter's own layers out of them: a module trained
    in full needs no low-rank update, and peft would otherwise wrap adapter layers in its copy."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    fresh = [m for m in FRESH_MODULES.get(model.config.model_type, ()) if m in names]
    if not fresh or not hasattr(config, "modules_to_save"):
        return
    config.modules_to_save = list(fresh)
    if hasattr(config, "exclude_modules"):
        config.exclude_modules = rf".*\.({'|'.join(fresh)})(\..*)?"


def learning_rate_for(config: PeftConfig) -> float:
    """The learning rate a config's method trains with by default: the first table entry of its
    PEFT type (LoRA's for DoRA and rsLoRA alike); peft types outside the table get LoRA's."""
    kind = _type_name(config.peft_type)
    entry = next((m for m in PEFT_METHODS.values() if m.peft_type == kind), None)
    return (entry or PEFT_METHODS[DEFAULT_METHOD]).learning_rate


def method_name(config: PeftConfig) -> str:
    """The table name that describes ``config`` best (``dora`` for LoRA with ``use_dora``, ``eva``
    for LoRA initialised by EVA), else its peft type in lower case (a config from --peft-config
    of a type outside the table)."""
    kind = _type_name(config.peft_type)
    matches = [name for name, m in PEFT_METHODS.items() if m.peft_type == kind]
    for name in matches:
        flags = {k: v for k, v in PEFT_METHODS[name].defaults.items()
                 if isinstance(v, bool) or k == "init_lora_weights"}
        if flags and all(getattr(config, k, None) == v for k, v in flags.items()):
            return name
    return matches[0] if matches else kind.lower()


def config_json(config: PeftConfig) -> dict[str, Any]:
    """``config`` as JSON-able data (sets as sorted lists, enums as their values)."""
    return json.loads(json.dumps(config.to_dict(), default=lambda v: sorted(v)
                                 if isinstance(v, set | frozenset) else str(v)))


def _type_name(peft_type: Any) -> str:
    return str(getattr(peft_type, "value", peft_type)).upper()


def _peft_types() -> str:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return ", ".join(sorted(str(t.value if hasattr(t, "value") else t)
                            for t in PEFT_TYPE_TO_CONFIG_MAPPING))


def _build(peft_type: str, values: dict[str, Any], origin: str) -> PeftConfig:
    """peft's config class for ``peft_type`` built from ``values`` as a training config, of
    sequence classification unless ``values`` names another task type adapterpool trains
    (:func:`for_task_kind` sets the one the task needs).

    Unknown fields are refused here rather than dropped with a warning, as
    ``PeftConfig.from_peft_type`` does for configs from newer peft versions.
    """
    from peft import TaskType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    classes = {_type_name(k): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if peft_type not in classes:
        raise PeftConfigError(
            f"{origin}: peft_type {peft_type!r} unknown{did_you_mean(peft_type, classes)}; "
            f"peft knows {_peft_types()}"
        )
    cls = classes[peft_type]
    known = {f.name for f in fields(cls) if f.init}
    for name in values:
        if name not in known:
            raise PeftConfigError(
                f"{origin}: {cls.__name__} has no field {name!r}{did_you_mean(name, known)}"
            )
    from ..task_kinds import PEFT_TASK_TYPES

    task = values.get("task_type")
    task = str(getattr(task, "value", task)) if task is not None else None
    if task is not None and task not in PEFT_TASK_TYPES:
        raise PeftConfigError(f"{origin}: task_type {task!r}; adapterpool trains "
                              f"{', '.join(PEFT_TASK_TYPES)} adapters (or none, for images)")
    values = values | {"task_type": TaskType(task or "SEQ_CLS"), "inference_mode": False,
                       "base_model_name_or_path": None}
    values.pop("peft_type", None)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise PeftConfigError(f"{origin}: {cls.__name__} refuses it: {exc}") from exc
