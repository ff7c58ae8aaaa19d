"""The ``image`` task kind on a tiny random ViT: loading (ImageFolder layout, split files,
``builtin:digits``), bad images, the model (LoRA on query/value, head trained), save/reload,
warm start, scoring features, pool compatibility and the loop end to end.

Assertions compare tensors, orders and records, so they fail when pixels are prepared otherwise
than by the model's processor, when a saved tensor is dropped, or when a candidate of another
kind is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from PIL import Image

from adapterpool import AdaptConfig, adapt
from adapterpool.cli.main import main
from adapterpool.contributing import contribute
from adapterpool.errors import TaskDataError, UsageError
from adapterpool.models.build import base_classifier, load_preprocessor, new_model
from adapterpool.models.saving import save_adapter
from adapterpool.models.warm_start import warm_start_model
from adapterpool.pool import AdapterPool
from adapterpool.ranking.rank import rank
from adapterpool.ranking.scoring import candidate_outputs
from adapterpool.tasks import load_task
from adapterpool.tasks.images import open_image
from adapterpool.training.encoding import EncodedRecords, train_loader
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TrainConfig(epochs=1, batch_size=8, evals_per_epoch=1, patience=5)
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200), "owl": (40, 200, 40)}


def _write_image(path: Path, colour, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (12, 12, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _image_folder(root: Path, per_class: int = 6, classes=("cat", "dog")) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for cls in classes:
            for i in range(n):
                _write_image(root / split / cls / f"{cls}{i}.png", COLOURS[cls], rng)
    return root


@pytest.fixture(scope="module")
def digits():
    return load_task("builtin:digits", max_train=40, max_eval=16, seed=0)


def test_image_folder_layout_loads_classes_by_sorted_folder_name(tmp_path):
    task = load_task(_image_folder(tmp_path / "pets", classes=("dog", "cat")))
    assert task.kind == "image" and task.label_names == ("cat", "dog")
    assert len(task.train) + len(task.validation) == 12 and len(task.test) == 4
    assert "validation carved from train (10%, stratified, seed 0)" in task.notes
    for path, label in zip(task.train.image, task.train.label, strict=True):
        assert Path(path).parent.name == task.label_names[label]


def test_image_split_files_resolve_paths_against_the_task_folder(tmp_path):
    root = _image_folder(tmp_path / "pets")
    rows = [{"image": f"train/{c}/{c}{i}.png", "label": c} for c in ("dog", "cat")
            for i in range(3)]
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"task_type": "image"}))
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for rel in {r["image"] for r in rows}:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes((root / rel).read_bytes())
    task = load_task(folder)
    assert task.label_names == ("cat", "dog")  # string labels, sorted
    everything = task.train.image + task.validation.image
    assert sorted(everything) == sorted(str(folder / r["image"]) for r in rows)


def test_corrupt_missing_and_one_class_images_are_named(tmp_path):
    root = _image_folder(tmp_path / "bad")
    (root / "train" / "dog" / "dog3.png").write_bytes(b"not a png at all")
    with pytest.raises(TaskDataError, match=r"dog3\.png cannot be read"):
        load_task(root)
    (root / "train" / "dog" / "dog3.png").unlink()
    (root / "train" / "dog" / "notes.txt").write_text("x")
    with pytest.raises(TaskDataError, match=r"notes\.txt is not an image file"):
        load_task(root)
    one = _image_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(TaskDataError, match=r"at least two label names, got \['cat'\]"):
        load_task(one)
    files = tmp_path / "files"
    files.mkdir()
    (files / "meta.json").write_text(json.dumps({"task_type": "image"}))
    (files / "train.jsonl").write_text(json.dumps({"image": "gone.png", "label": 0}) + "\n"
                                       + json.dumps({"picture": "x.png", "label": 1}))
    with pytest.raises(TaskDataError, match=r"gone\.png does not exist"):
        load_task(files)
    (files / "train.jsonl").write_text(json.dumps({"picture": "x.png", "label": 1}))
    with pytest.raises(TaskDataError, match="no column 'image'.*--image-field"):
        load_task(files)


def test_builtin_digits_are_seeded_stratified_images(digits):
    again = load_task("builtin:digits", max_train=40, max_eval=16, seed=0)
    assert digits.kind == "image" and digits.num_labels == 10
    assert sorted(set(digits.train.label)) == list(range(10))
    first = np.asarray(digits.train.image[0])
    assert first.shape == (8, 8) and np.array_equal(first, np.asarray(again.train.image[0]))


def test_pixels_come_from_the_models_own_processor(tiny_vit_model, digits):
    processor = load_preprocessor(tiny_vit_model, "image")
    data = EncodedRecords(digits.train, processor, max_length=32)
    expected = processor(images=[open_image(digits.train.image[3])],
                         return_tensors="pt")["pixel_values"][0]
    assert data.inputs == "image" and torch.equal(data[3]["pixel_values"], expected)
    assert data[3]["labels"] == digits.train.label[3]
    # processed on access: the dataset holds the images as given, no pixel tensors
    assert all(set(f) == {"image", "labels"} for f in data.features)
    batch = next(iter(train_loader(data, processor, 8, seed=0)))
    assert batch["pixel_values"].shape == (8, 3, 16, 16) and batch["labels"].dtype == torch.long


def test_lora_on_query_value_head_trained_saved_reloaded(tiny_vit_model, digits, tmp_path):
    result = train_standard(digits, tiny_vit_model, TINY, show_progress=False,
                            measure_energy=False)
    model = result.model
    config = model.peft_config["default"]
    assert config.task_type is None and sorted(config.target_modules) == ["q_proj", "v_proj"]
    trained = get_peft_model_state_dict(model)
    assert any(".classifier." in k for k in trained)  # the head travels with the adapter
    assert all(("lora_" in k and (".q_proj." in k or ".v_proj." in k)) or ".classifier." in k
               for k in trained)
    fresh = get_peft_model_state_dict(new_model(tiny_vit_model, digits.label_names, kind="image"))
    assert not torch.equal(trained[next(k for k in trained if "lora_B" in k)],
                           fresh[next(k for k in fresh if "lora_B" in k)])
    assert set(result.validation) == {"accuracy", "f1_macro", "f1_weighted"}
    folder = save_adapter(model, tmp_path / "adapter", {"task": digits.describe()})
    pixels = EncodedRecords(digits.validation, load_preprocessor(tiny_vit_model, "image"), 32)
    batch = torch.stack([pixels[i]["pixel_values"] for i in range(4)])
    reloaded = PeftModel.from_pretrained(
        base_classifier(tiny_vit_model, digits.label_names, "image"), str(folder)).eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(pixel_values=batch).logits,
                              model(pixel_values=batch).logits, atol=1e-6)
    warm = warm_start_model(tiny_vit_model, digits.label_names, folder, kind="image")
    carried = get_peft_model_state_dict(warm)
    for key, value in trained.items():
        same = torch.equal(carried[key], value)
        assert same != (".classifier." in key), key  # LoRA carried, head fresh


def test_scoring_features_are_the_head_input(tiny_vit_model, digits):
    model = base_classifier(tiny_vit_model, digits.label_names, "image").eval()
    data = EncodedRecords(digits.train, load_preprocessor(tiny_vit_model, "image"), 32)
    out = candidate_outputs(model, data, None, batch_size=16, layer_mean=True)
    pixels = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
    with torch.no_grad():
        states = model.vit(pixel_values=pixels).last_hidden_state
        expected = states[:, 0]  # ViT's classifier reads the [CLS] position
        logits = model.classifier(expected)
    assert np.allclose(out.features, expected.numpy(), atol=1e-5)
    assert np.allclose(out.source_probs, torch.softmax(logits.double(), -1).numpy(), atol=1e-6)
    assert out.layer_features.shape == (len(data), 32)


@pytest.fixture(scope="module")
def vit_pool(tmp_path_factory, tiny_vit_model, tiny_base_model):
    """A ViT pool with one image adapter, and a text adapter's catalog entry forced into it."""
    pool = AdapterPool.init(tmp_path_factory.mktemp("vit") / "pool", base_model=tiny_vit_model)
    task = load_task("builtin:digits", max_train=40, max_eval=16, seed=1)
    result = train_standard(task, tiny_vit_model, TINY, show_progress=False,
                            measure_energy=False)
    record = contribute(pool, task, result)
    assert record.task_kind == "image" and record.peft_config["task_type"] is None
    assert not (pool.adapter_dir(record.id) / "task_embedding.safetensors").exists()
    return pool


def test_candidates_are_drawn_only_from_the_targets_kind(vit_pool, digits, entry_of_kind):
    image_id = vit_pool.list()[0].id
    with entry_of_kind(vit_pool, "single"):  # a text adapter's entry, as a mixed pool holds
        ranking = rank(digits, vit_pool, "knn", subset=5, peft_type="LORA", show_progress=False,
                       measure_energy=False)
    assert ranking.subset == [image_id] and ranking.incompatible == {"task_kind": 1}
    assert np.isfinite(ranking.scores[0].scores["knn"])
    with pytest.raises(UsageError, match="prefilter.*image tasks have none"):
        rank(digits, vit_pool, "knn", subset_strategy="prefilter", show_progress=False)


def test_adapt_transfers_contributes_and_falls_back(vit_pool, digits, tmp_path):
    n_before = len(vit_pool.list())
    config = AdaptConfig(subset=2, max_tries=1, threshold=0.0, transfer_epochs=1,
                         fallback=TINY, contribute=True)
    result = adapt(digits, vit_pool, config, show_progress=False, measure_energy=False,
                   out_dir=tmp_path / "run")
    assert result.outcome == "transfer" and result.attempts[0].adapter_id == vit_pool.list()[0].id
    contributed = vit_pool.get(result.report["contributed_adapter_id"])
    assert contributed.task_kind == "image" and len(vit_pool.list()) == n_before + 1
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["task"]["kind"] == "image" and report["threshold"]["metric"] == "accuracy"
    code = main(["adapt", "builtin:digits", "--pool", str(vit_pool.path), "--max-train", "40",
                 "--max-eval", "16", "--subset", "1", "--max-tries", "1", "--threshold", "1.01",
                 "--epochs", "1", "--standard-epochs", "1", "--batch-size", "8",
                 "--threshold-metric", "f1_macro", "--no-energy", "--json", "--contribute",
                 "--out", str(tmp_path / "cli")])
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert code == 0 and report["outcome"] == "failed"
    assert [a["kind"] for a in report["attempts"]] == ["transfer", "standard_lora"]
    assert report["contributed_adapter_id"] is None and len(vit_pool.list()) == n_before + 1
    assert report["threshold"] == {"metric": "f1_macro", "value": 1.01}


def test_reindex_leaves_image_adapters_without_a_text_summary(vit_pool):
    from adapterpool.ranking.reindex import reindex

    report = reindex(vit_pool, show_progress=False)
    assert report.not_applicable == len(vit_pool.list()) and report.already == 0
    assert not report.computed and not report.failed


def test_a_base_model_without_the_kinds_model_class_is_refused(tiny_base_model, vit_pool,
                                                               tmp_path):
    from adapterpool.errors import BaseModelError

    text_pool = AdapterPool.init(tmp_path / "text", base_model=tiny_base_model)
    digits = load_task("builtin:digits", max_train=20, max_eval=10)
    with pytest.raises(BaseModelError, match=r"\(bert\) has no AutoModelForImageClassification"):
        rank(digits, text_pool, "knn", show_progress=False)
    with pytest.raises(BaseModelError, match=r"\(vit\) has no AutoModelForSequenceClassification"):
        adapt(load_task("builtin:subjectivity", max_train=20, max_eval=10), vit_pool,
              AdaptConfig(max_tries=0), show_progress=False, measure_energy=False)
