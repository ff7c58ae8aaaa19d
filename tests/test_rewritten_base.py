"""PiSSA/OLoRA/CorDA/LoRA-GA rewrite the base weights while training; saved, they are a plain
rank-2r LoRA that gives the trained model's outputs on the untouched base, head included (peft's
own conversion drops ``modules_to_save``)."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from adapterpool.errors import PeftConfigError
from adapterpool.models.build import base_classifier, load_tokenizer, new_model
from adapterpool.models.rewritten_base import initial_state, rewrites_base
from adapterpool.models.saving import load_for_inference, save_adapter
from adapterpool.peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from adapterpool.tasks import load_task
from adapterpool.training.standard import standard_lora_model
from adapterpool.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def task():
    return load_task("builtin:debate-role", max_train=32, max_eval=16, seed=0)


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _query_weight(model) -> torch.Tensor:
    bert = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer = bert.bert.encoder.layer[0].attention.self.query
    return getattr(layer, "base_layer", layer).weight.detach().clone()


@pytest.mark.parametrize("method", ["pissa", "olora", "corda", "lora-ga"])
def test_trained_adapter_saves_as_lora_on_the_plain_base(method, tiny_base_model, task, tmp_path):
    torch.manual_seed(0)
    plain = _query_weight(base_classifier(tiny_base_model, task.label_names))
    model = standard_lora_model(tiny_base_model, task.label_names, method, seed=0, task=task,
                                max_length=32)
    assert rewrites_base(model.active_peft_config)
    assert not torch.allclose(_query_weight(model), plain)  # trains on W - B0 A0, not W
    kept = initial_state(model)
    a0 = next(v for k, v in kept.items() if "query.lora_A" in k).clone()
    assert any("classifier" in k for k in kept)

    result = train(model, task, load_tokenizer(tiny_base_model),
                   TrainConfig(epochs=2, max_length=32, batch_size=16, patience=10),
                   measure_energy=False, show_progress=False)
    batch = load_tokenizer(tiny_base_model)(list(task.validation.text[:6]), padding=True,
                                            truncation=True, max_length=32,
                                            return_tensors="pt")
    before = _logits(result.model, batch)
    out = save_adapter(result.model, tmp_path / "adapter", {})
    torch.testing.assert_close(_logits(result.model, batch), before)  # saving changed nothing

    config = json.loads((out / ADAPTER_CONFIG).read_text())
    assert config["r"] == 2 * 16 and config["lora_alpha"] == 2 * 32
    assert config["init_lora_weights"] is True
    saved = load_file(str(out / ADAPTER_WEIGHTS))
    a = next(v for k, v in saved.items() if "query.lora_A" in k)
    assert a.shape[0] == 32 and torch.allclose(a[16:], a0)  # [A ; A0]
    head = next(v for k, v in saved.items() if k.endswith("classifier.weight"))
    live = result.model.get_base_model().classifier.modules_to_save["default"].weight
    torch.testing.assert_close(head, live.detach())

    reloaded = load_for_inference(tiny_base_model, task.label_names, out)
    torch.testing.assert_close(_logits(reloaded, batch), before, atol=1e-5, rtol=0)


def test_an_adapter_built_without_its_initial_factors_is_refused(tiny_base_model, task,
                                                                 tmp_path):
    base = base_classifier(tiny_base_model, task.label_names)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"],
                                            init_lora_weights="pissa", task_type="SEQ_CLS"))
    with pytest.raises(PeftConfigError, match="initial factors were not kept"):
        save_adapter(model, tmp_path / "adapter", {})


def test_other_initialisations_keep_nothing(tiny_base_model, task):
    model = new_model(tiny_base_model, task.label_names, "lora")
    assert not rewrites_base(model.active_peft_config)
    assert initial_state(model) is None


def test_the_loops_pissa_fallback_is_checked_up_front_and_pools_as_lora(tiny_base_model, task,
                                                                        tmp_path):
    """``--peft pissa`` as the loop's recipe: the up-front check builds it on the meta device,
    the fallback trains it, and its contribution is a LoRA the pool verifies and loads."""
    from adapterpool.config import AdaptConfig
    from adapterpool.loop.adapt import adapt
    from adapterpool.models.build import check_method
    from adapterpool.pool import AdapterPool
    from adapterpool.pool.maintenance import verify

    check_method(tiny_base_model, "pissa")
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_base_model)
    config = AdaptConfig(max_tries=0, fallback=TrainConfig(epochs=1, max_length=16))
    result = adapt(task, pool, config, peft="pissa", show_progress=False, measure_energy=False)
    assert result.outcome == "standard_lora"
    record = pool.add(result.save_adapter(tmp_path / "adapter"))
    assert verify(pool)["consistent"]
    saved = json.loads((pool.adapter_dir(record.id) / ADAPTER_CONFIG).read_text())
    assert saved["r"] == 32 and saved["init_lora_weights"] is True


@pytest.mark.parametrize("method", ["corda", "lora-ga"])
def test_data_driven_init_without_the_targets_data_is_refused(method, tiny_base_model, task):
    """CorDA and LoRA-GA build their factors from a pass over the target's data: a model built
    without it would start from nothing peft computed, so it is refused with the way to build it;
    the loop's up-front check (meta device, no data) still accepts the method."""
    from adapterpool.errors import UsageError
    from adapterpool.models.build import check_method

    with pytest.raises(PeftConfigError, match="standard_lora_model"):
        new_model(tiny_base_model, task.label_names, method)
    with pytest.raises(UsageError, match="needs the target's training data"):
        standard_lora_model(tiny_base_model, task.label_names, method, seed=0)
    check_method(tiny_base_model, method, len(task.label_names))
