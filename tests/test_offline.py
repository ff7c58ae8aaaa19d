"""Nothing at run time asks the Hub about the base model when it is not needed.

peft's ``get_peft_model_state_dict`` (and ``save_pretrained``) default to
``save_embedding_layers="auto"``, which looks the base model's config up on the Hub whenever the
recorded ``base_model_name_or_path`` is a Hub id rather than a local folder, as it is for the
embedded MiniLM: a network call per candidate (a failed lookup and two warnings offline). No
adapterpool adapter targets embeddings, so every call says ``save_embedding_layers=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "adapterpool"
CALLS = ("get_peft_model_state_dict", "save_pretrained")


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == name:
                    found.append((path, node))
    return found


@pytest.mark.parametrize("name", CALLS)
def test_peft_state_dicts_never_look_up_the_base_model_on_the_hub(name):
    calls = _calls(name)
    if name == "get_peft_model_state_dict":
        assert calls, "the scan found no call: it no longer sees the code it checks"
    for path, call in calls:
        if name == "save_pretrained" and not any(k.arg == "safe_serialization"
                                                 for k in call.keywords):
            continue  # tokenizers', configs' and our own save_pretrained take no such argument
        keywords = {k.arg: k.value for k in call.keywords}
        value = keywords.get("save_embedding_layers")
        assert isinstance(value, ast.Constant) and value.value is False, (
            f"{path.relative_to(SRC)}:{call.lineno}: {name} without "
            "save_embedding_layers=False asks the Hub about the base model")
