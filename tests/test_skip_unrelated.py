"""``skip-unrelated``: nothing in the subset is related -> straight to the fallback, decided from
the best candidate's linear-probe accuracy against the threshold, before any training."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.errors import UsageError
from adapterpool.loop.adapt import scoring_metrics
from adapterpool.loop.strategies.skip_unrelated import unrelated
from adapterpool.metrics import linear_probe_accuracy
from adapterpool.models.build import load_tokenizer
from adapterpool.models.warm_start import warm_start_model
from adapterpool.ranking.scoring import _scoring_data, candidate_outputs
from adapterpool.training.trainer import TrainConfig

FALLBACK = TrainConfig(epochs=1, max_length=32, batch_size=8, evals_per_epoch=1)
CONFIG = AdaptConfig(metric="knn", subset=3, max_tries=1, transfer_epochs=1, fallback=FALLBACK,
                     max_samples=48, strategy="skip-unrelated", threshold=1.01)


def test_rule_compares_the_best_probe_with_the_threshold():
    assert unrelated(0.60, 0.70, probe_shortfall=0.05)  # 10 points short: nothing related
    assert not unrelated(0.67, 0.70, probe_shortfall=0.05)  # 3 points short: worth a try
    assert not unrelated(0.75, 0.70, probe_shortfall=0.0)  # above the threshold already
    assert unrelated(0.69, 0.70, probe_shortfall=0.0)
    assert not unrelated(math.nan, 0.70, probe_shortfall=0.05)  # no probe decides nothing


def test_bad_settings_are_refused():
    with pytest.raises(UsageError, match="probe_shortfall must be >= 0"):
        AdaptConfig(strategy="skip-unrelated", probe_shortfall=-0.1)
    with pytest.raises(UsageError, match="threshold_metric 'accuracy'"):
        AdaptConfig(strategy="skip-unrelated", threshold_metric="f1_macro")


def test_the_probe_is_scored_beside_the_ranking_metric():
    """The strategy's metric joins the ranking's (after it: the first orders the candidates),
    once, and only where it applies to the task's kind."""
    config = AdaptConfig(metric="knn", strategy="skip-unrelated")
    assert scoring_metrics(config, "single") == ["knn", "linear-probe"]
    assert scoring_metrics(replace(config, metric="linear-probe"), "pair") == ["linear-probe"]
    assert scoring_metrics(AdaptConfig(metric="knn", strategy="plain"), "single") == ["knn"]
    assert scoring_metrics(replace(config, metric="target-loglik"), "text2text") == [
        "target-loglik"]  # a linear probe reads class labels: not on text2text


@pytest.fixture(scope="module")
def target():
    return load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)


def test_nothing_near_the_threshold_goes_straight_to_the_fallback(target, tiny_pool):
    """The probe recorded is the best candidate's cross-validated logistic-regression accuracy
    on its features over the scoring sample; within probe_shortfall of the threshold the
    transfer runs, further below none does."""
    kept = adapt(target, tiny_pool, replace(CONFIG, threshold=0.6, probe_shortfall=1.0),
                 show_progress=False, measure_energy=False)
    decision = kept.report["skip_unrelated"]
    probes = {s.adapter_id: s.scores["linear-probe"] for s in kept.scores}
    assert len(probes) == 3 and decision["probe"] == max(probes.values())
    best = max(probes, key=probes.get)
    assert decision["adapter_id"] == best
    # the probe is the metric on the best candidate's features over the scoring sample
    tokenizer = load_tokenizer(tiny_pool.base_model)
    data, labels = _scoring_data(target, tokenizer, 48, 32, 0)
    model = warm_start_model(tiny_pool.base_model, target.label_names,
                             tiny_pool.adapter_dir(best))
    features = candidate_outputs(model, data, tokenizer).features
    assert decision["probe"] == pytest.approx(linear_probe_accuracy(features, labels, seed=0))
    assert decision["shortfall"] == pytest.approx(0.6 - decision["probe"])
    assert kept.report["skipped"] is None
    assert [a.kind for a in kept.attempts][0] == "transfer"

    threshold = decision["probe"] + 0.02  # 2 points over the best probe
    skipped = adapt(target, tiny_pool, replace(CONFIG, threshold=threshold, probe_shortfall=0.01),
                    show_progress=False, measure_energy=False)
    assert skipped.report["skipped"]["probe"] == pytest.approx(decision["probe"])
    assert [a.kind for a in skipped.attempts] == ["standard_lora"]  # no transfer at all
    near = adapt(target, tiny_pool, replace(CONFIG, threshold=threshold, probe_shortfall=0.03,
                                            max_tries=1), show_progress=False,
                 measure_energy=False)
    assert near.report["skipped"] is None and near.attempts[0].kind == "transfer"
    assert np.isfinite(near.report["skip_unrelated"]["shortfall"])


def test_no_threshold_decides_nothing(target, tiny_pool):
    """With no threshold nothing can fall short of it: the best candidate is trained as usual."""
    result = adapt(target, tiny_pool, replace(CONFIG, threshold=None, max_tries=1),
                   show_progress=False, measure_energy=False)
    assert result.report["skipped"] is None and result.report["skip_unrelated"] is None
    assert [a.kind for a in result.attempts] == ["transfer"]
