"""Mechanism tests: the tensors and state behind warm start, best-weight restore and save/reload.

Each test compares tensors directly, so it fails when the mechanism breaks even if scores
happen to look plausible.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from adapterpool.models.build import load_tokenizer, new_model
from adapterpool.models.saving import save_adapter
from adapterpool.models.warm_start import warm_start_model
from adapterpool.peft_files import ADAPTER_WEIGHTS
from adapterpool.tasks import load_task
from adapterpool.training import trainer as training
from adapterpool.training.trainer import TrainConfig, train

TINY = TrainConfig(epochs=1, max_length=32)
MODULES_TO_SAVE = ("classifier", "pooler")


def _model_key(saved_key: str) -> str:
    """The model's state-dict name of a tensor saved in ``adapter_model.safetensors``.

    PEFT saves ``...lora_A.weight`` and ``...pooler.dense.weight``; in the live model the adapter
    name is inserted (``lora_A.default.weight``) and ``modules_to_save`` copies live under
    ``<module>.modules_to_save.default.``.
    """
    for lora in ("lora_A", "lora_B"):
        if f".{lora}." in saved_key:
            return saved_key.replace(f".{lora}.", f".{lora}.default.")
    for module in MODULES_TO_SAVE:
        if f".{module}." in saved_key:
            return saved_key.replace(f".{module}.", f".{module}.modules_to_save.default.")
    raise AssertionError(f"unexpected saved tensor {saved_key}")


def _is_head(key: str) -> bool:
    return ".classifier." in key


def _source(pool):
    """The first pool adapter, its saved tensors and its label names."""
    record = pool.list()[0]
    adapter_dir = pool.adapter_dir(record.id)
    return adapter_dir, load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS)), record.label_names


def _clone_state(model: PeftModel) -> dict[str, torch.Tensor]:
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _assert_states_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_warm_start_carries_lora_and_pooler_with_fresh_head(tiny_pool):
    """Guards warm_start_model: every LoRA tensor and the trained pooler copy come from the source
    adapter's file, while the classifier is a fresh head sized for the new (different) labels."""
    adapter_dir, saved, source_labels = _source(tiny_pool)
    new_labels = [f"new-{i}" for i in range(len(source_labels) + 1)]
    model = warm_start_model(tiny_pool.base_model, new_labels, adapter_dir)
    live = model.state_dict()

    body = {k: v for k, v in saved.items() if not _is_head(k)}
    assert any(".lora_A." in k for k in body) and any(".lora_B." in k for k in body)
    assert any(".pooler." in k for k in body)
    # lora_B starts at zero: a non-zero source B proves the comparison below is not vacuous.
    assert any(v.abs().sum() > 0 for k, v in body.items() if ".lora_B." in k)
    for key, tensor in body.items():
        assert torch.equal(live[_model_key(key)], tensor), key
    # The pooler copy differs from the frozen base pooler: the source's trained copy was loaded.
    pooler_w = "base_model.model.bert.pooler"
    assert not torch.equal(
        live[f"{pooler_w}.modules_to_save.default.dense.weight"],
        live[f"{pooler_w}.original_module.dense.weight"],
    )

    head = live["base_model.model.classifier.modules_to_save.default.weight"]
    source_head = saved["base_model.model.classifier.weight"]
    assert head.shape == (len(new_labels), source_head.shape[1])
    assert head.shape != source_head.shape
    # Fresh: the trainable copy is the newly initialised head, not anything from the source.
    assert torch.equal(head, live["base_model.model.classifier.original_module.weight"])
    assert model.config.num_labels == len(new_labels)
    # a warm start of a warm start saves the same module list, each module once
    saved_list = model.peft_config["default"].modules_to_save
    assert len(saved_list) == len(set(saved_list)) and {"classifier", "pooler"} <= set(saved_list)


def test_warm_start_same_labels_head_fresh_unless_keep_head(tiny_pool):
    """Guards the keep_head switch: with the source's own label names the head is fresh by default
    and equals the source's saved classifier (weight and bias) only with ``keep_head=True``."""
    adapter_dir, saved, labels = _source(tiny_pool)
    heads = {k: v for k, v in saved.items() if _is_head(k)}
    assert len(heads) == 2  # weight and bias

    fresh = warm_start_model(tiny_pool.base_model, labels, adapter_dir).state_dict()
    kept = warm_start_model(tiny_pool.base_model, labels, adapter_dir, keep_head=True).state_dict()
    for key, tensor in heads.items():
        assert fresh[_model_key(key)].shape == tensor.shape
        assert torch.equal(kept[_model_key(key)], tensor), key
    assert not torch.equal(
        fresh["base_model.model.classifier.modules_to_save.default.weight"],
        saved["base_model.model.classifier.weight"],
    )
    # The body is carried in both cases.
    for key, tensor in saved.items():
        if not _is_head(key):
            assert torch.equal(fresh[_model_key(key)], tensor), key
            assert torch.equal(kept[_model_key(key)], tensor), key


def test_train_restores_best_weights_not_last(tiny_base_model, monkeypatch):
    """Guards best-weight restore: when the first evaluation scores best, train() returns the
    model with the PEFT state recorded at that evaluation, not the last (different) one."""
    task = load_task("builtin:debate-role", max_train=32, max_eval=16)
    model = new_model(tiny_base_model, task.label_names, "lora")
    real_evaluate = training.evaluate
    calls = itertools.count()

    def rigged_evaluate(*args, **kwargs):
        scores = real_evaluate(*args, **kwargs)
        value = 0.9 if next(calls) == 0 else 0.1  # best at the first evaluation, worse after
        return {name: value for name in scores}

    monkeypatch.setattr(training, "evaluate", rigged_evaluate)
    recorded: list[dict[str, torch.Tensor]] = []

    def record(history, config):
        recorded.append(_clone_state(model))
        return None

    config = TrainConfig(
        epochs=1, max_length=32, batch_size=8, evals_per_epoch=4, patience=100
    )
    result = train(
        model, task, load_tokenizer(tiny_base_model), config,
        measure_energy=False, show_progress=False, stop_rule=record,
    )
    assert len(result.history) == len(recorded) >= 3
    assert result.best_step == result.history[0]["step"]
    assert result.stop_reason == "budget"
    # Training moved the weights, so "best" and "last" are distinguishable.
    assert not _states_equal(recorded[0], recorded[-1])
    final = _clone_state(result.model)
    _assert_states_equal(final, recorded[0])
    assert not _states_equal(final, recorded[-1])


def test_save_adapter_reload_gives_identical_logits(tiny_base_model, tmp_path):
    """Guards save_adapter: PEFT's own loader on the saved folder rebuilds the trained model
    exactly (LoRA, pooler and head), as peft's _test_save_pretrained checks."""
    task = load_task("builtin:debate-role", max_train=32, max_eval=16)
    tokenizer = load_tokenizer(tiny_base_model)
    model = new_model(tiny_base_model, task.label_names, "lora")
    trained = train(model, task, tokenizer, TINY, measure_energy=False, show_progress=False).model
    out = save_adapter(trained, tmp_path / "adapter", {"label_names": list(task.label_names)})

    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_base_model, num_labels=len(task.label_names)
    )
    reloaded = PeftModel.from_pretrained(base, str(out))
    batch = tokenizer(
        task.validation.text[:4], padding=True, truncation=True, max_length=32,
        return_tensors="pt",
    )
    trained.eval()
    reloaded.eval()
    with torch.no_grad():
        expected = trained(**batch).logits
        actual = reloaded(**batch).logits
        with reloaded.disable_adapter():
            bare = reloaded(**batch).logits
    assert expected.shape == (4, len(task.label_names))
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    # The adapter matters: without it the logits differ, so the match above is not vacuous.
    assert not torch.allclose(bare, expected, atol=1e-4)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def test_energy_meter_counts_cpu_time_apart_from_wall_time():
    """CPU seconds are this process's work: a sleep adds wall time and almost no CPU time, a busy
    loop adds both (what time_measure "cpu" divides)."""
    import time

    from adapterpool.training.energy import EnergyMeter

    with EnergyMeter(enabled=False) as idle:
        time.sleep(0.3)
    assert idle.reading.seconds >= 0.3 and idle.reading.cpu_seconds < 0.1
    with EnergyMeter(enabled=False) as busy:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    assert busy.reading.cpu_seconds >= 0.3
    assert (idle.reading + busy.reading).cpu_seconds == pytest.approx(
        idle.reading.cpu_seconds + busy.reading.cpu_seconds)
