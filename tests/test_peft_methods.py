"""Every PEFT method on an encoder (tiny random BERT) and a decoder (tiny random GPT-2): trained,
saved, reloaded, warm-started, scored, pooled; the combinations peft cannot run fail clearly.

The tests compare tensors and logits, so they fail when a method's weights are dropped on save,
reload or warm start, or when features are read at another position than the head's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from adapterpool import AdaptConfig, adapt
from adapterpool.cli.main import main
from adapterpool.contributing import contribute
from adapterpool.errors import PeftConfigError
from adapterpool.models.build import check_method, fit_tokenizer, load_tokenizer, new_model
from adapterpool.models.heads import head_module
from adapterpool.models.peft_methods import PEFT_METHODS, method_name, peft_config
from adapterpool.models.saving import save_adapter
from adapterpool.models.warm_start import is_head_key, warm_start_model
from adapterpool.peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from adapterpool.pool import AdapterPool
from adapterpool.pool.maintenance import verify
from adapterpool.ranking.scoring import candidate_outputs, score_candidates
from adapterpool.ranking.shared_base import CandidateModels
from adapterpool.tasks import load_task
from adapterpool.training.encoding import EncodedRecords
from adapterpool.training.standard import standard_lora_model, train_standard
from adapterpool.training.trainer import TrainConfig, train

FAMILIES = ("bert", "gpt2")
# What peft 0.21.2 cannot run here, and the reason the error must give.
UNSUPPORTED = {
    ("bert", "prefix"): "past key values",  # transformers 5 names the cache argument `cache`
    ("gpt2", "prefix"): "past key values",
    ("gpt2", "loha"): "Conv1D",  # LyCORIS adapts nn.Linear/Conv only; GPT-2 uses Conv1D
    ("gpt2", "lokr"): "Conv1D",
    ("gpt2", "olora"): "Conv1D",  # OLoRA ignores fan_in_fan_out: the forward pass would fail
}
RUNS = [(f, m) for f in FAMILIES for m in PEFT_METHODS if (f, m) not in UNSUPPORTED]
TINY = TrainConfig(epochs=2, max_length=32, batch_size=16, evals_per_epoch=1, patience=10)
TARGET_LABELS = ["x", "y", "z"]  # a target with another label count than the source


@pytest.fixture(scope="module")
def task():
    return load_task("builtin:debate-role", max_train=32, max_eval=16, seed=0)


@pytest.fixture(scope="module")
def bases(tiny_base_model, tiny_gpt2_model) -> dict[str, str]:
    return {"bert": tiny_base_model, "gpt2": tiny_gpt2_model}


@pytest.fixture(scope="module")
def pools(bases, tmp_path_factory) -> dict[str, AdapterPool]:
    root = tmp_path_factory.mktemp("method-pools")
    return {f: AdapterPool.init(root / f, base_model=bases[f]) for f in FAMILIES}


def _batch(tokenizer, task, model, n: int = 6) -> dict[str, torch.Tensor]:
    """Examples of different lengths, padded as the model needs (so padding is exercised)."""
    texts = sorted(task.validation.text, key=len)[:: max(1, len(task.validation) // n)][:n]
    return fit_tokenizer(tokenizer, model)(texts, padding=True, truncation=True, max_length=32,
                                            return_tensors="pt")


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _live(model: PeftModel) -> dict[str, torch.Tensor]:
    """The model's tensors under their saved names: peft's own state dict of the model, except
    for P-tuning, whose saved embeddings are its prompt encoder's output and load into the
    encoder's input embedding (peft does not save the encoder's MLP)."""
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    if model.active_peft_config.peft_type == "P_TUNING":
        state["prompt_embeddings"] = model.prompt_encoder["default"].embedding.weight
    return {k: v.detach().cpu() for k, v in state.items()}


@pytest.mark.parametrize("family, method", RUNS)
def test_method_trains_saves_reloads_warm_starts_scores_and_pools(
    family, method, bases, pools, task, tmp_path
):
    base = bases[family]
    tokenizer = load_tokenizer(base)
    # where `adapterpool train` and the fallback start (a data-driven method reads the task)
    model = standard_lora_model(base, task.label_names, method, seed=0, task=task, max_length=32)
    assert method_name(model.active_peft_config) == method
    if method == "ia3":  # peft's table gives the feed-forward layers too
        assert model.active_peft_config.feedforward_modules
    result = train(model, task, tokenizer, TINY, measure_energy=False, show_progress=False)
    assert result.learning_rate == PEFT_METHODS[method].learning_rate
    trained = result.model
    out = save_adapter(trained, tmp_path / "adapter", {"task": task.describe()})
    saved = load_file(str(out / ADAPTER_WEIGHTS))
    body = {k: v for k, v in saved.items() if not is_head_key(k)}
    assert body and any(is_head_key(k) for k in saved)  # the method's tensors and the head

    # Save -> reload with peft's own loader: identical logits (nothing dropped on save/reload),
    # and not the base model's (the adapter matters).
    batch = _batch(tokenizer, task, trained)
    expected = _logits(trained, batch)
    reloaded = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(task.label_names), pad_token_id=tokenizer.pad_token_id),
        str(out))
    torch.testing.assert_close(_logits(reloaded, batch), expected, atol=1e-5, rtol=0)
    if reloaded.active_peft_config.is_prompt_learning:  # the model without the virtual tokens
        bare = _logits(reloaded.get_base_model(), batch)  # (peft's disable_adapter fails here)
    else:
        with reloaded.disable_adapter():
            bare = _logits(reloaded, batch)
    assert not torch.allclose(bare, expected, atol=1e-4)

    # Warm start for a target with other labels: every saved non-head tensor is in the new
    # model; a freshly built model holds other values, so a dropped tensor would show.
    torch.manual_seed(123)
    warm = warm_start_model(base, TARGET_LABELS, out)
    fresh = standard_lora_model(base, TARGET_LABELS, method, seed=1, task=task, max_length=32)
    assert type(warm.active_peft_config) is type(trained.active_peft_config)
    warm_state, fresh_state = _live(warm), _live(fresh)
    for key, tensor in body.items():
        assert torch.equal(warm_state[key], tensor), key
        assert not torch.equal(fresh_state[key], tensor), key
    assert _logits(warm, _batch(tokenizer, task, warm)).shape[-1] == len(TARGET_LABELS)

    # Into the pool (checked against the base model), verified, then scored with its own head:
    # the captured features are what the head reads, so the head maps them to the probabilities.
    record = contribute(pools[family], task, result, task_name=f"{family}-{method}")
    assert record.peft_type == str(trained.active_peft_config.peft_type.value)
    report = verify(pools[family])
    assert report["consistent"] and report["verified"] == report["adapters"]
    models = CandidateModels(base, torch.device("cpu"), reuse_base=True)
    candidate, release = models.open(record, pools[family].adapter_dir(record.id))
    try:
        data = EncodedRecords(task.validation, tokenizer, 32)
        outputs = candidate_outputs(candidate, data, tokenizer, batch_size=5)
        with torch.no_grad():
            head = head_module(candidate)(torch.as_tensor(outputs.features))
        torch.testing.assert_close(torch.softmax(head.double(), -1).numpy(), outputs.source_probs,
                                   atol=1e-5, rtol=0)
    finally:
        release()
    scores = score_candidates(pools[family], [record], task, tokenizer, ["logme"],
                              max_samples=32, max_length=32, show_progress=False)
    assert scores[0].error is None and scores[0].scores["logme"] == scores[0].scores["logme"]


@pytest.mark.parametrize("family, method", sorted(UNSUPPORTED))
def test_methods_peft_cannot_run_here_fail_with_the_reason(family, method, bases):
    reason = UNSUPPORTED[(family, method)]
    with pytest.raises(PeftConfigError, match=f"{method} on .*{reason}"):
        check_method(bases[family], method)  # the loop's up-front check (meta device)
    with pytest.raises(PeftConfigError, match=reason):
        new_model(bases[family], ["a", "b"], method)


def test_decoder_reads_the_last_real_token_on_either_padding_side(tiny_gpt2_model, task):
    """GPT-2 classifies from the last non-pad token: each padded example's logits equal its
    logits alone, with right and with left padding (the MiniLM tokenizer's pad is removed, so
    the stand-in and model.config.pad_token_id are exercised)."""
    tokenizer = load_tokenizer(tiny_gpt2_model)
    assert tokenizer.pad_token is not None
    torch.manual_seed(0)
    model = new_model(tiny_gpt2_model, task.label_names, "lora").eval()
    assert model.get_base_model().config.pad_token_id == tokenizer.pad_token_id
    ordered = sorted(task.validation.text, key=len)
    texts = [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer(t, return_tensors="pt", truncation=True,
                                             max_length=32)).logits for t in texts])
        tokenizer.padding_side = "right"
        right = model(**tokenizer(texts, padding=True, truncation=True, max_length=32,
                                  return_tensors="pt")).logits
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    # prompt learning on a decoder pads on the left: the model is then given embeddings, and
    # its head reads the last position, which must be a real token
    prompt = new_model(tiny_gpt2_model, task.label_names, "prompt")
    assert fit_tokenizer(tokenizer, prompt).padding_side == "left"
    assert fit_tokenizer(tokenizer, model).padding_side == "right"
    assert fit_tokenizer(load_tokenizer(tiny_gpt2_model), new_model(
        tiny_gpt2_model, task.label_names, "ia3")).padding_side == tokenizer.padding_side


def test_adalora_allocates_ranks_every_step_over_the_real_step_count(tiny_base_model, task,
                                                                      monkeypatch, tmp_path):
    """update_and_allocate runs after every optimiser step with steps 1..N, total_step is N;
    the ranks it keeps are what is saved, and a warm start trains those as they are."""
    torch.manual_seed(0)
    model = new_model(tiny_base_model, task.label_names, "adalora")
    calls: list[int] = []
    original = model.base_model.update_and_allocate

    def spy(step):
        calls.append(step)
        return original(step)

    monkeypatch.setattr(model.base_model, "update_and_allocate", spy)
    config = TrainConfig(epochs=2, max_length=32, batch_size=8, evals_per_epoch=1, patience=10)
    result = train(model, task, load_tokenizer(tiny_base_model), config,
                   measure_energy=False, show_progress=False)
    steps = 2 * 4  # 32 examples, batch 8, two epochs
    assert calls == list(range(1, steps + 1))
    assert result.model.active_peft_config.total_step == steps
    pattern = result.model.active_peft_config.rank_pattern
    assert pattern and sum(map(sum, pattern.values())) < sum(map(len, pattern.values()))
    out = save_adapter(result.model, tmp_path / "ada", {})
    saved = load_file(str(out / ADAPTER_WEIGHTS))
    kept = {k: v.shape[0] for k, v in saved.items() if k.endswith("lora_E")}
    assert sum(kept.values()) == sum(map(sum, pattern.values()))
    warm = warm_start_model(tiny_base_model, TARGET_LABELS, out)
    again = train(warm, task, load_tokenizer(tiny_base_model), TINY, measure_energy=False,
                  show_progress=False)
    resaved = load_file(str(save_adapter(again.model, tmp_path / "again", {}) / ADAPTER_WEIGHTS))
    assert {k: v.shape[0] for k, v in resaved.items() if k.endswith("lora_E")} == kept


def test_learning_rate_is_the_methods_unless_set(tiny_base_model, task):
    assert PEFT_METHODS["prompt"].learning_rate > 10 * PEFT_METHODS["lora"].learning_rate
    config = TrainConfig(epochs=0.25, max_length=32, batch_size=16, learning_rate=5e-4)
    model = new_model(tiny_base_model, task.label_names, "prompt")
    result = train(model, task, load_tokenizer(tiny_base_model), config, measure_energy=False,
                   show_progress=False)
    assert result.learning_rate == 5e-4


def test_any_peft_config_as_python_object_or_json(tiny_base_model, tmp_path):
    """A PeftConfig or an adapter_config.json (peft's own format) is a method too, checked by
    peft's config class; the config given is copied, never changed."""
    from peft import LoraConfig

    given = LoraConfig(r=2, lora_alpha=4, target_modules=["query"])
    model = new_model(tiny_base_model, ["a", "b"], given)
    assert given.task_type is None and given.modules_to_save is None  # untouched
    assert model.active_peft_config.r == 2 and model.active_peft_config.target_modules == {"query"}
    (tmp_path / "a").mkdir()
    model.save_pretrained(str(tmp_path / "a"))
    data = json.loads((tmp_path / "a" / ADAPTER_CONFIG).read_text())
    assert peft_config(data).r == 2
    with pytest.raises(PeftConfigError, match="has no field 'lora_alpah'.*'lora_alpha'"):
        peft_config({"peft_type": "LORA", "lora_alpah": 8})
    with pytest.raises(PeftConfigError, match="unknown PEFT method 'lorra'.*'lora'"):
        peft_config("lorra")
    # virtual tokens + input must fit the position embeddings (128 in the tiny BERT)
    with pytest.raises(PeftConfigError, match="20 virtual tokens \\+ max_length 120 exceed"):
        check_method(tiny_base_model, "prompt", max_length=120)
    check_method(tiny_base_model, "prompt", max_length=100)


def test_bad_peft_config_field_fails_before_anything_is_written(tiny_pool, tmp_path, capsys):
    pool = tmp_path / "pool"
    shutil.copytree(tiny_pool.path, pool)
    before = sorted(p.name for p in (pool / "adapters").iterdir())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_dropuot": 0.1}))
    out = tmp_path / "run"
    for command in ("train", "adapt"):
        code = main([command, "builtin:debate-role", "--pool", str(pool), "--peft-config",
                     str(bad), "--out", str(out), "--contribute", "--no-energy"])
        err = capsys.readouterr().err
        assert code == 2 and "lora_dropuot" in err and "did you mean 'lora_dropout'" in err
    code = main(["train", "builtin:debate-role", "--pool", str(pool), "--peft", "ia3",
                 "--lora-r", "4", "--out", str(out)])
    assert code == 2 and "--lora-r does not apply to --peft ia3" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in (pool / "adapters").iterdir()) == before


@pytest.fixture(scope="module")
def mixed_pool(tiny_base_model, tmp_path_factory) -> AdapterPool:
    """Two LoRA, one IA3 and one prompt-tuning adapter on the tiny BERT."""
    pool = AdapterPool.init(tmp_path_factory.mktemp("mixed") / "pool", base_model=tiny_base_model)
    config = TrainConfig(epochs=1, max_length=32, batch_size=16)
    for name, method in (("subjectivity", "lora"), ("word-sense", "lora"),
                         ("speech-party", "ia3"), ("noun-category", "prompt")):
        source = load_task(f"builtin:{name}", max_train=32, max_eval=16)
        result = train_standard(source, pool.base_model, config, peft=method,
                                show_progress=False, measure_energy=False)
        contribute(pool, source, result, task_name=f"{name}-{method}")
    return pool


@pytest.mark.parametrize("method, peft_type, drawn", [
    ("lora", "LORA", 2), ("ia3", "IA3", 1), ("dora", "LORA", 2), ("ptuning", "P_TUNING", 0),
])
def test_mixed_pool_draws_only_the_methods_adapters_and_counts_the_rest(
    mixed_pool, task, method, peft_type, drawn
):
    config = AdaptConfig(metric="logme", subset=5, max_tries=1, threshold=0.0, transfer_epochs=1,
                         max_samples=32, fallback=TrainConfig(epochs=1, max_length=32))
    report = adapt(task, mixed_pool, config, peft=method, show_progress=False,
                   measure_energy=False).report
    types = {r.id: r.peft_type for r in mixed_pool.list()}
    assert [types[i] for i in report["subset"]] == [peft_type] * drawn
    assert report["incompatible"] == {"peft_type": len(types) - drawn}
    assert report["settings"]["peft"]["method"] == method
    first = report["attempts"][0]
    if drawn:  # warm-started from a candidate of the same type, with its own config
        assert first["kind"] == "transfer" and types[first["adapter_id"]] == peft_type
    else:  # nothing to draw: the fallback of the method itself
        assert first["kind"] == "standard_lora" and report["scores"] == []
    assert first["learning_rate"] == PEFT_METHODS[method].learning_rate


def test_readme_methods_table_matches_the_registry():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, method in PEFT_METHODS.items():
        assert f"| `{name}` |" in readme, name
        assert f"{method.learning_rate:g}" in readme.split(f"| `{name}` |")[1].split("\n")[0]
