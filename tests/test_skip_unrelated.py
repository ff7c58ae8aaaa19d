"""``skip-unrelated``: nothing in the subset is related -> straight to the fallback, decided from
the top score against the bare base model's own score, before any training."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.errors import UsageError
from adapterpool.loop.strategies.skip_unrelated import unrelated
from adapterpool.models.build import load_tokenizer
from adapterpool.ranking.scoring import reference_scores
from adapterpool.training.trainer import TrainConfig

FALLBACK = TrainConfig(epochs=1, max_length=32, batch_size=8, evals_per_epoch=1)
CONFIG = AdaptConfig(metric="knn", subset=3, max_tries=1, transfer_epochs=1, fallback=FALLBACK,
                     max_samples=48, strategy="skip-unrelated", threshold=1.01)


def test_rule_compares_the_gain_over_the_base_model():
    assert unrelated(0.60, 0.58, min_gain=0.05)  # +2 points: not enough
    assert not unrelated(0.70, 0.58, min_gain=0.05)
    assert not unrelated(0.50, 0.58, min_gain=-0.1)  # a negative threshold tolerates a loss
    assert not unrelated(math.nan, 0.58, min_gain=0.05)  # no score decides nothing
    assert not unrelated(0.60, math.nan, min_gain=0.05)


def test_metric_without_a_base_model_score_is_refused():
    with pytest.raises(UsageError, match="reads the source head"):
        AdaptConfig(strategy="skip-unrelated", metric="leep")


@pytest.fixture(scope="module")
def target():
    return load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)


def test_unrelated_pool_goes_straight_to_the_fallback(target, tiny_pool):
    """The gain recorded is the top candidate's score minus the base model's on the same
    sample; above min_gain the transfer runs, below it none does."""
    kept = adapt(target, tiny_pool, replace(CONFIG, min_gain=-1.0), show_progress=False,
                 measure_energy=False)
    decision = kept.report["skip_unrelated"]
    reference = reference_scores(tiny_pool.base_model, target, load_tokenizer(
        tiny_pool.base_model), ["knn"], max_samples=48, max_length=32, seed=0)["knn"]
    assert decision["reference"] == pytest.approx(reference)
    top = kept.report["scores"][0]
    assert decision["adapter_id"] == top["adapter_id"]
    assert decision["gain"] == pytest.approx(top["score"] - reference)
    assert kept.report["skipped"] is None
    assert [a.kind for a in kept.attempts] == ["transfer", "standard_lora"]

    skipped = adapt(target, tiny_pool, replace(CONFIG, min_gain=decision["gain"] + 0.01),
                    show_progress=False, measure_energy=False)
    assert skipped.report["skipped"]["gain"] == pytest.approx(decision["gain"])
    assert [a.kind for a in skipped.attempts] == ["standard_lora"]  # no transfer at all
