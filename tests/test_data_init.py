"""``--peft eva``: the data-driven step runs wherever a fresh adapter is built for a task."""

from __future__ import annotations

import pytest
import torch

from adapterpool.config import AdaptConfig
from adapterpool.errors import UsageError
from adapterpool.loop.adapt import adapt
from adapterpool.models.peft_methods import method_name, peft_config
from adapterpool.pool import AdapterPool
from adapterpool.tasks import load_task
from adapterpool.training import data_init
from adapterpool.training.standard import standard_lora_model
from adapterpool.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def task():
    return load_task("builtin:debate-role", max_train=32, max_eval=16, seed=0)


def _lora_a(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_A" in k}


def test_eva_sets_a_from_the_targets_inputs(tiny_base_model, task):
    """EVA's A rows are unit-norm singular vectors of the layer inputs, and they depend on the
    data: another task's inputs give another A (placeholders would not)."""
    model = standard_lora_model(tiny_base_model, task.label_names, "eva", seed=0, task=task,
                                max_length=16)
    assert method_name(model.active_peft_config) == "eva"
    a = _lora_a(model)
    assert a
    for v in a.values():
        assert torch.allclose(v.norm(dim=1), torch.ones(v.shape[0]), atol=1e-3)
    other = load_task("builtin:movie-sentiment", max_train=32, max_eval=16, seed=0)
    b = _lora_a(standard_lora_model(tiny_base_model, other.label_names, "eva", seed=0,
                                    task=other, max_length=16))
    assert any(not torch.allclose(a[k].abs(), b[k].abs(), atol=1e-3) for k in a)


def test_eva_without_data_is_refused_and_plain_lora_reads_none(tiny_base_model, task,
                                                               monkeypatch):
    with pytest.raises(UsageError, match="needs the target's training data"):
        standard_lora_model(tiny_base_model, task.label_names, "eva", seed=0)
    called = []
    monkeypatch.setattr("adapterpool.training.standard.initialize_from_data",
                        lambda *a, **k: called.append(a))
    standard_lora_model(tiny_base_model, task.label_names, "lora", seed=0, task=task)
    assert called == []
    assert not data_init.needs_data(peft_config("lora"))
    assert data_init.needs_data(peft_config("eva"))


def test_the_loops_fallback_initialises_eva_from_the_target(tiny_base_model, task, tmp_path,
                                                            monkeypatch):
    """adapt with --peft eva and no candidate: the fallback's model went through EVA's pass
    over this very task."""
    seen = []
    real = data_init.initialize_from_data

    def spy(model, given, *args, **kwargs):
        seen.append(given)
        return real(model, given, *args, **kwargs)

    monkeypatch.setattr("adapterpool.training.standard.initialize_from_data", spy)
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_base_model)
    config = AdaptConfig(max_tries=0, fallback=TrainConfig(epochs=1, max_length=16))
    result = adapt(task, pool, config, peft=peft_config("eva"), show_progress=False,
                   measure_energy=False)
    assert result.outcome == "standard_lora"
    assert seen == [task]
    assert result.report["attempts"][0]["kind"] == "standard_lora"
