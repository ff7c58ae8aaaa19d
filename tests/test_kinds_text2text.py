"""The ``text2text`` task kind on a tiny random T5 (and BART for the methods): loading, bad data,
target encoding, generation metrics, PEFT methods, save/reload, warm start, the zero-shot
target log-likelihood, the metric registry's kind checks, pool compatibility and the loop.

Assertions compare token ids, tensors and losses, so they fail when targets are not what the
model is trained on, when a saved tensor is dropped, or when the log-likelihood is taken over
other tokens than the model's own loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from adapterpool import DEFAULT_METRIC, AdaptConfig, adapt
from adapterpool.cli.main import main
from adapterpool.contributing import contribute
from adapterpool.errors import TaskDataError, UsageError
from adapterpool.metrics import check_metric_kind, compute_metric
from adapterpool.models.build import base_classifier, load_preprocessor
from adapterpool.models.saving import save_adapter
from adapterpool.models.warm_start import warm_start_model
from adapterpool.pool import AdapterPool
from adapterpool.ranking.rank import rank
from adapterpool.ranking.scoring import seq2seq_outputs
from adapterpool.tasks import load_task
from adapterpool.training.encoding import EncodedRecords, train_loader
from adapterpool.training.generation import chrf, exact_match, rouge_l
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TrainConfig(epochs=1, batch_size=8, max_length=16, evals_per_epoch=1, patience=5,
                   selection_metric="rouge_l", max_new_tokens=4)
ROWS = [{"text": f"the colour of item {i}", "target": f"colour {i % 3}"} for i in range(12)]


def _folder(root: Path, rows=ROWS, fmt: str = "jsonl", meta: dict | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta or {"task_type": "text2text"}))
    frame = pd.DataFrame(rows)
    if fmt == "jsonl":
        frame.to_json(root / "train.jsonl", orient="records", lines=True)
    elif fmt == "csv":
        frame.to_csv(root / "train.csv", index=False)
    else:
        frame.to_parquet(root / "train.parquet")
    return root


@pytest.fixture(scope="module")
def task():
    return load_task("builtin:reverse-dictionary", max_train=16, max_eval=4, seed=0)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_text2text_folder_loads_with_a_seeded_uniform_validation(tmp_path, fmt):
    task = load_task(_folder(tmp_path / "t", fmt=fmt), seed=3)
    again = load_task(_folder(tmp_path / "u", fmt=fmt), seed=3)
    assert task.kind == "text2text" and task.label_names == () and task.train.label == []
    assert len(task.train) == 11 and len(task.validation) == 1
    assert task.validation.text == again.validation.text
    pairs = {r["text"]: r["target"] for r in ROWS}
    assert all(pairs[t] == g for t, g in zip(task.train.text, task.train.target, strict=True))
    assert "validation carved from train (10%, uniform, seed 3)" in task.notes


def test_bad_text2text_data_is_named(tmp_path):
    with pytest.raises(TaskDataError, match=r"train\.jsonl: no column 'target'.*--target-field"):
        load_task(_folder(tmp_path / "a", [{"text": "x", "answer": "y"}]))
    rows = [dict(r) for r in ROWS]
    rows[4]["target"] = "  "
    with pytest.raises(TaskDataError, match=r"split 'train'.*row 4 has an empty .*'target'"):
        load_task(_folder(tmp_path / "b", rows))
    with pytest.raises(TaskDataError, match="did you mean 'text2text'"):
        load_task(_folder(tmp_path / "c", meta={"task_type": "text-2-text"}))
    renamed = [{"text": r["text"], "answer": r["target"]} for r in ROWS]
    assert load_task(_folder(tmp_path / "d", renamed), target_field="answer").kind == "text2text"


def test_hf_datasets_give_text2text_and_image_tasks(monkeypatch):
    from PIL import Image

    text = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)})
    pictures = datasets.Dataset.from_dict(
        {"img": [Image.new("RGB", (4, 4), (i * 20, 0, 0)) for i in range(8)],
         "label": [0, 1] * 4},
        features=datasets.Features({"img": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["a", "b"])}))
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda name, config=None: {"t": text, "i": datasets.DatasetDict(
                            {"train": pictures})}[name])
    task = load_task("hf:t", target_field="target")
    assert task.kind == "text2text" and sorted(task.train.target + task.validation.target) == \
        sorted(r["target"] for r in ROWS)
    images = load_task("hf:i", image_field="img")
    assert images.kind == "image" and images.label_names == ("a", "b")
    assert isinstance(images.train.image[0], Image.Image)


def test_text_metrics_come_from_the_scoring_packages():
    refs, preds = ["the cat sat", "Blue  Sky", "dog"], ["the cat sat", "blue sky", "a bird"]
    assert exact_match(refs, preds) == pytest.approx(2 / 3)
    assert rouge_l(["the cat sat"], ["the cat sat"]) == 1.0
    assert rouge_l(["the cat sat"], ["dogs run"]) == 0.0
    assert rouge_l(["the cat sat"], ["the cat"]) == pytest.approx(0.8)  # P 1, R 2/3
    assert chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert 0.0 < chrf(refs, preds) < 1.0


def test_targets_are_encoded_as_the_labels_the_loss_reads(tiny_t5_model, task):
    tokenizer = load_preprocessor(tiny_t5_model, "text2text")
    data = EncodedRecords(task.train, tokenizer, max_length=16)
    assert data.inputs == "text2text" and "token_type_ids" not in data[0]
    assert data[0]["labels"] == tokenizer(text_target=task.train.target[0], truncation=True,
                                          max_length=16)["input_ids"]
    batch = next(iter(train_loader(data, tokenizer, 8, seed=0)))
    lengths = [len(f["labels"]) for f in data.features]
    assert batch["labels"].shape[1] >= min(lengths) and (batch["labels"] == -100).any() == (
        len(set(lengths)) > 1)


@pytest.mark.parametrize("family, method", [("t5", "lora"), ("t5", "adalora"),
                                            ("t5", "prefix"), ("bart", "lora")])
def test_methods_train_on_encoder_decoders_and_evaluate_by_generation(
        family, method, tiny_t5_model, tiny_bart_model, task):
    base = {"t5": tiny_t5_model, "bart": tiny_bart_model}[family]
    result = train_standard(task, base, TINY, peft=method, show_progress=False,
                            measure_energy=False)
    config = result.model.peft_config["default"]
    assert config.task_type == "SEQ_2_SEQ_LM" and not getattr(config, "modules_to_save", None)
    assert set(result.validation) == {"rouge_l", "exact_match", "chrf"}
    assert result.history and all(0.0 <= v <= 1.0 for v in result.validation.values())


def test_evaluation_generates_with_the_model_inside_a_process_wrapper(tiny_t5_model, task):
    """Under several processes the trained model is wrapped (DistributedDataParallel), and the
    wrapper has no generate(): evaluation unwraps it, as accelerate's unwrap_model does."""
    from types import SimpleNamespace

    from adapterpool.training.trainer import evaluate

    model = base_classifier(tiny_t5_model, [], "text2text").eval()
    tokenizer = load_preprocessor(tiny_t5_model, "text2text")
    data = EncodedRecords(task.validation.take(range(4)), tokenizer, max_length=16)
    wrapper = torch.nn.ModuleDict({"module": model})  # no generate(), like the DDP wrapper
    unwrapped = []

    def unwrap_model(m):
        unwrapped.append(m)
        return m["module"]

    accelerator = SimpleNamespace(num_processes=2, unwrap_model=unwrap_model)
    scores = evaluate(wrapper, data, tokenizer, accelerator=accelerator, max_new_tokens=4)
    assert unwrapped == [wrapper]
    assert scores == evaluate(model, data, tokenizer, max_new_tokens=4)


def test_num_beams_reaches_generate_and_stays_out_of_records_at_its_default(tiny_t5_model,
                                                                          task, monkeypatch):
    """``TrainConfig.num_beams`` is beam search in every evaluation (generate's num_beams, still
    no sampling); at 1 it is greedy search and absent from as_dict, so older records compare."""
    from adapterpool.training.trainer import evaluate

    model = base_classifier(tiny_t5_model, [], "text2text").eval()
    tokenizer = load_preprocessor(tiny_t5_model, "text2text")
    data = EncodedRecords(task.validation.take(range(4)), tokenizer, max_length=16)
    seen = []
    real = model.generate

    def spy(**kwargs):
        seen.append({k: kwargs[k] for k in ("num_beams", "do_sample", "max_new_tokens")})
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    evaluate(model, data, tokenizer, max_new_tokens=4, num_beams=3)
    evaluate(model, data, tokenizer, max_new_tokens=4)
    assert seen == [{"num_beams": 3, "do_sample": False, "max_new_tokens": 4},
                    {"num_beams": 1, "do_sample": False, "max_new_tokens": 4}]
    assert "num_beams" not in TrainConfig().as_dict()
    assert TrainConfig(num_beams=4).as_dict()["num_beams"] == 4
    with pytest.raises(UsageError, match="num_beams"):
        TrainConfig(num_beams=0)


def test_lora_saved_reloaded_and_warm_started(tiny_t5_model, task, tmp_path):
    result = train_standard(task, tiny_t5_model, TINY, show_progress=False, measure_energy=False)
    model = result.model.eval()
    trained = get_peft_model_state_dict(model)
    assert trained and all("lora_" in k and (".q." in k or ".v." in k) for k in trained)
    folder = save_adapter(model, tmp_path / "adapter", {"task": task.describe()})
    tokenizer = load_preprocessor(tiny_t5_model, "text2text")
    batch = tokenizer(task.validation.text, return_tensors="pt", padding=True,
                      return_token_type_ids=False)
    start = torch.zeros(len(task.validation), 1, dtype=torch.long)
    reloaded = PeftModel.from_pretrained(base_classifier(tiny_t5_model, [], "text2text"),
                                         str(folder)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch, decoder_input_ids=start).logits,
                              model(**batch, decoder_input_ids=start).logits, atol=1e-6)
    warm = get_peft_model_state_dict(warm_start_model(tiny_t5_model, [], folder,
                                                      kind="text2text"))
    assert warm.keys() == trained.keys()
    assert all(torch.equal(warm[k], trained[k]) for k in trained)


def test_target_loglik_is_minus_the_models_own_loss(tiny_t5_model, task):
    tokenizer = load_preprocessor(tiny_t5_model, "text2text")
    model = base_classifier(tiny_t5_model, [], "text2text").eval()
    data = EncodedRecords(task.train, tokenizer, max_length=16)
    out = seq2seq_outputs(model, data, tokenizer, batch_size=5, target_features=True)
    for i in (0, 7):
        single = {k: torch.tensor([v]) for k, v in data[i].items()}
        with torch.no_grad():
            loss = model(**single).loss.item()
            states = model.encoder(input_ids=single["input_ids"]).last_hidden_state
            target = model.encoder(input_ids=single["labels"]).last_hidden_state
        assert out.target_loglik[i] == pytest.approx(-loss, rel=1e-5)
        assert np.allclose(out.features[i], states[0].mean(0).numpy(), atol=1e-5)
        assert np.allclose(out.target_features[i], target[0].mean(0).numpy(), atol=1e-5)
    assert out.source_probs.shape == (len(data), 0)
    # the targets' encoder pass runs only for logme-targets; the rest is the same without it
    lean = seq2seq_outputs(model, data, tokenizer, batch_size=5)
    assert lean.target_features is None and np.array_equal(lean.target_loglik, out.target_loglik)
    value = compute_metric("target-loglik", features=out.features, source_probs=None,
                           labels=None, target_loglik=out.target_loglik)
    assert value == pytest.approx(float(np.mean(out.target_loglik)))


def test_logme_targets_rewards_targets_the_input_features_predict():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 8))
    targets = features @ rng.normal(size=(8, 5)) + 0.1 * rng.normal(size=(60, 5))
    shuffled = targets[rng.permutation(60)]
    score = lambda t: compute_metric("logme-targets", features=features,  # noqa: E731
                                     source_probs=None, labels=None, target_features=t)
    assert score(targets) > score(shuffled)
    assert score(targets + 100.0) == pytest.approx(score(targets))  # centred: no intercept
    with pytest.raises(Exception, match="target feature rows"):
        score(targets[:10])


def test_metrics_and_thresholds_refuse_other_kinds():
    with pytest.raises(UsageError, match="'knn' does not apply to text2text.*target-loglik"):
        check_metric_kind("knn", "text2text")
    with pytest.raises(UsageError, match="'target-loglik' does not apply to single"):
        check_metric_kind("target-loglik", "single")
    config = AdaptConfig().for_kind("text2text")  # defaults become the kind's own
    assert (config.metric, config.threshold_metric) == ("target-loglik", "rouge_l")
    assert AdaptConfig().for_kind("image") == AdaptConfig()
    with pytest.raises(UsageError, match="'chrf' does not apply to single"):
        AdaptConfig(threshold_metric="chrf").for_kind("single")
    # a metric chosen by hand (not the default) that does not apply is refused, not replaced
    assert DEFAULT_METRIC != "knn"
    with pytest.raises(UsageError, match="'knn' does not apply to text2text"):
        AdaptConfig(metric="knn").for_kind("text2text")


@pytest.fixture(scope="module")
def t5_pool(tmp_path_factory, tiny_t5_model):
    pool = AdapterPool.init(tmp_path_factory.mktemp("t5") / "pool", base_model=tiny_t5_model)
    source = load_task("builtin:reverse-dictionary", max_train=16, max_eval=4, seed=1)
    result = train_standard(source, tiny_t5_model, TINY, show_progress=False,
                            measure_energy=False)
    record = contribute(pool, source, result)
    assert (record.task_kind, record.label_names) == ("text2text", [])
    assert record.peft_config["task_type"] == "SEQ_2_SEQ_LM"
    return pool


def test_ranking_by_target_loglik_draws_text2text_adapters_only(t5_pool, task, entry_of_kind):
    source = t5_pool.list()[0]
    with entry_of_kind(t5_pool, "pair"):  # a text classifier's entry, as a mixed pool holds
        ranking = rank(task, t5_pool, ["target-loglik", "logme-targets"], subset=5,
                       peft_type="LORA", show_progress=False, measure_energy=False)
    assert ranking.subset == [source.id] and ranking.incompatible == {"task_kind": 1}
    assert ranking.scores[0].scores["target-loglik"] < 0  # a log-likelihood
    assert np.isfinite(ranking.scores[0].scores["logme-targets"])
    with pytest.raises(UsageError, match="'knn' does not apply to text2text"):
        rank(task, t5_pool, "knn", show_progress=False)
    default = rank(task, t5_pool, subset=5, show_progress=False, measure_energy=False)
    assert default.metrics == ["target-loglik"]  # the kind's own, as the table says
    assert default.scores[0].scores["target-loglik"] == ranking.scores[0].scores["target-loglik"]


def test_adapt_transfers_contributes_and_falls_back(t5_pool, task, tmp_path):
    n_before = len(t5_pool.list())
    config = AdaptConfig(subset=2, max_tries=1, threshold=0.0, transfer_epochs=1,
                         fallback=TINY, contribute=True)
    result = adapt(task, t5_pool, config, show_progress=False, measure_energy=False,
                   out_dir=tmp_path / "run")
    assert result.outcome == "transfer"
    assert result.report["metric"] == "target-loglik"
    assert result.report["threshold"] == {"metric": "rouge_l", "value": 0.0}
    contributed = t5_pool.get(result.report["contributed_adapter_id"])
    assert contributed.task_kind == "text2text" and contributed.parent_id == t5_pool.list()[0].id
    assert len(t5_pool.list()) == n_before + 1
    code = main(["adapt", "builtin:reverse-dictionary", "--pool", str(t5_pool.path),
                 "--max-train", "16", "--max-eval", "4", "--subset", "1", "--max-tries", "1",
                 "--threshold", "1.01", "--threshold-metric", "chrf", "--epochs", "1",
                 "--standard-epochs", "1", "--batch-size", "8", "--max-length", "16",
                 "--max-new-tokens", "4", "--no-energy", "--json", "--contribute",
                 "--out", str(tmp_path / "cli")])
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert code == 0 and report["outcome"] == "failed"
    assert [a["kind"] for a in report["attempts"]] == ["transfer", "standard_lora"]
    assert set(report["attempts"][1]["validation"]) == {"rouge_l", "exact_match", "chrf"}
    assert report["threshold"] == {"metric": "chrf", "value": 1.01}
    assert report["contributed_adapter_id"] is None and len(t5_pool.list()) == n_before + 1


def test_encoder_decoder_from_two_encoders_gets_lora_on_its_pretrained_attention(tiny_base_model,
                                                                         tmp_path):
    from adapterpool.errors import BaseModelError
    from adapterpool.models.base_model import build_encoder_decoder
    from adapterpool.models.build import new_model

    folder = build_encoder_decoder(tmp_path / "ed", tiny_base_model)
    tokenizer = load_preprocessor(str(folder), "text2text")
    model = base_classifier(str(folder), [], "text2text")
    assert model.config.model_type == "encoder-decoder"
    # PAD starts decoding: targets are framed [CLS] ... [SEP], so a CLS start would repeat it
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id
    peft_model = new_model(str(folder), [], kind="text2text")
    assert sorted(peft_model.peft_config["default"].target_modules) == ["query", "value"]
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters()
               if ".lora_A." in n}
    assert any(n.split(".")[2] == "encoder" for n in adapted)
    # the fresh cross-attention is trained in full beside the adapter, not low-rank
    assert not any(".crossattention." in n for n in adapted)
    assert peft_model.peft_config["default"].modules_to_save == ["crossattention", "transform"]
    with pytest.raises(BaseModelError, match="not empty"):
        build_encoder_decoder(folder, tiny_base_model)
