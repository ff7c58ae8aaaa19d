"""``adapt`` without a threshold: the best-ranked candidate, trained with the fallback's budget
until early stopping, is the result (not whatever its first short warm start reached)."""

from __future__ import annotations

import pytest

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.training.trainer import TrainConfig

FALLBACK = TrainConfig(epochs=3, max_length=32, batch_size=8, evals_per_epoch=2, patience=1)


@pytest.fixture(scope="module")
def target():
    return load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)


def test_no_threshold_trains_the_best_candidate_to_convergence(target, tiny_pool):
    config = AdaptConfig(metric="logme", subset=3, max_tries=2, transfer_epochs=0.5,
                         fallback=FALLBACK, max_samples=48, strategy="early-pass,cutoff")
    assert config.threshold is None
    assert config.transfer_config().epochs == 3  # the fallback's budget, not transfer_epochs
    result = adapt(target, tiny_pool, config, show_progress=False, measure_energy=False)
    (attempt,) = result.attempts  # one transfer, kept: no second try, no fallback
    assert attempt.kind == "transfer" and attempt.passed
    assert attempt.adapter_id == result.scores[0].adapter_id  # the best-ranked candidate
    history = attempt.result.history
    # neither early-pass nor cutoff stopped it (nothing to pass): the budget or patience did
    assert attempt.result.stop_reason in ("budget", "early_stopping")
    assert history[-1]["epoch"] > 0.5
    assert result.report["outcome"] == "transfer"
    assert result.report["threshold"]["value"] is None


def test_a_threshold_still_bounds_a_transfer_by_transfer_epochs(target, tiny_pool):
    config = AdaptConfig(metric="logme", subset=3, max_tries=1, transfer_epochs=0.5,
                         fallback=FALLBACK, max_samples=48, threshold=1.01, strategy="plain")
    assert config.transfer_config().epochs == 0.5
    result = adapt(target, tiny_pool, config, show_progress=False, measure_energy=False)
    assert [a.kind for a in result.attempts] == ["transfer", "standard_lora"]
    assert result.attempts[0].result.epochs_run == pytest.approx(0.5)
