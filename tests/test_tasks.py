"""Task loading from folders (JSONL/CSV/Parquet), validation errors, seeded splitting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from adapterpool.tasks import Records, TaskDataError, build_task, load_task
from tests.conftest import BENCH_DATA

# Texts written for these tests (no third-party data in the repo).
POSITIVE = [f"what a lovely day number {i}, I enjoyed it" for i in range(30)]
NEGATIVE = [f"a dreadful afternoon number {i}, I hated it" for i in range(20)]


def _rows(texts_labels):
    return [{"text": t, "label": y} for t, y in texts_labels]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _folder(tmp_path: Path, *, with_validation: bool = True, meta: dict | None = None) -> Path:
    rows = _rows([(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE])
    _write_jsonl(tmp_path / "train.jsonl", rows)
    if with_validation:
        _write_jsonl(tmp_path / "validation.jsonl", rows[:5] + rows[-5:])
    _write_jsonl(tmp_path / "test.jsonl", rows[5:10] + rows[-10:-5])
    (tmp_path / "meta.json").write_text(json.dumps(
        meta or {"name": "toy", "task_type": "single", "label_names": ["negative", "positive"]}))
    return tmp_path


def test_local_jsonl_folder_with_meta(tmp_path):
    task = load_task(_folder(tmp_path))
    assert task.name == "toy" and task.kind == "single"
    assert task.label_names == ("negative", "positive")
    assert task.describe() == {"name": "toy", "kind": "single",
                               "label_names": ["negative", "positive"],
                               "n_train": 50, "n_validation": 10, "n_test": 10}


def test_missing_validation_is_carved_stratified_and_seeded(tmp_path):
    folder = _folder(tmp_path, with_validation=False)
    first, again, other = (load_task(folder, seed=s) for s in (0, 0, 1))
    assert len(first.train) + len(first.validation) == 50
    assert Counter(first.validation.label) == Counter({1: 3, 0: 2})  # 10% of 30 and of 20
    assert first.validation.text == again.validation.text
    assert first.validation.text != other.validation.text
    assert not set(first.validation.text) & set(first.train.text)


def test_max_train_and_max_eval_subsample_stratified(tmp_path):
    task = load_task(_folder(tmp_path), max_train=10, max_eval=4)
    assert len(task.train) == 10 and Counter(task.train.label) == Counter({1: 6, 0: 4})
    assert len(task.validation) == 4 and len(task.test) == 4


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_with_string_labels(tmp_path, fmt):
    frame = pd.DataFrame({"sentence": POSITIVE + NEGATIVE,
                          "y": ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)})
    path = tmp_path / f"train.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    task = load_task(tmp_path, text_field="sentence", label_field="y")
    assert task.label_names == ("neg", "pos")  # sorted when meta.json gives none
    assert Counter(task.train.label + task.validation.label) == Counter({1: 30, 0: 20})


def test_text_pair_task(tmp_path):
    rows = [{"text": f"first sentence {i}", "text_pair": f"second sentence {i % 7}", "label": i % 2}
            for i in range(40)]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    (tmp_path / "meta.json").write_text(
        json.dumps({"task_type": "pair", "label_names": ["a", "b"]})
    )
    task = load_task(tmp_path)
    assert task.kind == "pair" and task.train.text_pair is not None
    assert len(task.train.text_pair) == len(task.train.text)


def test_missing_label_column_names_file_and_field(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in POSITIVE])
    with pytest.raises(TaskDataError, match=r"train\.jsonl.*no column 'label'.*--label-field"):
        load_task(tmp_path)


def test_missing_label_value_is_reported(tmp_path):
    rows = _rows([(t, 1) for t in POSITIVE]) + [{"text": "no label here", "label": None}]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(TaskDataError, match="row 30 has no value in label column 'label'"):
        load_task(tmp_path)


def test_empty_text_is_reported(tmp_path):
    _folder(tmp_path)
    rows = _rows([(t, 1) for t in POSITIVE] + [("   ", 0)] + [(t, 0) for t in NEGATIVE])
    _write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(TaskDataError,
                       match=r"split 'train'.*row 30 has an empty or non-text 'text'"):
        load_task(tmp_path)


def test_label_outside_label_names(tmp_path):
    _folder(tmp_path)
    _write_jsonl(tmp_path / "test.jsonl", [{"text": "fine", "label": 2}])
    with pytest.raises(TaskDataError, match=r"split 'test'.*label 2, outside the 2 label names"):
        load_task(tmp_path)


def test_single_class_is_refused():
    records = Records(text=POSITIVE, label=[1] * len(POSITIVE))
    with pytest.raises(TaskDataError, match="single class"):
        build_task("one", "single", ["negative", "positive"], records)


def test_wrong_path_and_unknown_builtin():
    with pytest.raises(TaskDataError, match="does not exist.*builtin:NAME"):
        load_task("/nonexistent/folder")
    with pytest.raises(TaskDataError, match="movie-sentiment"):
        load_task("builtin:movie-sentimnet")


@pytest.mark.skipif(not (BENCH_DATA / "sst2").is_dir(), reason="../shared/bench-data not present")
def test_bench_data_folder_loads_with_its_meta():
    meta = json.loads((BENCH_DATA / "sst2" / "meta.json").read_text())
    task = load_task(BENCH_DATA / "sst2")
    assert task.describe()["n_train"] == meta["n_train"]
    assert task.describe()["n_test"] == meta["n_test"]
    assert list(task.label_names) == meta["label_names"]


def test_a_named_text_pair_column_must_exist_on_a_single_text_folder():
    from adapterpool.tasks.local import frame_to_records

    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(TaskDataError, match="no column 'premise'.*--text-pair-field"):
        frame_to_records(frame, "t", text_field="text", label_field="label",
                         text_pair_field="premise", label_names=None, kind="single")
    records, _ = frame_to_records(frame.assign(premise=["x", "y"]), "t", text_field="text",
                                  label_field="label", text_pair_field="premise",
                                  label_names=None, kind="single")
    assert records.text_pair == ["x", "y"]
