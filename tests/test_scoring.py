"""Scoring on the tiny pool: failures ranked last without ending the ranking, the shared base
giving the scores of freshly built models, and features that stay with their examples."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from adapterpool.models.build import load_tokenizer
from adapterpool.models.saving import load_for_inference
from adapterpool.peft_files import ADAPTER_WEIGHTS
from adapterpool.pool import AdapterPool
from adapterpool.ranking import scoring, shared_base
from adapterpool.ranking.scoring import CandidateScore, candidate_outputs, score_candidates
from adapterpool.ranking.shared_base import SharedBase
from adapterpool.tasks import Records, load_task
from adapterpool.tasks.task import Task
from adapterpool.training.encoding import EncodedRecords

METRICS = ["leep", "logme", "nce", "ensemble"]  # ensemble: logme, leep and knn
SENTENCE = "the film was long and slow but the acting made up for most of it in the end"


@pytest.fixture(scope="module")
def target() -> Task:
    return load_task("builtin:movie-sentiment", max_train=48, max_eval=16, seed=0)


def _score(pool: AdapterPool, records: list, task: Task, **kwargs) -> list[CandidateScore]:
    tokenizer = load_tokenizer(pool.base_model)
    return score_candidates(pool, records, task, tokenizer, METRICS, max_samples=48,
                            max_length=32, batch_size=16, show_progress=False, **kwargs)


def _alone(pool: AdapterPool, task: Task) -> dict[str, dict[str, float]]:
    """Each adapter's scores when it is the only candidate (its own shared base)."""
    return {r.id: _score(pool, [r], task)[0].scores for r in pool.list()}


def _check_others(result: list[CandidateScore], broken: str, alone: dict, n: int) -> None:
    assert [s.adapter_id for s in result][-1] == broken and len(result) == n
    last = result[-1]
    assert all(math.isnan(v) for v in last.scores.values()) and set(last.scores) >= set(METRICS)
    assert last.error
    for s in result[:-1]:
        assert s.error is None
        for name in ("leep", "logme", "nce", "knn"):
            assert math.isfinite(s.scores[name])
            assert s.scores[name] == pytest.approx(alone[s.adapter_id][name], rel=1e-9, abs=1e-12)


def test_adapter_with_altered_weights_is_ranked_last_and_the_rest_scored(
    pool_copy: AdapterPool, target: Task, caplog: pytest.LogCaptureFixture
) -> None:
    records = pool_copy.list()
    broken = records[1].id
    alone = _alone(pool_copy, target)
    weights = pool_copy.path / "adapters" / broken / ADAPTER_WEIGHTS
    assert weights.is_file()
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # a few weight bytes changed on disk: its sha256 no longer matches
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="adapterpool"):
        result = _score(pool_copy, records, target)
    _check_others(result, broken, alone, len(records))
    assert "PoolError" in result[-1].error and "altered" in result[-1].error
    assert any(broken in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # the ensemble ranks the scored candidates among themselves: the failure moves no one
    good = [r for r in records if r.id != broken]
    expected = {s.adapter_id: s.scores["ensemble"] for s in _score(pool_copy, good, target)}
    assert {s.adapter_id: s.scores["ensemble"] for s in result[:-1]} == pytest.approx(expected)


def test_adapter_that_fails_to_build_leaves_the_shared_base_intact(
    tiny_pool: AdapterPool, target: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shapes that no model of the pool's base can take: both the shared base and the fresh
    build fail, half-way through loading; the candidates after it must score as if alone."""
    from safetensors.torch import load_file, save_file

    records = tiny_pool.list()
    broken = records[0].id  # first: it also builds the shared base, then fails on it
    alone = _alone(tiny_pool, target)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_pool.adapter_dir(broken), bad)
    state = load_file(str(bad / ADAPTER_WEIGHTS))
    key = max(k for k in state if "lora_A" in k)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(bad / ADAPTER_WEIGHTS))
    real = tiny_pool.adapter_dir
    monkeypatch.setattr(tiny_pool, "adapter_dir", lambda i: bad if i == broken else real(i))
    result = _score(tiny_pool, records, target)
    _check_others(result, broken, alone, len(records))
    assert "size mismatch" in result[-1].error or "shape" in result[-1].error


def test_shared_base_gives_the_scores_of_freshly_built_models(
    tiny_pool: AdapterPool, target: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = tiny_pool.list()
    assert len({len(r.label_names) for r in records}) > 1  # heads of several sizes share it
    built = {"bases": 0, "fresh": 0}

    def count(key: str, function: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            built[key] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(shared_base, "base_classifier", count("bases", shared_base.base_classifier))
    monkeypatch.setattr(shared_base, "load_for_inference", count("fresh", load_for_inference))
    shared = {s.adapter_id: s for s in _score(tiny_pool, records, target)}
    assert built == {"bases": 1, "fresh": 0}  # one base for the whole ranking, nothing rebuilt
    fresh = {s.adapter_id: s for s in _score(tiny_pool, records, target, reuse_base=False)}
    assert built == {"bases": 1, "fresh": len(records)}
    for adapter_id, s in shared.items():
        assert s.error is None and fresh[adapter_id].error is None
        names = sorted(s.scores)
        np.testing.assert_allclose([s.scores[m] for m in names],
                                   [fresh[adapter_id].scores[m] for m in names], rtol=1e-5)


def test_failing_metric_gives_nan_for_that_metric_only(
    tiny_pool: AdapterPool, target: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"logme": 0}
    real = scoring.compute_metric

    def flaky(name: str, **kwargs: object) -> float:
        if name == "logme":
            calls["logme"] += 1
            if calls["logme"] == 2:
                return math.inf
        return real(name, **kwargs)

    monkeypatch.setattr(scoring, "compute_metric", flaky)
    records = tiny_pool.list()
    result = score_candidates(tiny_pool, records, target, load_tokenizer(tiny_pool.base_model),
                              ["logme", "leep", "ensemble"], max_samples=48, max_length=32,
                              show_progress=False)
    last = result[-1]
    assert last.adapter_id == records[1].id and "logme is inf" in last.error
    assert math.isnan(last.scores["logme"]) and math.isfinite(last.scores["leep"])
    assert math.isfinite(last.scores["ensemble"])  # a NaN member counts as that member's worst
    assert all(s.error is None for s in result[:-1])


def test_features_stay_with_their_examples_under_length_sorted_batches(
    tiny_pool: AdapterPool,
) -> None:
    """Rows of ``candidate_outputs`` are in input order although batches go by length."""
    tokenizer = load_tokenizer(tiny_pool.base_model)
    words = SENTENCE.split()
    texts = [" ".join(words[: 1 + (7 * i) % len(words)]) for i in range(11)]
    assert len({len(t.split()) for t in texts}) > 6
    data = EncodedRecords(Records(text=texts, label=[i % 2 for i in range(11)]), tokenizer, 64)
    record = tiny_pool.list()[2]
    adapter_dir = tiny_pool.adapter_dir(record.id)
    shared = SharedBase(tiny_pool.base_model, tiny_pool.list()[0].label_names,
                        torch.device("cpu"))
    for model in (load_for_inference(tiny_pool.base_model, record.label_names, adapter_dir),
                  shared.attach(len(record.label_names), adapter_dir)):
        out = candidate_outputs(model, data, tokenizer, batch_size=4)
        with torch.inference_mode():
            for i, text in enumerate(texts):
                encoded = tokenizer(text, return_tensors="pt")
                pooled = model.base_model(**encoded).pooler_output[0]
                probs = torch.softmax(model(**encoded).logits.double(), dim=-1)[0]
                np.testing.assert_allclose(out.features[i], pooled.numpy(), atol=1e-5)
                np.testing.assert_allclose(out.source_probs[i], probs.numpy(), atol=1e-6)
    shared.detach()


def test_shared_base_builds_each_head_size_once_and_never_hands_out_one_module_twice(
    tiny_pool: AdapterPool,
) -> None:
    """The head for another label count comes from a template cached per count; each attach
    gets its own materialised copy, with the adapter's trained head weights."""
    base_labels = tiny_pool.list()[0].label_names
    other = next(r for r in tiny_pool.list() if len(r.label_names) != len(base_labels))
    shared = SharedBase(tiny_pool.base_model, base_labels, torch.device("cpu"))
    adapter_dir = tiny_pool.adapter_dir(other.id)
    heads, weights = [], []
    for _ in range(2):
        model = shared.attach(len(other.label_names), adapter_dir)
        heads.append(model.classifier)
        weights.append(model.classifier.weight.detach().clone())
        assert model.classifier.weight.shape[0] == len(other.label_names)
        assert model.classifier.weight.device.type == "cpu"
        shared.detach()
    assert list(shared._templates) == [len(other.label_names)]  # built once
    assert heads[0] is not heads[1]  # a fresh module each time, never the one in use before
    torch.testing.assert_close(weights[0], weights[1])  # the adapter's own head both times
    template_head = shared._templates[len(other.label_names)].classifier
    assert template_head.weight.is_meta  # the template itself stays on meta
    assert shared.model.classifier.weight.shape[0] == len(base_labels)  # put back


# -- broken adapter folders: each failure kind gets NaN, an error and a warning -------------------
def _broken_copy(pool: AdapterPool, tmp_path: Path, adapter_id: str) -> Path:
    folder = tmp_path / f"broken-{adapter_id}"
    shutil.copytree(pool.adapter_dir(adapter_id), folder)
    return folder


def test_truncated_safetensors_is_ranked_last_with_its_reason(
    tiny_pool: AdapterPool, target: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A weights file cut in half (an interrupted copy into a cache, say): it cannot be read at
    all; the loader's error is the candidate's, the others score as if alone."""
    records = tiny_pool.list()
    broken = records[2].id
    alone = _alone(tiny_pool, target)
    bad = _broken_copy(tiny_pool, tmp_path, broken)
    data = (bad / ADAPTER_WEIGHTS).read_bytes()
    (bad / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 2])
    real = tiny_pool.adapter_dir
    monkeypatch.setattr(tiny_pool, "adapter_dir", lambda i: bad if i == broken else real(i))
    with caplog.at_level(logging.WARNING, logger="adapterpool"):
        result = _score(tiny_pool, records, target)
    _check_others(result, broken, alone, len(records))
    assert "SafetensorError" in result[-1].error or "safetensors" in result[-1].error.lower()
    assert any(broken in r.getMessage() for r in caplog.records)
    assert scoring.ranking_warnings(result) == [f"adapter {broken}: {result[-1].error}"]


def test_adapter_whose_files_are_gone_is_ranked_last(
    pool_copy: AdapterPool, target: Task
) -> None:
    records = pool_copy.list()
    broken = records[0].id
    alone = _alone(pool_copy, target)
    shutil.rmtree(pool_copy.path / "adapters" / broken)
    result = _score(pool_copy, records, target)
    _check_others(result, broken, alone, len(records))
    assert "missing" in result[-1].error


def _nan_adapter(pool: AdapterPool, tmp_path: Path) -> str:
    """A real pool entry whose head weights are NaN: every check of an add passes (names,
    shapes, safetensors), yet its forward pass can give nothing finite."""
    from safetensors.torch import load_file, save_file

    source = pool.list()[0]
    folder = _broken_copy(pool, tmp_path, source.id)
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    head = [k for k in state if "classifier" in k]
    assert head
    for key in head:
        state[key] = torch.full_like(state[key], math.nan)
    save_file(state, str(folder / ADAPTER_WEIGHTS))
    return pool.add(folder, adapter_id="nan-head").id


def test_non_finite_outputs_give_nan_and_a_warning_in_rank_json_and_table(
    pool_copy: AdapterPool, target: Task, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from adapterpool.cli.main import main
    from adapterpool.ranking.rank import rank

    broken = _nan_adapter(pool_copy, tmp_path)
    n = len(pool_copy.list())
    ranking = rank(target, pool_copy, ["logme", "knn"], subset=n, max_samples=48,
                   max_length=32, show_progress=False, measure_energy=False).as_json()
    last = ranking["scores"][-1]
    assert last["adapter_id"] == broken and last["scores"] == {"logme": None, "knn": None}
    assert "FloatingPointError" in last["error"]
    assert ranking["warnings"] == [f"adapter {broken}: {last['error']}"]
    assert all(s["error"] is None for s in ranking["scores"][:-1])
    argv = ["rank", "builtin:movie-sentiment", "--pool", str(pool_copy.path), "--metric",
            "logme", "--subset", str(n), "--max-train", "48", "--max-samples", "48",
            "--max-length", "32"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["scores"][-1]["adapter_id"] == broken and payload["warnings"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "warning:" in table and broken in table.split("warning:")[1]


# -- features averaged over layers (TransformerRanker) --------------------------------------------
def test_layer_mean_features_average_every_layers_token_mean(tiny_pool: AdapterPool) -> None:
    tokenizer = load_tokenizer(tiny_pool.base_model)
    words = SENTENCE.split()
    texts = [" ".join(words[: 2 + (5 * i) % len(words)]) for i in range(7)]
    data = EncodedRecords(Records(text=texts, label=[i % 2 for i in range(7)]), tokenizer, 64)
    record = tiny_pool.list()[1]
    model = load_for_inference(tiny_pool.base_model, record.label_names,
                               tiny_pool.adapter_dir(record.id))
    out = candidate_outputs(model, data, tokenizer, batch_size=3, layer_mean=True)  # padded
    assert out.layer_features.shape == (7, 32)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            states = model(**tokenizer(text, return_tensors="pt"),
                           output_hidden_states=True).hidden_states
            assert len(states) == 3  # embeddings + 2 layers: the embeddings are left out
            expected = torch.stack([s[0].mean(dim=0) for s in states[1:]]).mean(dim=0)
            np.testing.assert_allclose(out.layer_features[i], expected.numpy(), atol=1e-5)
    plain = candidate_outputs(model, data, tokenizer, batch_size=3)
    assert plain.layer_features is None
    np.testing.assert_allclose(plain.features, out.features, atol=1e-6)  # same pass otherwise


def test_layers_metrics_rank_candidates_from_the_same_pass(
    tiny_pool: AdapterPool, target: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapterpool.metrics import knn_accuracy, logme

    seen = {}
    real = scoring.candidate_outputs

    def keep(*args, **kwargs):
        out = real(*args, **kwargs)
        seen[len(seen)] = out
        return out

    monkeypatch.setattr(scoring, "candidate_outputs", keep)
    records = tiny_pool.list()
    result = score_candidates(tiny_pool, records, target, load_tokenizer(tiny_pool.base_model),
                              ["logme-layers", "knn-layers", "logme"], max_samples=48,
                              max_length=32, show_progress=False)
    assert len(seen) == len(records)  # one pass per candidate serves all three metrics
    labels = np.asarray(scoring.scoring_sample(target, 48, 0).label)
    by_id = {s.adapter_id: s for s in result}
    for i, record in enumerate(records):
        scores, out = by_id[record.id].scores, seen[i]
        assert scores["logme-layers"] == pytest.approx(logme(out.layer_features, labels))
        assert scores["knn-layers"] == pytest.approx(knn_accuracy(out.layer_features, labels))
        assert scores["logme"] == pytest.approx(logme(out.features, labels))
        assert scores["logme-layers"] != scores["logme"]
    ranked = [s.scores["logme-layers"] for s in result]
    assert ranked == sorted(ranked, reverse=True)


def test_batch_size_shrinks_once_on_out_of_memory_and_no_call_collects_garbage(
    tiny_pool: AdapterPool, target: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch size is found once per ranking: an out-of-memory error shrinks it (x0.9) for
    that candidate and every later one, and only that error empties the cache with a
    ``gc.collect()`` (accelerate's ``find_executable_batch_size`` collected before every
    candidate: most of a ranking's time on a GPU). Scores do not depend on the batch size."""
    import gc

    records = tiny_pool.list()
    expected = {s.adapter_id: s.scores for s in _score(tiny_pool, records, target)}
    collections, sizes = [], []
    real_collect, real_outputs = gc.collect, scoring.candidate_outputs
    monkeypatch.setattr(gc, "collect", lambda *a: collections.append(1) or real_collect(*a))

    def outputs(model, data, tokenizer, *, batch_size, **kwargs):
        sizes.append(batch_size)
        if batch_size > 12:  # what a device without room for 16 rows raises
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_outputs(model, data, tokenizer, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(scoring, "candidate_outputs", outputs)
    result = _score(tiny_pool, records, target)
    # 16 fails, 14 fails, 12 runs; the next candidates start at 12
    assert sizes == [16, 14, 12] + [12] * (len(records) - 1)
    assert len(collections) == 2  # one per out-of-memory error, none per candidate
    for s in result:
        assert s.error is None
        for name, value in expected[s.adapter_id].items():
            assert s.scores[name] == pytest.approx(value, rel=1e-5, abs=1e-7)
    monkeypatch.setattr(scoring, "candidate_outputs", real_outputs)

    def other_error(*args, **kwargs):
        raise RuntimeError("shape mismatch")  # not out of memory: no retry, ranked last

    monkeypatch.setattr(scoring, "candidate_outputs", other_error)
    sizes.clear()
    assert all("shape mismatch" in s.error for s in _score(tiny_pool, records, target))
