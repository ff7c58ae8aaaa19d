"""Builtin offline tasks: real data from installed packages, deterministic, leak-free splits."""

from __future__ import annotations

from collections import Counter

import pytest

from adapterpool.tasks import TaskDataError, load_task
from adapterpool.tasks.builtin import BUILTIN_TASKS, builtin_records, list_builtin

# Sizes after deduplication, near those documented in ../shared/OFFLINE-DATA.md.
EXPECTED_MIN_SIZE = {"movie-sentiment": 12000, "movie-sentiment-a-l": 5500,
                     "movie-sentiment-m-z": 7000, "subjectivity": 10000, "speech-party": 2500,
                     "debate-role": 1000, "noun-category": 55000, "word-sense": 20000,
                     "pos-of-definition": 110000, "verb-category": 12000,
                     "reverse-dictionary": 110000, "definition": 70000, "digits": 1797,
                     "digit-parity": 1797}


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_task_loads_with_all_classes_and_no_leaks(name):
    spec = BUILTIN_TASKS[name]
    task = load_task(f"builtin:{name}", max_train=200, max_eval=50)
    assert task.kind == spec.kind and task.label_names == spec.label_names
    assert len(task.train) == 200 and len(task.validation) <= 50 and len(task.test) <= 50
    records = builtin_records(name)
    assert len(records) >= EXPECTED_MIN_SIZE[name]
    if spec.label_names:
        assert set(records.label) == set(range(len(spec.label_names)))
    full = load_task(f"builtin:{name}")

    def keys(r):  # an image is its own object: a leak would put the same one in two splits
        if r.image is not None:
            return {id(image) for image in r.image}
        return set(zip(r.text, r.text_pair or [None] * len(r), strict=True))

    assert not keys(full.train) & keys(full.test)
    assert not keys(full.train) & keys(full.validation)
    assert len(full.train) + len(full.validation) + len(full.test) == len(records)
    assert abs(len(full.test) / len(records) - 0.1) < 0.01


def test_same_seed_same_split_other_seed_other_split():
    a = load_task("builtin:debate-role", seed=0)
    b = load_task("builtin:debate-role", seed=0)
    c = load_task("builtin:debate-role", seed=1)
    assert a.test.text == b.test.text and a.train.text == b.train.text
    assert a.test.text != c.test.text


def test_word_sense_is_a_balanced_pair_task():
    records = builtin_records("word-sense")
    counts = Counter(records.label)
    assert abs(counts[0] - counts[1]) / len(records) < 0.05
    assert all(a != b for a, b in zip(records.text[:500], records.text_pair[:500], strict=True))


def test_subjectivity_is_balanced():
    counts = Counter(builtin_records("subjectivity").label)
    assert counts[0] == counts[1]


def test_unknown_builtin_lists_names():
    with pytest.raises(TaskDataError, match=r"did you mean 'noun-category'.*builtin tasks: movie"):
        load_task("builtin:noun-categry")


def test_list_builtin_reports_sizes():
    rows = list_builtin()
    assert {r["name"] for r in rows} == set(BUILTIN_TASKS)
    assert all(r["installed"] and r["n"] > 0 for r in rows)


def test_the_two_movie_sentiment_halves_share_no_text_and_cover_the_whole():
    """A related source and target: the same labels on other films, nothing shared."""
    whole = builtin_records("movie-sentiment")
    a, b = builtin_records("movie-sentiment-a-l"), builtin_records("movie-sentiment-m-z")
    assert not set(a.text) & set(b.text)
    assert set(a.text) | set(b.text) <= set(whole.text)
    assert len(a) + len(b) > 0.99 * len(whole)
    for half in (a, b):
        labels = dict(zip(whole.text, whole.label, strict=True))
        assert [labels[t] for t in half.text] == list(half.label)
