"""Classification heads: which module is the head, and where its input (the feature the
transferability metrics read) comes from."""

from __future__ import annotations

import torch
from peft import PeftModel

# Heads of transformers' *ForSequenceClassification models: encoders name theirs ``classifier``
# and read the first token (or a pooler), decoder-only models name theirs ``score`` and read the
# last non-pad token.
HEAD_MODULES = ("classifier", "score")


LAST_TOKEN_HEAD = "score"


def head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The classification head; :func:`pooled_head_input` turns its input into the feature."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    for name in HEAD_MODULES:
        module = getattr(inner, name, None)
        if module is not None:
            return module
    raise ValueError(f"{type(inner).__name__} has no classification head named {HEAD_MODULES}")


def reads_last_token(model: torch.nn.Module) -> bool:
    """Whether the model classifies from its last non-pad token (decoder-only models)."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return getattr(inner, LAST_TOKEN_HEAD, None) is not None


def pooled_head_input(
    model: torch.nn.Module, head_input: torch.Tensor, input_ids: torch.Tensor | None
) -> torch.Tensor:
    """One feature vector per example: the head input at the position the model's logits come
    from. A pooled input (BERT's pooler output) is that already. A decoder's head runs on every
    token and transformers keeps the rightmost token that is not padding (either padding side),
    or the last position when the model got embeddings instead of ids (prompt learning), so the
    same is taken here; an encoder head given token states (RoBERTa's) reads the first.
    ``input_ids`` is what the model itself was given (None for embeddings).
    """
    if head_input.ndim == 2:
        return head_input
    rows = torch.arange(head_input.shape[0], device=head_input.device)
    if not reads_last_token(model):
        return head_input[:, 0]
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    pad = getattr(inner.config, "pad_token_id", None)
    if input_ids is None or pad is None:
        return head_input[:, -1]
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    last = (positions * (input_ids != pad).to(torch.int32)).argmax(-1).to(head_input.device)
    return head_input[rows, last]
