"""Text-to-text on the built encoder-decoder learns what the recipe leaves fresh, scores against
every reference, and is benchmarked like classification.

On a tiny BERT2BERT (built from the tiny random BERT exactly as ``adapterpool encoder-decoder``
builds MiniLM2MiniLM) the tests assert mechanism: the decoder's fresh cross-attention and LM-head
transform are trainable beside the LoRA layers (never LoRA-wrapped), change in a training step,
are saved in the adapter file and come back on warm start; a build is seeded. Metrics against
several references take the best one; the trivial baselines are scored like generations; a
text2text bench runs, resumes and writes the summary tools read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import BenchRun
from adapterpool.errors import TaskDataError, UsageError
from adapterpool.models.base_model import base_model_fingerprint, build_encoder_decoder
from adapterpool.models.build import load_preprocessor, new_model
from adapterpool.models.saving import save_adapter
from adapterpool.models.warm_start import warm_start_model
from adapterpool.tasks import load_task
from adapterpool.training.encoding import EncodedRecords, train_loader
from adapterpool.training.generation import (
    chrf,
    exact_match,
    reference_texts,
    rouge_l,
    trivial_baselines,
)
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TrainConfig(epochs=1, batch_size=8, max_length=16, evals_per_epoch=1, patience=5,
                   selection_metric="rouge_l", max_new_tokens=4)
FRESH = (".crossattention.", ".transform.")


@pytest.fixture(scope="module")
def bert2bert(tmp_path_factory, tiny_base_model) -> str:
    return str(build_encoder_decoder(tmp_path_factory.mktemp("b2b") / "ed", tiny_base_model))


def _table_task(root: Path, name: str, n: int = 24, shift: int = 0) -> Path:
    """A table-to-text folder: validation and test rows carry several references."""
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"name": name, "task_type": "text2text"}))
    rows = [{"text": f"name[item {i}], colour[c{(i + shift) % 3}]",
             "target": f"item {i} is c{(i + shift) % 3}"} for i in range(n)]
    pd.DataFrame(rows).to_json(root / "train.jsonl", orient="records", lines=True)
    for split in ("validation", "test"):
        held = [r | {"references": [r["target"], f"the colour of item {i} is c{i % 3}"]}
                for i, r in enumerate(rows[:6])]
        pd.DataFrame(held).to_json(root / f"{split}.jsonl", orient="records", lines=True)
    return root


def test_a_build_is_seeded(tiny_base_model, bert2bert, tmp_path):
    again = build_encoder_decoder(tmp_path / "again", tiny_base_model)
    assert base_model_fingerprint(str(again)) == base_model_fingerprint(bert2bert) | {
        "name": str(again.resolve())}
    other = build_encoder_decoder(tmp_path / "other", tiny_base_model, seed=1)
    assert (base_model_fingerprint(str(other))["weights_sha256"]
            != base_model_fingerprint(bert2bert)["weights_sha256"])


def test_fresh_modules_train_beside_lora_and_travel_with_the_adapter(bert2bert, tmp_path):
    task = load_task(_table_task(tmp_path / "t", "t"), seed=0)
    model = new_model(bert2bert, [], kind="text2text")
    config = model.peft_config["default"]
    assert sorted(config.modules_to_save) == ["crossattention", "transform"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = {n for n in trainable if any(f in n for f in FRESH)}
    # trained in full (peft's modules_to_save copy), not low-rank
    assert any(".crossattention.modules_to_save.default.self.key." in n for n in fresh)
    assert any(".transform.modules_to_save.default.dense." in n for n in fresh)
    assert not any("lora_" in n for n in fresh)  # no LoRA inside a module trained in full
    assert any("lora_" in n and ".attention.self.query" in n for n in trainable)
    assert not any(any(f in n for f in FRESH) for n, p in model.named_parameters()
                   if not p.requires_grad and "modules_to_save" in n)

    tokenizer = load_preprocessor(bert2bert, "text2text")
    batch = next(iter(train_loader(EncodedRecords(task.train, tokenizer, 16), tokenizer, 8, 0)))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in fresh}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if n in fresh
               and not torch.equal(p.detach(), before[n])]
    assert any(".crossattention." in n for n in changed) and any(".transform." in n
                                                                 for n in changed)

    folder = save_adapter(model, tmp_path / "adapter", {})
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert any(".crossattention." in k for k in saved) and any(".transform." in k for k in saved)
    warm = warm_start_model(bert2bert, [], folder, kind="text2text")
    assert sorted(warm.peft_config["default"].modules_to_save) == ["crossattention", "transform"]
    warm_params = dict(warm.named_parameters())
    for name in changed:
        assert torch.equal(warm_params[name].detach(), dict(model.named_parameters())[name])


def test_references_are_read_and_every_one_counts(bert2bert, tmp_path):
    task = load_task(_table_task(tmp_path / "t", "t"), seed=0)
    assert task.train.references is None and len(task.test.references[0]) == 2
    assert task.test.references[0][0] == task.test.target[0]
    tokenizer = load_preprocessor(bert2bert, "text2text")
    refs = reference_texts(EncodedRecords(task.test, tokenizer, 16), tokenizer)
    assert refs[1] == ["item 1 is c1", "the colour of item 1 is c1"]  # uncased round trip
    assert rouge_l([["a b c", "x y z"]], ["x y z"]) == 1.0  # the best reference
    assert exact_match([["a b", "x y"]], ["X  y"]) == 1.0
    assert chrf([["abc", "xyz"], ["def"]], ["xyz", "def"]) == pytest.approx(1.0)
    assert chrf(["abc", "def"], ["xyz", "def"]) < 1.0
    rows = [{"text": "a", "target": "b", "references": []}]
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"task_type": "text2text"}))
    pd.DataFrame(rows * 3).to_json(folder / "train.jsonl", orient="records", lines=True)
    pd.DataFrame([{"text": "a", "target": "b", "references": ["b", " "]}]).to_json(
        folder / "test.jsonl", orient="records", lines=True)
    with pytest.raises(TaskDataError, match="split 'test'.*row 0 has an empty 'references'"):
        load_task(folder)


def test_trivial_baselines_score_copies_and_the_most_frequent_target(bert2bert, tmp_path):
    task = load_task(_table_task(tmp_path / "t", "t"), seed=0)
    tokenizer = load_preprocessor(bert2bert, "text2text")
    copy_of = load_task(_table_task(tmp_path / "u", "u"), seed=0).test
    copy_of.references = [[t] for t in copy_of.text]  # outputs equal to inputs: a perfect copy
    perfect = trivial_baselines(copy_of, tokenizer, 32, task.train.target)
    assert perfect["copy_input"]["rouge_l"] == pytest.approx(1.0)
    scores = trivial_baselines(task.test, tokenizer, 32, ["x y", "item 3 is c0", "x y"])
    assert scores["most_frequent_target"]["exact_match"] == 0.0
    assert 0.0 < scores["copy_input"]["rouge_l"] < 1.0


def test_standard_training_on_the_built_model_saves_its_fresh_modules(bert2bert, tmp_path):
    task = load_task(_table_task(tmp_path / "t", "t"), seed=0)
    result = train_standard(task, bert2bert, TINY, show_progress=False, measure_energy=False)
    assert set(result.test) == {"rouge_l", "exact_match", "chrf"}
    folder = save_adapter(result.model, tmp_path / "a", {})
    assert json.loads((folder / "adapter_config.json").read_text())["modules_to_save"] == [
        "crossattention", "transform"]


def test_a_text2text_bench_runs_resumes_and_reports(bert2bert, tmp_path):
    for i, name in enumerate(("colours", "shades", "tints")):
        _table_task(tmp_path / "data" / name, name, shift=i)
    config = BenchConfig(
        kind="text2text", discover=[str(tmp_path / "data")],
        metrics=["target-loglik", "logme-targets"], ensemble_members=[],
        max_train=16, max_eval=6, max_length=16, source_epochs=1, transfer_epochs=1,
        baseline_max_epochs=1, scoring_samples=6, subset=2, max_tries=1, loop_seeds=[0, 1],
        max_new_tokens=4, base_model=bert2bert, run_dir=str(tmp_path / "run"),
        out_dir=str(tmp_path / "out"))
    first = BenchRun(config, show_progress=False, measure_energy=False)
    state = first.run()
    assert first.state.computed == {"source": 3, "scores": 3, "reference": 3, "finetune": 6,
                                    "baseline": 3}
    target = state["targets"]["colours"]
    assert set(target["baseline"]["validation"]) == {"rouge_l", "exact_match", "chrf"}
    assert target["trivial"]["split"] == "test" and "copy_input" in target["trivial"]
    again = BenchRun(config, show_progress=False, measure_energy=False)
    again.run()
    assert not again.state.computed  # resumed: nothing recomputed

    from adapterpool.bench.cli import main

    assert main(["--config", _write(config, tmp_path), "--report-only", "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metric"] == "rouge_l" and summary["n_targets"] == 3
    t = summary["targets"]["colours"]
    assert set(t["standard"]) >= {"score", "copy_baseline", "seconds"}
    assert t["standard"]["copy_baseline"] == pytest.approx(target["trivial"]["copy_input"]
                                                           ["rouge_l"], abs=1e-6)
    assert len(t["candidates"]) == 2
    for cid, c in t["candidates"].items():
        assert c["score"] == pytest.approx(target["finetune"][cid]["test"]["rouge_l"], abs=1e-6)
        assert set(c["scores"]) == {"target-loglik", "logme-targets"}
        assert c["scores"]["target-loglik"] == pytest.approx(
            target["scores"][cid]["scores"]["target-loglik"], abs=1e-5)
    loop = t["loop"]["target-loglik"]
    assert sum(loop["outcomes"].values()) == 2  # one replay per loop seed
    assert set(summary["mean"]) == {"target-loglik", "logme-targets", "random"}
    assert "## Standard training against trivial outputs" in (tmp_path / "out" /
                                                              "README.md").read_text()


def _write(config: BenchConfig, tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.as_dict()))
    return str(path)


def test_text2text_bench_settings_are_checked(tmp_path):
    with pytest.raises(UsageError, match="'knn' does not apply to text2text"):
        BenchConfig(kind="text2text", metrics=["knn"], ensemble_members=[]).validate()
    with pytest.raises(UsageError, match="strategies are not measured on text2text"):
        BenchConfig(kind="text2text", metrics=["target-loglik"], ensemble_members=[],
                    strategies=["plain"]).validate()
    with pytest.raises(UsageError, match="'accuracy' does not apply to text2text"):
        BenchConfig(kind="text2text", metrics=["target-loglik"], ensemble_members=[],
                    threshold_metric="accuracy").validate()
    with pytest.raises(UsageError, match="kind 'images'"):
        BenchConfig(kind="images").validate()
    run = BenchRun(BenchConfig(kind="text2text", metrics=["target-loglik"], ensemble_members=[],
                               run_dir=str(tmp_path / "run"), max_train=20, max_eval=10),
                   show_progress=False, measure_energy=False)
    with pytest.raises(UsageError, match="builtin:digits is a image task; this bench is text2"):
        run._task("builtin:digits")
    assert run._task("builtin:definition").kind == "text2text"
