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
# save_pretrained calls that do not save a PEFT model (so take no save_embedding_layers), by file
# and the name they are called on, each with why. Every other call must pass the argument, so a
# new call is checked until it is listed here with a reason.
NOT_PEFT = {
    ("models/base_model.py", "model"): "build_encoder_decoder saves a plain transformers model",
    ("models/base_model.py", "tokenizer"): "a tokenizer",
}


def _receiver(call: ast.Call) -> str:
    func = call.func
    value = func.value if isinstance(func, ast.Attribute) else None
    return value.id if isinstance(value, ast.Name) else ast.unparse(value) if value else ""


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
    assert calls, "the scan found no call: it no longer sees the code it checks"
    exempt = set()
    for path, call in calls:
        where = (path.relative_to(SRC).as_posix(), _receiver(call))
        if name == "save_pretrained" and where in NOT_PEFT:
            exempt.add(where)
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        value = keywords.get("save_embedding_layers")
        assert isinstance(value, ast.Constant) and value.value is False, (
            f"{path.relative_to(SRC)}:{call.lineno}: {name} without "
            "save_embedding_layers=False asks the Hub about the base model")
    if name == "save_pretrained":
        assert exempt == set(NOT_PEFT), f"stale NOT_PEFT entries: {set(NOT_PEFT) - exempt}"
