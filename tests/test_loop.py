"""The loop for real on a tiny random BERT: thresholds, K tries, fallback, contribution, report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from adapterpool import AdaptConfig, adapt, load_task, rank
from adapterpool.errors import UsageError
from adapterpool.pool.store import seeded_sample
from adapterpool.training.trainer import TrainConfig

FAST = TrainConfig(epochs=1, max_length=32, evals_per_epoch=1)
CONFIG = AdaptConfig(metric="logme", subset=3, max_tries=2, transfer_epochs=1, fallback=FAST,
                     seed=0, max_samples=48, strategy="plain")  # the published loop's mechanics
REPORT_KEYS = {"adapterpool_version", "seed", "base_model", "task", "metric", "threshold", "subset",
               "scores", "attempts", "outcome", "contributed_adapter_id", "timing", "energy",
               "strategy", "skipped", "settings", "adapter_dir"}
ATTEMPT_KEYS = {"kind", "adapter_id", "epochs", "train_seconds", "validation", "test", "passed",
                "energy", "history", "stop_reason", "head_kept", "final"}


@pytest.fixture(scope="module")
def target():
    return load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)


def _adapt(task, pool, tmp_path, *, out: bool = True, **changes):
    return adapt(task, pool, replace(CONFIG, **changes),
                 out_dir=tmp_path / "run" if out else None, show_progress=False,
                 measure_energy=False)


def test_threshold_zero_passes_at_first_try(target, tiny_pool, tmp_path):
    result = _adapt(target, tiny_pool, tmp_path, threshold=0.0)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert REPORT_KEYS <= set(report)
    assert report["outcome"] == "transfer"
    assert [a["kind"] for a in report["attempts"]] == ["transfer"]
    assert report["attempts"][0]["adapter_id"] == report["scores"][0]["adapter_id"]
    assert report["attempts"][0]["passed"] is True
    scores = [s["score"] for s in report["scores"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert set(report["subset"]) == {r.id for r in tiny_pool.list()}
    assert report["task"]["n_train"] == 64 and report["seed"] == 0
    assert report["contributed_adapter_id"] is None
    assert report["timing"]["total_seconds"] >= report["timing"]["training_seconds"] > 0
    assert 0 < report["timing"]["total_cpu_seconds"] < 4 * report["timing"]["total_seconds"]
    # the CPU time before any training is a part of the whole, and the scoring is in it
    timing = report["timing"]
    assert 0 < timing["scoring_cpu_seconds"] < timing["total_cpu_seconds"]
    assert timing["scoring_cpu_seconds"] < 4 * timing["scoring_seconds"] + 1.0
    assert report["strategy"] == ["plain"] and report["skipped"] is None
    assert ATTEMPT_KEYS <= set(report["attempts"][0])
    assert report["attempts"][0]["stop_reason"] == "budget"
    assert report["attempts"][0]["final"] is True
    assert all({"step", "epoch", "seconds", "accuracy"} <= set(h)
               for h in report["attempts"][0]["history"])
    assert AdaptConfig.from_dict(report["settings"]["config"]) == replace(CONFIG, threshold=0.0)
    assert result.outcome == "transfer" and result.scores[0].adapter_id == report["scores"][0][
        "adapter_id"]


def test_unreachable_threshold_ends_in_standard_lora_after_k_tries(target, tiny_pool, tmp_path):
    report = _adapt(target, tiny_pool, tmp_path, threshold=1.01, max_tries=2).report
    kinds = [a["kind"] for a in report["attempts"]]
    assert kinds == ["transfer", "transfer", "standard_lora"]
    assert [a["adapter_id"] for a in report["attempts"][:2]] == [
        s["adapter_id"] for s in report["scores"][:2]]
    assert report["attempts"][2]["adapter_id"] is None
    assert not any(a["passed"] for a in report["attempts"])
    best = max(report["attempts"], key=lambda a: a["validation"]["accuracy"])
    assert [a["final"] for a in report["attempts"]] == [a is best for a in report["attempts"]]
    assert report["outcome"] == "failed"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_contribute_adds_exactly_the_passing_adapter_with_parent(target, pool_copy, tmp_path):
    before = {r.id for r in pool_copy.list()}
    report = _adapt(target, pool_copy, tmp_path, threshold=0.0, contribute=True).report
    after = {r.id: r for r in pool_copy.list()}
    added = set(after) - before
    assert added == {report["contributed_adapter_id"]}
    record = after[report["contributed_adapter_id"]]
    assert record.parent_id == report["attempts"][0]["adapter_id"]
    assert record.task_name == "movie-sentiment" and record.label_names == ["negative", "positive"]
    assert record.metrics["validation"] == report["attempts"][0]["validation"]


def test_failed_run_contributes_nothing(target, pool_copy, tmp_path):
    before = [r.id for r in pool_copy.list()]
    report = _adapt(target, pool_copy, tmp_path, threshold=1.01, max_tries=1,
                    contribute=True).report
    assert report["contributed_adapter_id"] is None
    assert [r.id for r in pool_copy.list()] == before


def test_standard_lora_pass_is_contributed_without_parent(target, pool_copy, tmp_path):
    report = _adapt(target, pool_copy, tmp_path, threshold=0.0, max_tries=0, contribute=True).report
    assert [a["kind"] for a in report["attempts"]] == ["standard_lora"]
    assert report["outcome"] == "standard_lora" and report["scores"] == []
    assert pool_copy.get(report["contributed_adapter_id"]).parent_id is None


def test_final_adapter_loads_with_peft(target, tiny_pool, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    _adapt(target, tiny_pool, tmp_path, threshold=0.0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_pool.base_model, num_labels=2)
    model = PeftModel.from_pretrained(base, str(tmp_path / "run" / "adapter"))
    assert model.peft_config["default"].peft_type.value == "LORA"


def test_rank_is_seeded_and_scores_several_metrics_at_once(target, tiny_pool):
    metrics = ["logme", "leep", "nce", "h-score"]
    first = rank(target, tiny_pool, metrics, subset=2, seed=3, max_samples=48,
                 show_progress=False, measure_energy=False)
    again = rank(target, tiny_pool, metrics, subset=2, seed=3, max_samples=48,
                 show_progress=False, measure_energy=False)
    assert first.subset == again.subset and len(first.subset) == 2
    assert [s.scores for s in first.scores] == [s.scores for s in again.scores]
    assert all(set(s.scores) == set(metrics) for s in first.scores)
    assert first.scores[0].scores["logme"] >= first.scores[1].scores["logme"]
    # and the seed decides: a seed whose draw differs gives that other subset
    records = tiny_pool.list()
    other = next(s for s in range(100)
                 if [r.id for r in seeded_sample(records, 2, s)] != first.subset)
    moved = rank(target, tiny_pool, ["knn"], subset=2, seed=other, max_samples=48,
                 show_progress=False, measure_energy=False)
    assert moved.subset == [r.id for r in seeded_sample(records, 2, other)] != first.subset


def test_unknown_metric_fails_before_any_work(target, tiny_pool, tmp_path):
    from adapterpool.metrics import UnknownMetricError

    with pytest.raises(UnknownMetricError, match="logme"):
        _adapt(target, tiny_pool, tmp_path, metric="logmee")
    assert not (tmp_path / "run").exists()


def test_without_out_dir_nothing_is_written_until_save_pretrained(
    target, pool_copy, tmp_path, monkeypatch
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = {r.id for r in pool_copy.list()}
    result = _adapt(target, pool_copy, tmp_path, out=False, threshold=0.0, contribute=True)
    assert list(cwd.iterdir()) == [] and not (tmp_path / "run").exists()
    assert result.report["adapter_dir"] is None
    added = {r.id for r in pool_copy.list()} - before  # contributing still works
    assert added == {result.report["contributed_adapter_id"]}

    saved = result.save_pretrained(tmp_path / "saved")
    report = json.loads((saved / "report.json").read_text())
    assert report == result.to_dict() and report["adapter_dir"] == str(saved / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(pool_copy.base_model, num_labels=2)
    model = PeftModel.from_pretrained(base, str(saved / "adapter"))
    assert model.peft_config["default"].peft_type.value == "LORA"


def test_old_keyword_arguments_still_work_with_a_deprecation_warning(target, tiny_pool, tmp_path):
    with pytest.warns(DeprecationWarning, match="AdaptConfig"):
        result = adapt(target, tiny_pool, metric="logme", subset=3, max_tries=1, epochs=1,
                       train_config=FAST, threshold=0.0, max_samples=48, show_progress=False,
                       measure_energy=False)
    assert result.outcome == "transfer"
    assert result.report["settings"]["epochs"] == 1
    assert result.report["settings"]["train"] == replace(FAST, seed=0).as_dict()
    with pytest.raises(UsageError, match="did you mean 'max_tries'"):
        adapt(target, tiny_pool, max_trys=1)


def test_rank_by_the_ensemble_of_metrics(target, tiny_pool):
    from adapterpool.metrics import ENSEMBLE_MEMBERS, ensemble

    result = rank(target, tiny_pool, ["ensemble"], subset=3, seed=0, max_samples=48,
                  show_progress=False, measure_energy=False)
    values = [s.scores["ensemble"] for s in result.scores]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 for v in values)
    expected = ensemble({m: [s.scores[m] for s in result.scores] for m in ENSEMBLE_MEMBERS})
    assert values == pytest.approx(list(expected))


def test_a_candidate_that_cannot_be_scored_is_never_tried(target, pool_copy, tmp_path):
    """Broken weights on disk: NaN score (null in the report) with its error, ranked last, and the
    loop tries the others instead of failing on it."""
    broken = pool_copy.list()[0]
    weights = pool_copy.path / "adapters" / broken.id / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    report = _adapt(target, pool_copy, tmp_path, threshold=1.01, max_tries=3).report
    last = report["scores"][-1]
    assert last["adapter_id"] == broken.id and last["score"] is None and last["error"]
    assert report["warnings"] == [f"adapter {broken.id}: {last['error']}"]
    tried = [a["adapter_id"] for a in report["attempts"] if a["kind"] == "transfer"]
    assert broken.id not in tried and len(tried) == 2
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN anywhere
