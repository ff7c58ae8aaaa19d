"""The base model's own score on a target: the reference a candidate's score is measured against
when deciding that nothing in the subset is related."""

from __future__ import annotations

import math

import pytest

from adapterpool.contributing import contribute
from adapterpool.models.build import load_tokenizer
from adapterpool.pool import AdapterPool
from adapterpool.ranking.scoring import reference_scores, score_candidates
from adapterpool.tasks import load_task
from adapterpool.training.standard import train_standard
from adapterpool.training.trainer import TrainConfig


def test_reference_is_the_score_of_an_adapter_that_changes_nothing(tiny_base_model, tmp_path):
    """An adapter trained with a vanishing learning rate leaves the base model's features as they
    are (LoRA's B stays ~0, the pooler copy is the base's): its feature scores are the reference;
    a head-reading metric has none."""
    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_base_model)
    task = load_task("builtin:subjectivity", max_train=64, max_eval=16)
    result = train_standard(task, pool.base_model,
                            TrainConfig(epochs=1, max_length=32, learning_rate=1e-12),
                            show_progress=False, measure_energy=False)
    record = contribute(pool, task, result)
    target = load_task("builtin:debate-role", max_train=64, max_eval=16)
    tokenizer = load_tokenizer(pool.base_model)
    metrics = ["knn", "logme", "leep"]
    (candidate,) = score_candidates(pool, [record], target, tokenizer, metrics, max_samples=48,
                                    max_length=32, seed=3, show_progress=False)
    reference = reference_scores(pool.base_model, target, tokenizer, metrics, max_samples=48,
                                 max_length=32, seed=3)
    assert reference["knn"] == pytest.approx(candidate.scores["knn"], abs=1e-9)
    assert reference["logme"] == pytest.approx(candidate.scores["logme"], rel=1e-4)
    assert math.isnan(reference["leep"])  # LEEP reads the source head: no reference
    # another sample gives another reference: the seed reaches the sample
    other = reference_scores(pool.base_model, target, tokenizer, ["logme"], max_samples=48,
                             max_length=32, seed=4)
    assert other["logme"] != pytest.approx(reference["logme"], rel=1e-6)
