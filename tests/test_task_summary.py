"""Task summaries: their file format and checks, the statistics, the similarities, the probe
weighting and the embedding that feeds them (on the tiny BERT)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from adapterpool.errors import TaskSummaryError, UsageError
from adapterpool.ranking.prefilter import order_by_similarity
from adapterpool.ranking.summarize import (
    embedding_shift,
    encode,
    probe_summary,
    probe_texts,
    records_summary,
    sample_records,
)
from adapterpool.ranking.task_summary import TaskSummary, similarities, summarize
from adapterpool.tasks import Records


def _summary(mean, var=None, source="texts") -> TaskSummary:
    mean = np.asarray(mean, dtype=np.float32)
    var = np.zeros_like(mean) if var is None else np.asarray(var, dtype=np.float32)
    return TaskSummary(mean, var, 10, source, 3, 64)


def test_file_round_trip_is_exact_and_a_few_kb_at_minilm_width():
    rng = np.random.default_rng(0)
    summary = _summary(rng.normal(size=384), rng.random(384), source="probe")
    data = summary.to_bytes()
    assert len(data) < 4096
    back = TaskSummary.from_bytes(data, dims=384)
    np.testing.assert_array_equal(back.mean, summary.mean)
    np.testing.assert_array_equal(back.var, summary.var)
    assert (back.n_texts, back.source, back.seed, back.max_length) == (10, "probe", 3, 64)


def _with(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.numpy import save

    meta = {"format": "1", "n_texts": "4", "source": "texts", "seed": "0", "max_length": "8"}
    return save(tensors, metadata=meta | (metadata or {}))


@pytest.mark.parametrize("data, message", [
    (_with({"mean": np.zeros(8, np.float32), "var": np.zeros(8, np.float32)}), "8 dims"),
    (_with({"mean": np.zeros(4, np.float32)}), "tensors 'mean' and 'var'"),
    (_with({"mean": np.zeros(4, np.float32), "var": np.zeros(5, np.float32)}), "equal 1-D"),
    (_with({"mean": np.full(4, np.nan, np.float32), "var": np.zeros(4, np.float32)}),
     "non-finite"),
    (_with({"mean": np.zeros(4, np.float32), "var": -np.ones(4, np.float32)}), "negative"),
    (_with({"mean": np.zeros(4, np.float32), "var": np.zeros(4, np.float32)},
           {"source": "guess"}), "metadata not understood"),
    (pickle.dumps({"mean": [0.0] * 4}), "pickle"),
    (b"not a safetensors file at all", "not a valid safetensors"),
    (b"\x00" * (70 * 1024), "over the"),
])
def test_bad_summary_files_are_refused_with_the_reason(data, message):
    with pytest.raises(TaskSummaryError, match=message):
        TaskSummary.from_bytes(data, dims=4)


def test_summarize_is_the_weighted_mean_and_diagonal_variance():
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    plain = summarize(x, source="texts", seed=0, max_length=8)
    np.testing.assert_allclose(plain.mean, [3.0, 2.0])
    np.testing.assert_allclose(plain.var, x.var(axis=0), rtol=1e-6)
    weighted = summarize(x, source="probe", seed=0, max_length=8, weights=np.array([1, 0, 3]))
    np.testing.assert_allclose(weighted.mean, [4.0, 3.0])  # (1*1 + 3*5) / 4, (0 + 3*4) / 4
    np.testing.assert_allclose(weighted.var, [3.0, 3.0])  # (1*9 + 3*1) / 4 each
    with pytest.raises(TaskSummaryError):
        summarize(x, source="texts", seed=0, max_length=8, weights=np.zeros(3))


def test_cosine_and_frechet_by_hand():
    target = _summary([1.0, 0.0], [1.0, 4.0])
    near = _summary([2.0, 0.0], [1.0, 4.0])  # same direction, other length
    ortho = _summary([0.0, 3.0], [4.0, 1.0])
    cos = similarities(target, [near, ortho, None], "cosine")
    np.testing.assert_allclose(cos[:2], [1.0, 0.0], atol=1e-7)
    assert np.isnan(cos[2])
    fr = similarities(target, [target, near, ortho], "frechet")
    # |m1-m2|^2 + sum(v1 + v2 - 2 sqrt(v1 v2)): 0; 1 + 0; (1 + 9) + ((1 + 4 - 4) + (4 + 1 - 4))
    np.testing.assert_allclose(fr, [0.0, -1.0, -12.0], atol=1e-6)
    wider = _summary([1.0, 0.0, 0.0])
    assert np.isnan(similarities(target, [wider], "cosine")[0])  # other dims: not comparable
    with pytest.raises(UsageError, match="unknown similarity"):
        similarities(target, [near], "euclid")


def test_probe_summary_weights_texts_by_how_far_the_adapter_moves_them():
    base = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    moved = base.copy()
    moved[1] = [0.6, 0.8]  # only the second text moves, by |(0.6, -0.2)|
    shift = embedding_shift(base, moved)
    np.testing.assert_allclose(shift, [0.0, np.hypot(0.6, 0.2), 0.0])
    summary = probe_summary(base, moved, max_length=8)
    np.testing.assert_allclose(summary.mean, [0.0, 1.0], atol=1e-7)
    assert summary.source == "probe"
    untouched = probe_summary(base, base, max_length=8)  # nothing moves: the plain mean
    np.testing.assert_allclose(untouched.mean, base.mean(axis=0), rtol=1e-6)


def test_packaged_probe_set():
    texts = probe_texts()
    assert len(texts) == 132 == len(set(texts))
    assert not any(t.startswith("#") for t in texts)


def test_sample_is_seeded_and_label_free():
    records = Records(text=[f"t{i}" for i in range(50)], label=[0] * 50)
    a, b = sample_records(records, 10, seed=1), sample_records(records, 10, seed=1)
    assert a.text == b.text and len(a) == 10
    assert sample_records(records, 10, seed=2).text != a.text
    assert sample_records(records, 80, seed=1) is records
    with pytest.raises(UsageError):
        sample_records(records, 0, seed=1)


def test_encode_is_the_masked_mean_of_the_last_layer_unit_length_in_input_order(
    tiny_base_model,
):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    model = AutoModel.from_pretrained(tiny_base_model).eval()
    texts = ["a short one", "a much longer sentence with many more words than the first one",
             "medium length text here", "x"]
    records = Records(text=texts, label=[0] * 4)
    out = encode(model, records, tokenizer, max_length=32, batch_size=2)  # padded batches
    assert out.shape == (4, 32) and out.dtype == np.float32
    with torch.inference_mode():
        for i, text in enumerate(texts):
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy()
            np.testing.assert_allclose(out[i], expected, atol=1e-5)
    summary = records_summary(records, model, tokenizer, n_texts=3, seed=0, max_length=32)
    assert summary.n_texts == 3 and summary.dims == 32 and summary.source == "texts"


def test_order_puts_nan_last_in_a_seeded_order_and_breaks_ties_by_id():
    ids = ["e", "d", "c", "b", "a"]
    values = np.array([0.5, np.nan, 0.9, 0.5, np.nan])
    order = order_by_similarity(ids, values, seed=0)
    assert [ids[i] for i in order[:3]] == ["c", "b", "e"]
    assert {ids[i] for i in order[3:]} == {"a", "d"}
    assert order == order_by_similarity(ids, values, seed=0)
    many = np.full(30, np.nan)
    names = [f"n{i:02d}" for i in range(30)]
    assert order_by_similarity(names, many, 0) != order_by_similarity(names, many, 1)
