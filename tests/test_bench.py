"""The benchmark harness end to end on a tiny model, its statistics on hand-made cases, resuming."""

from __future__ import annotations

import json
import math

import pytest
from scipy.stats import weightedtau

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import BenchRun
from adapterpool.bench.quality import Baseline, Candidate, ranking_quality, simulate_loop
from adapterpool.bench.report import summarize, write_reports
from adapterpool.tasks import load_task


def test_ranking_quality_hand_computed():
    accuracies = [0.70, 0.90, 0.80, 0.60]
    perfect = ranking_quality([1, 4, 3, 0], accuracies)
    assert perfect["weighted_tau"] == pytest.approx(1.0) and perfect["pearson"] > 0.9
    assert perfect["top1_hit"] == 1.0 and perfect["regret_at_1"] == 0.0
    wrong = ranking_quality([4, 1, 2, 3], accuracies)  # picks 0.70 first, top-3 = .70 .60 .80
    assert wrong["top1_hit"] == 0.0
    assert wrong["regret_at_1"] == pytest.approx(20.0) and wrong["regret_at_3"] == pytest.approx(10.0)
    assert wrong["weighted_tau"] == pytest.approx(weightedtau([4, 1, 2, 3], accuracies)[0])


def test_simulated_loop_follows_the_rules():
    cands = [Candidate("a", 3.0, 1.0, 0.60, 0.61, 10.0, 1.0),
             Candidate("b", 2.0, 1.0, 0.85, 0.86, 10.0, 1.0),
             Candidate("c", math.nan, 1.0, 0.90, 0.91, 10.0, 1.0)]
    base = Baseline(0.88, 0.87, 100.0, 5.0)
    run = simulate_loop(cands, base, subset=3, max_tries=2, threshold=0.8, seed=0)
    # a fails (0.60), b passes: scoring 3 x 1s + 2 x 10s of training
    assert run == {"outcome": "transfer", "tries": 2, "test_accuracy": 0.86, "seconds": 23.0,
                   "kwh": 2.0, "adapter_id": "b"}
    fallback = simulate_loop(cands, base, subset=3, max_tries=1, threshold=0.8, seed=0)
    assert fallback["outcome"] == "standard_lora" and fallback["seconds"] == 113.0
    assert fallback["test_accuracy"] == 0.87


@pytest.fixture()
def bench_folders(tmp_path):
    """Two real builtin tasks written as bench-data style folders."""
    root = tmp_path / "data"
    for name in ("debate-role", "speech-party"):
        task = load_task(f"builtin:{name}", max_train=48, max_eval=24)
        folder = root / name
        folder.mkdir(parents=True)
        for split in ("train", "validation", "test"):
            records = task.split(split)
            folder.joinpath(f"{split}.jsonl").write_text("".join(
                json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(records.text, records.label)))
        folder.joinpath("meta.json").write_text(json.dumps(
            {"name": name, "task_type": "single", "label_names": list(task.label_names)}))
    return root


def test_bench_runs_resumes_and_reports(tiny_base_model, bench_folders, tmp_path):
    config = BenchConfig(
        discover=[str(bench_folders)], extra_sources=["builtin:subjectivity"],
        metrics=["logme", "leep", "nce"], ensemble_members=["logme", "leep"],
        max_train=48, max_eval=24, max_length=32, source_epochs=1, transfer_epochs=1,
        baseline_max_epochs=2, scoring_samples=32, subset=2, max_tries=1, loop_seeds=[0, 1],
        base_model=tiny_base_model, run_dir=str(tmp_path / "run"), out_dir=str(tmp_path / "out"),
    )
    first = BenchRun(config, show_progress=False, measure_energy=False)
    state = first.run()
    # 3 sources, then per target 2 fine-tunes (the others) + 1 baseline
    assert first.state.trained == 3 + 2 * (2 + 1)
    assert set(state["targets"]) == {"debate-role", "speech-party"}
    again = BenchRun(config, show_progress=False, measure_energy=False)
    again.run()
    assert again.state.trained == 0  # resumed: nothing recomputed
    summary = summarize(again.state.data)
    assert set(summary["mean"]) == {"logme", "leep", "nce", "ensemble"}
    for target in summary["targets"].values():
        assert len(target["candidates"]) == 2
        assert set(target["quality"]["logme"]) >= {"weighted_tau", "top1_hit", "regret_at_1"}
    assert summary["best_metric"] in summary["mean"]
    files = write_reports(summary, config.out_dir)
    assert {f.name for f in files} >= {"summary.json", "README.md", "metric_quality.png"}
    assert "| logme |" in (tmp_path / "out" / "README.md").read_text()
