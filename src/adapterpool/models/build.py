"""Models: a base model with a PEFT adapter (and a head), built, warm-started, saved.

The task kind (:mod:`adapterpool.task_kinds`) picks the transformers Auto class and the peft task
type: sequence classifiers for text, ``AutoModelForSeq2SeqLM`` (T5, BART, an EncoderDecoderModel)
for text2text, ``AutoModelForImageClassification`` (ViT and friends) for images, whose inputs come
from the model's own image processor.

Adapters are PEFT's own format; the head travels inside the adapter (``modules_to_save``), so one
folder is enough to score a candidate on target data with its *source* head. Any PEFT method
(:mod:`adapterpool.models.peft_methods`) and any Hugging Face encoder or decoder-only model works:
decoders (GPT-2, Llama, ...) classify from their last non-pad token, so a tokenizer without a pad
token gets a stand-in (eos) and the model's ``config.pad_token_id`` is set to it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import TYPE_CHECKING

import torch
import transformers
from peft import (
    PeftConfig,
    PeftModel,
    PeftType,
    get_peft_model,
)
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from ..errors import BaseModelError, PeftConfigError
from ..task_kinds import get_kind
from .base_model import canonical_name, resolve_base_model
from .heads import reads_last_token
from .peft_methods import for_task_kind, method_name, peft_config
from .rewritten_base import remember_initial

if TYPE_CHECKING:
    from collections.abc import Callable


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(base_model: str | None) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token: batches need one, and decoder-only models'
    tokenizers (GPT-2, Llama) have none. The stand-in is eos (then sep, then unk): a token the
    model already knows, so no embedding is added and adapters stay base-compatible."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model))
    if tokenizer.pad_token is None:
        stand_in = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token
        if stand_in is None:
            raise BaseModelError(
                f"the tokenizer of {canonical_name(base_model)} has no pad, eos, sep or unk token "
                "to pad batches with; add a pad token to its tokenizer_config.json"
            )
        tokenizer.pad_token = stand_in
    return tokenizer


def load_preprocessor(base_model: str | None, kind: str = "single"):
    """What turns a ``kind`` example into model inputs: the tokenizer (:func:`load_tokenizer`),
    or for images the model's own image processor (the slow PIL path: no torchvision needed)."""
    if get_kind(kind).inputs == "tokenizer":
        return load_tokenizer(base_model)
    path = resolve_base_model(base_model)
    try:
        return AutoImageProcessor.from_pretrained(path, use_fast=False)
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            f"{canonical_name(base_model)} has no image processor (preprocessor_config.json) "
            f"to prepare images with: {exc}"
        ) from exc


def auto_class(kind: str):
    """The transformers Auto class that builds ``kind``'s models (the table's entry)."""
    return getattr(transformers, get_kind(kind).auto_class)


def check_base_fits(base_model: str | None, kind: str) -> None:
    """Refuse, clearly and before any work, a base model that has no model class of ``kind``
    (an image task on a MiniLM pool, a text task on a ViT pool, text2text on an encoder)."""
    config = AutoConfig.from_pretrained(resolve_base_model(base_model))
    cls = auto_class(kind)
    if type(config) not in cls._model_mapping:
        raise BaseModelError(
            f"the base model {canonical_name(base_model)} ({config.model_type}) has no "
            f"{cls.__name__} model: it cannot serve {kind} tasks; use a pool whose base model "
            "can (adapterpool.task_kinds.TASK_KINDS names each kind's model class)"
        )


@cache
def _pad_token_id(base_model: str | None) -> int | None:
    return load_tokenizer(base_model).pad_token_id


def base_classifier(base_model: str | None, label_names: list[str] | tuple[str, ...],
                    kind: str = "single"):
    """The base model built for ``kind``: with a fresh classification head for ``label_names``
    (text and image kinds), or as a sequence-to-sequence model (text2text: no labels).

    ``config.pad_token_id`` is set where a text classifier has none (decoders): their head reads
    the last token that is not padding, and refuses batches without knowing which one that is. An
    image checkpoint's own head (ImageNet's 1,000 classes) is replaced by one of the right size.
    """
    spec = get_kind(kind)
    path = resolve_base_model(base_model)
    if not spec.labelled:
        return auto_class(kind).from_pretrained(path)
    labels = list(label_names)
    extra = {}
    if spec.inputs == "image_processor":
        extra["ignore_mismatched_sizes"] = True
    elif getattr(AutoConfig.from_pretrained(path), "pad_token_id", None) is None:
        extra["pad_token_id"] = _pad_token_id(base_model)
    return auto_class(kind).from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        **extra,
    )


def new_model(
    base_model: str | None, label_names: list[str] | tuple[str, ...],
    peft: PeftConfig | str | None = None, *, kind: str = "single",
    prepare: Callable[[torch.nn.Module, PeftConfig], None] | None = None,
) -> PeftModel:
    """A fresh trainable PEFT model: ``peft`` is a method name or config (default LoRA), copied,
    since ``get_peft_model`` changes the config it is given, and set to ``kind``'s peft task type.

    ``modules_to_save`` entries the architecture lacks (a pooler, say) are dropped. A method that
    cannot run on this model is a :class:`PeftConfigError` naming both and peft's reason. An
    initialisation that rewrites the base weights (PiSSA, OLoRA, CorDA, LoRA-GA) has its initial
    factors kept, so that :func:`~adapterpool.models.saving.save_adapter` can save it as a plain
    LoRA. ``prepare(base, config)`` runs on the base model before the adapter is added: the data
    pass of CorDA and LoRA-GA (:func:`adapterpool.training.data_init.prepare_base`), without
    which they are refused.
    """
    from ..training.data_init import reads_data_before_wrapping

    base = base_classifier(base_model, label_names, kind)
    config = for_task_kind(peft_config(peft), kind, base)
    if reads_data_before_wrapping(config):
        if prepare is None:
            raise PeftConfigError(
                f"{method_name(config)} builds its adapter from a pass over the target's "
                "training data: build it with standard_lora_model(..., task=...), as "
                "`adapterpool train` and the loop's fallback do")
        prepare(base, config)
    model = _build(base, config, base_model)
    config = model.peft_config["default"]
    config.base_model_name_or_path = canonical_name(base_model)
    remember_initial(model)  # PiSSA/OLoRA/CorDA/LoRA-GA: saved later as a LoRA on the plain base
    return model


def check_method(base_model: str | None, peft: PeftConfig | str | None, n_labels: int = 2,
                 max_length: int | None = None, *, kind: str = "single") -> None:
    """Raise :class:`PeftConfigError` unless ``peft`` runs on ``base_model`` (with inputs of up
    to ``max_length`` tokens), without loading weights (the model is built on the meta device):
    the loop calls it before any work, so a method that does not fit fails before anything is
    trained or written."""
    from ..training.data_init import reads_data_before_wrapping

    check_base_fits(base_model, kind)
    path = resolve_base_model(base_model)
    extra = {"num_labels": n_labels} if get_kind(kind).labelled else {}
    config = AutoConfig.from_pretrained(path, **extra)
    with torch.device("meta"):
        base = auto_class(kind).from_config(config)
        method = for_task_kind(peft_config(peft), kind, base)
        if reads_data_before_wrapping(method):  # no data here: the same layers, default init
            method = copy.deepcopy(method)
            method.init_lora_weights = True
            method.corda_config = method.lora_ga_config = None
        model = _build(base, method, base_model)
    if max_length is not None:
        check_room(model, max_length)


def check_room(model: PeftModel, max_length: int) -> None:
    """Prompt learning puts its virtual tokens before the input: both must fit the model's
    position embeddings, or the forward pass fails on an index deep inside the model."""
    config = model.active_peft_config
    if not config.is_prompt_learning:
        return
    base = model.get_base_model().config
    positions = getattr(base, "max_position_embeddings", None) or getattr(base, "n_positions", None)
    if positions and max_length + config.num_virtual_tokens > positions:
        raise PeftConfigError(
            f"{method_name(config)}: {config.num_virtual_tokens} virtual tokens + max_length "
            f"{max_length} exceed the model's {positions} positions; lower --max-length"
        )


def _build(base: torch.nn.Module, config: PeftConfig, base_model: str | None) -> PeftModel:
    if getattr(config, "modules_to_save", None):
        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        config.modules_to_save = [m for m in config.modules_to_save if m in names]
    where = f"{method_name(config)} on {canonical_name(base_model)} ({base.config.model_type})"
    if getattr(config, "init_lora_weights", None) == "olora" and _has_conv1d(base):
        # peft 0.21's OLoRA ignores fan_in_fan_out: the model builds, then its first forward
        # pass fails on a shape mismatch (GPT-2's Conv1D stores weights transposed).
        raise PeftConfigError(f"{where} cannot be built: peft's OLoRA initialisation does not "
                              "handle Conv1D layers; use --peft pissa or lora")
    try:
        model = get_peft_model(base, config)
    except (TypeError, ValueError, KeyError, NotImplementedError) as exc:
        raise PeftConfigError(f"{where} cannot be built: {exc}") from exc
    saved = model.peft_config["default"]
    if isinstance(getattr(saved, "modules_to_save", None), list | set):
        # peft appends its task's head names (classifier, score) even when the list, read from a
        # saved adapter, already holds them: without this every warm start saved one copy more.
        saved.modules_to_save = list(dict.fromkeys(saved.modules_to_save))
    if saved.peft_type == PeftType.PREFIX_TUNING:
        _check_prefix_runs(model, where)
    return model


def _has_conv1d(base: torch.nn.Module) -> bool:
    return any(type(m).__name__ == "Conv1D" for m in base.modules())


def _check_prefix_runs(model: PeftModel, where: str) -> None:
    """Prefix tuning's fit shows only in the forward pass (peft then checks that the model's
    forward takes ``past_key_values``), so one token goes through. On the meta device the pass
    stops at the first step that needs values, past peft's check: that counts as running."""
    device = next(model.parameters()).device
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    extra = {"decoder_input_ids": ids} if model.get_base_model().config.is_encoder_decoder else {}
    try:
        with torch.no_grad():
            model(input_ids=ids, **extra)
    except ValueError as exc:
        raise PeftConfigError(
            f"{where} does not run: {exc} (peft passes the prefix as past_key_values; this "
            "model's forward names its cache differently or has none)"
        ) from exc
    except (RuntimeError, NotImplementedError):
        if device.type != "meta":
            raise


def fit_tokenizer(tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module):
    """``tokenizer`` padding the side ``model`` needs: left for prompt learning on a decoder.

    peft hands prompt-learning models embeddings, not ids, so a decoder's head reads the last
    position, which is the last real token only with left padding (peft's own examples pad GPT
    models on the left). Otherwise the tokenizer's own side is kept: transformers finds the last
    non-pad token on either side, and right padding keeps GPT-2's absolute positions as trained.
    """
    config = model.active_peft_config if isinstance(model, PeftModel) else None
    if (config is None or not config.is_prompt_learning or not reads_last_token(model)
            or tokenizer.padding_side == "left"):
        return tokenizer
    tokenizer = copy.copy(tokenizer)
    tokenizer.padding_side = "left"
    return tokenizer


