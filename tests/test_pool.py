"""The local pool: PEFT-format entries, catalog, and refusals that change nothing."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import adapterpool
from adapterpool.pool import AdapterPool, AdapterRejected, DuplicateAdapterError, PoolError


@pytest.fixture()
def exported(pool_copy, tmp_path) -> Path:
    """A copy of one pool adapter outside the pool, as a contributor would hand it in."""
    record = pool_copy.list()[0]
    target = tmp_path / "incoming"
    shutil.copytree(pool_copy.adapter_dir(record.id), target)
    return target


def _snapshot(pool: AdapterPool) -> tuple:
    files = sorted(str(p.relative_to(pool.path)) for p in (pool.path / "adapters").rglob("*"))
    return [r.as_json() for r in pool.list()], files


def test_pool_entries_are_peft_format_with_catalog_fields(tiny_pool):
    records = tiny_pool.list()
    assert {r.task_name for r in records} == {"subjectivity", "debate-role", "word-sense"}
    for record in records:
        folder = tiny_pool.adapter_dir(record.id)
        assert {p.name for p in folder.iterdir()} >= {
            "adapter_config.json", "adapter_model.safetensors"}
        assert record.peft_type == "LORA" and record.base_model == tiny_pool.base_model
        assert len(record.sha256) == 64 and record.size_bytes > 0
        assert record.metrics["validation"]["accuracy"] >= 0
        assert record.train_seconds > 0
    word_sense = next(r for r in records if r.task_name == "word-sense")
    assert word_sense.task_kind == "pair" and word_sense.label_names == ["different", "same"]


def test_not_a_pool_and_init_twice(tmp_path, tiny_pool):
    with pytest.raises(PoolError, match="not an adapter pool.*pool init"):
        AdapterPool(tmp_path)
    with pytest.raises(PoolError, match="already a pool"):
        AdapterPool.init(tiny_pool.path)


def test_duplicate_weights_are_refused(pool_copy, exported):
    before = _snapshot(pool_copy)
    with pytest.raises(DuplicateAdapterError, match="already in the pool as"):
        pool_copy.add(exported)
    assert _snapshot(pool_copy) == before
    assert not any((pool_copy.path / ".staging").iterdir())


def test_remove(pool_copy):
    record = pool_copy.list()[0]
    pool_copy.remove(record.id)
    assert record.id not in {r.id for r in pool_copy.list()}
    assert not (pool_copy.path / "adapters" / record.id).exists()
    with pytest.raises(PoolError, match="no adapter"):
        pool_copy.get(record.id)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickle_weights_are_refused_and_never_unpickled(pool_copy, exported, tmp_path):
    marker = tmp_path / "pwned"
    before = _snapshot(pool_copy)
    (exported / "adapter_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(AdapterRejected, match="pickle-based weights are refused"):
        pool_copy.add(exported)
    (exported / "adapter_model.bin").unlink()
    (exported / "adapter_model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(AdapterRejected, match="is a pickle, not safetensors"):
        pool_copy.add(exported)
    assert not marker.exists()
    assert _snapshot(pool_copy) == before


def test_adapter_for_another_base_model_is_refused(pool_copy, exported):
    config_path = exported / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "bert-base-uncased"
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterRejected, match="trained on base model 'bert-base-uncased'"):
        pool_copy.add(exported)


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora"])
def test_an_unconverted_pissa_or_olora_adapter_is_refused(pool_copy, exported, init):
    """Its factors apply to the base model PiSSA/OLoRA rewrote, not to the pool's: refused with
    how to save it converted, and the pool is unchanged."""
    before = [r.id for r in pool_copy.list()]
    config_path = exported / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["init_lora_weights"] = init
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterRejected, match=f"init_lora_weights '{init}'.*converted"):
        pool_copy.add(exported)
    assert [r.id for r in pool_copy.list()] == before


def test_wrong_tensor_shapes_are_refused(pool_copy, exported):
    from safetensors.torch import load_file, save_file

    weights = exported / "adapter_model.safetensors"
    state = load_file(weights)
    key = next(k for k in state if "lora_A" in k)
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, weights)
    with pytest.raises(AdapterRejected, match="has shape .* another base model"):
        pool_copy.add(exported)


def test_label_count_must_match_head(pool_copy, exported):
    meta = json.loads((exported / "adapterpool.json").read_text())
    meta["task"]["label_names"] = meta["task"]["label_names"] + ["extra"]
    (exported / "adapterpool.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterRejected, match="classifier.*has shape"):
        pool_copy.add(exported)


def test_adapter_whose_task_type_contradicts_its_kind_is_refused(pool_copy, exported):
    """A SEQ_CLS adapter declared text2text (e.g. ``pool import --kind text2text``) would be a
    catalog entry no loop can warm-start: refused, and the pool unchanged."""
    meta = json.loads((exported / "adapterpool.json").read_text())
    meta["task"] |= {"kind": "text2text", "label_names": []}
    (exported / "adapterpool.json").write_text(json.dumps(meta))
    before = _snapshot(pool_copy)
    with pytest.raises(AdapterRejected, match="'SEQ_CLS' is not a text2text adapter's"):
        pool_copy.add(exported)
    assert _snapshot(pool_copy) == before


@pytest.mark.parametrize("bad_meta, message", [
    ({}, "needs a 'task' block"),
    ({"task": {"name": "x", "kind": "triple", "label_names": ["a", "b"]}}, "'kind' must be"),
    ({"task": {"name": "x", "kind": "single", "label_names": ["a"]}}, "label_names"),
])
def test_metadata_is_required(pool_copy, exported, bad_meta, message):
    with pytest.raises(AdapterRejected, match=message):
        pool_copy.add(exported, meta=bad_meta)


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "..", "UPPER", "x" * 200, ""])
def test_ids_cannot_escape_the_pool(pool_copy, exported, bad_id):
    with pytest.raises(AdapterRejected, match="invalid adapter id"):
        pool_copy.add(exported, adapter_id=bad_id)
    with pytest.raises(AdapterRejected, match="invalid adapter id"):
        pool_copy.get(bad_id)


def test_sample_is_seeded(tiny_pool):
    ids = lambda seed: [r.id for r in tiny_pool.sample(2, seed)]  # noqa: E731
    assert ids(0) == ids(0)
    assert len(set(ids(0))) == 2
    assert {tuple(ids(s)) for s in range(10)} != {tuple(ids(0))}
    assert len(tiny_pool.sample(10, 0)) == 3


def _plain_peft_adapter(base_folder: str, out: Path) -> Path:
    """A LoRA adapter made with plain peft on a model loaded from ``base_folder`` by path."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(base_folder, num_labels=2)
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query"]))
    model.save_pretrained(out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        base_folder)
    return out


META = {"task": {"name": "plain-peft", "kind": "single", "label_names": ["neg", "pos"]}}


def test_packaged_model_folder_is_the_default_base_model(tmp_path):
    """An adapter built on the packaged MiniLM loaded by path fits a pool for the default model:
    recognised by the weights' fingerprint, recorded under the pool's name."""
    from adapterpool.models.base_model import DEFAULT_BASE_MODEL, resolve_base_model

    pool = AdapterPool.init(tmp_path / "pool")
    adapter = _plain_peft_adapter(resolve_base_model(None), tmp_path / "adapter")
    record = pool.add(adapter, meta=META)
    assert record.base_model == DEFAULT_BASE_MODEL
    stored = json.loads((pool.adapter_dir(record.id) / "adapter_config.json").read_text())
    assert stored["base_model_name_or_path"] == DEFAULT_BASE_MODEL


def test_a_local_folder_with_other_weights_is_refused(pool_copy, tmp_path):
    """Same architecture and config as the pool's tiny model, different weights: refused."""
    import torch
    from transformers import AutoModel

    other = tmp_path / "other-model"
    model = AutoModel.from_pretrained(pool_copy.base_model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(other)
    adapter = _plain_peft_adapter(str(other), tmp_path / "adapter")
    before = _snapshot(pool_copy)
    with pytest.raises(AdapterRejected, match="trained on base model .*other-model"):
        pool_copy.add(adapter, meta=META)
    assert _snapshot(pool_copy) == before
    same = tmp_path / "same-model"  # a copy of the pool's own model folder is accepted
    shutil.copytree(pool_copy.base_model, same)
    record = pool_copy.add(_plain_peft_adapter(str(same), tmp_path / "adapter2"), meta=META)
    assert record.base_model == pool_copy.base_model


def test_listing_and_exporting_a_pool_loads_no_deep_learning_framework(tiny_pool, tmp_path):
    """The storage layer builds no model: its shape check is handed to it by the model layer,
    so a script that lists or exports adapters never imports torch (checked in a fresh
    interpreter, since this one has torch loaded already)."""
    script = (
        "import sys\n"
        "import adapterpool.pool\n"
        "from adapterpool.pool import AdapterPool\n"
        "from adapterpool.pool.maintenance import export\n"
        f"pool = AdapterPool({str(tiny_pool.path)!r})\n"
        "records = pool.list()\n"
        f"export(pool, records[0].id, {str(tmp_path / 'out')!r})\n"
        "loaded = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print(len(records))\n"
    )
    source = str(Path(adapterpool.__file__).parents[1])  # this tree, not an installed copy
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": source})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(tiny_pool.list()))
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_the_pool_checks_shapes_with_the_check_it_is_given(pool_copy, exported):
    calls = []

    def refuse_everything(base_model: str, config: str, n_labels: int, kind: str) -> dict:
        calls.append((base_model, n_labels, kind))
        return {}  # no tensor exists on this "base model"

    pool = AdapterPool(pool_copy.path, shape_check=refuse_everything)
    with pytest.raises(AdapterRejected, match="does not exist in the pool's base model"):
        pool.add(exported, adapter_id="other")
    assert calls and calls[0][0] == pool.base_model
