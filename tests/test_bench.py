"""The benchmark harness: its statistics on hand-computed cases, the loop replay on a hand-made
table, and a tiny end-to-end run (random 2-layer BERT) that resumes without retraining."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from scipy.stats import weightedtau

from adapterpool.bench.cli import build_config, main
from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import BenchRun
from adapterpool.bench.quality import (
    Baseline,
    Candidate,
    random_ranking_quality,
    ranking_quality,
    seeded_subset,
    simulate_loop,
)
from adapterpool.bench.render import write_reports
from adapterpool.bench.report import (
    choose_default_strategy,
    summarize,
    summarize_strategies,
    summarize_target,
)
from adapterpool.bench.state import BenchState, read_state
from adapterpool.pool.store import seeded_sample
from adapterpool.tasks import load_task

ACC = [0.70, 0.90, 0.80, 0.60]


def test_ranking_quality_hand_computed():
    perfect = ranking_quality([1, 4, 3, 0], ACC)
    assert perfect["weighted_tau"] == pytest.approx(1.0) and perfect["pearson"] > 0.9
    assert perfect["top1_hit"] == 1.0 and perfect["regret_at_1"] == 0.0
    assert perfect["regret_at_3"] == 0.0
    wrong = ranking_quality([4, 1, 2, 3], ACC)  # picks 0.70 first; top 3 = .70 .60 .80
    assert wrong["top1_hit"] == 0.0
    assert wrong["regret_at_1"] == pytest.approx(20.0)
    assert wrong["regret_at_3"] == pytest.approx(10.0)
    assert wrong["weighted_tau"] == pytest.approx(weightedtau([4, 1, 2, 3], ACC)[0])
    reversed_ = ranking_quality([3, 0, 1, 4], ACC)
    assert reversed_["weighted_tau"] == pytest.approx(-1.0)
    assert reversed_["regret_at_1"] == pytest.approx(30.0)


def test_ranking_quality_nan_and_ties():
    # a NaN score ranks last: the same as the lowest finite score here
    with_nan = ranking_quality([1, 4, 3, math.nan], ACC)
    assert with_nan["top1_hit"] == 1.0 and with_nan["weighted_tau"] == pytest.approx(1.0)
    # two candidates tie for the best accuracy: picking either is a hit
    tied = ranking_quality([0, 1, 5, 2], [0.5, 0.9, 0.9, 0.7])
    assert tied["top1_hit"] == 1.0 and tied["regret_at_1"] == 0.0
    assert math.isnan(ranking_quality([1, 1, 1, 1], ACC)["weighted_tau"])  # says nothing


def test_random_reference_is_the_expectation():
    ref = random_ranking_quality(ACC)
    assert ref["top1_hit"] == pytest.approx(0.25)
    assert ref["regret_at_1"] == pytest.approx((20 + 0 + 10 + 30) / 4)
    # 3 of 4: only {.70 .80 .60} misses the best, by 10 points
    assert ref["regret_at_3"] == pytest.approx(10 / 4)


def test_simulated_loop_follows_the_rules():
    cands = [Candidate("a", 3.0, 1.0, 0.60, 0.61, 10.0, 1.0, 0.1),
             Candidate("b", 2.0, 1.0, 0.85, 0.86, 10.0, 1.0, 0.1),
             Candidate("c", math.nan, 1.0, 0.90, 0.91, 10.0, 1.0, 0.1)]
    base = Baseline(0.88, 0.87, 100.0, 5.0, 0.5)
    run = simulate_loop(cands, base, subset=3, max_tries=2, threshold=0.8, seed=0)
    # a fails (0.60), b passes: scoring 3 x 1 s + 2 x 10 s of training
    assert run == {"outcome": "transfer", "tries": 2, "test_accuracy": 0.86, "seconds": 23.0,
                   "kwh": 2.0, "co2_kg": pytest.approx(0.2), "adapter_id": "b"}
    fallback = simulate_loop(cands, base, subset=3, max_tries=1, threshold=0.8, seed=0)
    assert fallback["outcome"] == "standard_lora" and fallback["seconds"] == 113.0
    assert fallback["test_accuracy"] == 0.87 and fallback["kwh"] == 6.0


def test_subset_draw_is_the_pools():
    cands = [Candidate(f"id{i}", 0.0, 0, 0, 0, 0, 0) for i in (5, 1, 3, 0, 4, 2)]
    records = [SimpleNamespace(id=c.adapter_id) for c in cands]
    for seed in range(5):
        assert [c.adapter_id for c in seeded_subset(cands, 3, seed)] == [
            r.id for r in seeded_sample(records, 3, seed)]


def _hand_target() -> dict:
    """Three candidates; logme ranks b > a > c, leep a > b > c. Truth: b .85, a .80, c .70."""
    def run(val, test, seconds):
        return {"validation": {"accuracy": val}, "test": {"accuracy": test},
                "train_seconds": seconds, "epochs": 2.0, "kwh": seconds / 100,
                "co2_kg": seconds / 1000}

    def score(logme, leep):
        return {"scores": {"logme": logme, "leep": leep}, "seconds": 5.0, "forward_seconds": 2.0,
                "metric_seconds": {"logme": 2.0, "leep": 1.0}, "source_task": "s",
                "kwh": 0.05, "co2_kg": 0.005}

    return {
        "scores": {"a": score(1.0, 0.9), "b": score(2.0, 0.5), "c": score(0.0, 0.1)},
        "finetune": {"a": run(0.80, 0.80, 20.0), "b": run(0.86, 0.85, 30.0),
                     "c": run(0.70, 0.70, 25.0)},
        "baseline": run(0.88, 0.86, 200.0),
    }


def test_loop_replay_on_a_hand_made_table():
    config = BenchConfig(metrics=["logme", "leep"], ensemble_members=["logme", "leep"], subset=3,
                         max_tries=1, threshold_fraction=0.95, loop_seeds=[0, 1]).as_dict()
    out = summarize_target(_hand_target(), config)
    assert out["threshold"] == pytest.approx(0.95 * 0.88)  # 0.836: b passes, a does not
    logme = out["loop"]["logme"]  # tries b: scoring 3 x (2 + 2) s + 30 s of training
    assert logme["transfer_rate"] == 1.0
    assert logme["accuracy_ratio"] == pytest.approx(0.85 / 0.86)
    assert logme["time_ratio"] == pytest.approx((12 + 30) / 200)
    # energy: scoring 3 x 4 s at the metered 0.01 kWh/s, then b's 0.3 kWh
    assert logme["energy_ratio"] == pytest.approx((0.12 + 0.30) / 2.0)
    leep = out["loop"]["leep"]  # tries a (fails), falls back: scoring 3 x 3 s + 20 + 200 s
    assert leep["transfer_rate"] == 0.0 and leep["accuracy_ratio"] == pytest.approx(1.0)
    assert leep["time_ratio"] == pytest.approx((9 + 20 + 200) / 200)
    ens = out["loop"]["ensemble"]  # ranks b (mean rank 0.75) over a (0.75) -> first in id order: a
    assert ens["time_ratio"] == pytest.approx((3 * 5 + 20 + 200) / 200)
    assert out["quality"]["logme"]["top1_hit"] == 1.0
    assert out["quality"]["leep"]["regret_at_1"] == pytest.approx(5.0)
    assert out["loop"]["oracle"]["transfer_rate"] == 1.0
    assert out["ground_truth"] == "test" and out["scoring_energy"] == "measured"
    assert set(out["threshold_sweep"]["logme"]) == {"0.9", "0.95", "0.97", "1"}


def test_bench_runs_resumes_and_reports(tiny_base_model, bench_folders, tmp_path):
    config = BenchConfig(
        discover=[str(bench_folders)], extra_sources=["builtin:subjectivity"],
        metrics=["logme", "leep", "nce"], ensemble_members=["logme", "leep"],
        max_train=48, max_eval=24, max_length=32, source_epochs=1, transfer_epochs=1,
        baseline_max_epochs=2, scoring_samples=32, subset=2, max_tries=1, loop_seeds=[0, 1],
        base_model=tiny_base_model, run_dir=str(tmp_path / "run"), out_dir=str(tmp_path / "out"),
        strategies=["plain", "early-pass,cutoff,warm-fallback"], strategy_seeds=[0],
        strategy_targets=["debate-role"], strategy_metric="logme",
    )
    first = BenchRun(config, show_progress=False, measure_energy=False)
    state = first.run()
    # 3 sources, then per target 2 fine-tunes (the other two pool members) + 1 baseline
    assert first.state.trained == 3 + 2 * (2 + 1) + 2
    assert first.state.computed == {"source": 3, "scores": 2, "reference": 2, "finetune": 4,
                                    "baseline": 2, "strategy": 2}
    runs = state["targets"]["debate-role"]["strategies"]
    assert set(runs) == {"plain", "early-pass,cutoff,warm-fallback"}
    for strategy, by_seed in runs.items():
        run = by_seed["0"]
        assert run["strategy"] == strategy.split(",") and run["seconds"] > 0
        assert run["outcome"] in {"transfer", "standard_lora", "warm_fallback", "failed"}
        sources = {a["adapter_id"] for a in run["attempts"] if a["adapter_id"]}
        assert not any(s.startswith("debate-role") for s in sources)  # leave-one-out
    assert set(state["targets"]) == {"debate-role", "speech-party"}
    for key, target in state["targets"].items():
        sources = {e["source_task"] for e in target["scores"].values()}
        assert key not in sources and len(sources) == 2  # leave-one-out
        assert set(target["finetune"]) == set(target["scores"])

    again = BenchRun(config, show_progress=False, measure_energy=False)
    again.run()
    assert again.state.trained == 0 and not again.state.computed  # resumed: nothing recomputed

    # an interruption: one fine-tune and one source's record lost (the adapter is in the pool)
    saved = json.loads((tmp_path / "run" / "state.json").read_text())
    del saved["targets"]["speech-party"]["finetune"][min(saved["targets"]["speech-party"]
                                                        ["finetune"])]
    del saved["sources"]["builtin-subjectivity"]
    (tmp_path / "run" / "state.json").write_text(json.dumps(saved))
    resumed = BenchRun(config, show_progress=False, measure_energy=False)
    resumed.run()
    assert resumed.state.computed == {"finetune": 1}  # the source came back from the pool
    assert BenchState(tmp_path / "run" / "state.json").data["sources"]["builtin-subjectivity"]

    summary = summarize(resumed.state.data)
    assert set(summary["strategies"]) == {"plain", "early-pass,cutoff,warm-fallback"}
    assert summary["default_strategy"] in summary["strategies"]
    assert set(summary["targets"]["debate-role"]["strategies"]) == set(summary["strategies"])
    assert set(summary["mean"]) == {"logme", "leep", "nce", "ensemble", "random", "oracle"}
    assert summary["n_targets"] == 2 and not summary["incomplete_targets"]
    assert summary["best_metric"] in {"logme", "leep", "nce", "ensemble"}
    files = write_reports(summary, config.out_dir)
    assert {f.name for f in files} == {"summary.json", "README.md", "metric_quality.png",
                                       "accuracy_vs_time.png", "accuracy_vs_co2.png"}
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(written) >= {"config", "targets", "mean", "best_metric", "threshold_sweep",
                            "compute_seconds", "metric_seconds"}
    assert written["default_ranking"] == "logme"  # adapterpool.DEFAULT_METRIC
    for target in written["targets"].values():
        assert len(target["candidates"]) == 2 and target["ground_truth"] == "test"
        for cand in target["candidates"].values():  # raw scores beside the ground truth
            assert set(cand["scores"]) == {"logme", "leep", "nce"}
        assert set(target["quality"]["logme"]) == {"weighted_tau", "pearson", "top1_hit",
                                                   "regret_at_1", "regret_at_3"}
        assert set(target["loop"]["logme"]) >= {"accuracy_ratio", "time_ratio", "energy_ratio",
                                                "co2_ratio", "transfer_rate"}
    for row in written["mean"].values():
        assert 0 < row["accuracy_ratio"] < 5 and row["time_ratio"] > 0
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| logme |" in text and "weighted tau" in text
    for split in ("train", "test"):  # no task text in the reports
        first_text = load_task(str(bench_folders / "debate-role")).split(split).text[0]
        assert first_text not in text and first_text not in json.dumps(written)

    # the command line writes the same reports from the state alone
    code = main(["--config", str(_write_config(config, tmp_path)), "--report-only", "--quiet",
                 "--out", str(tmp_path / "cli-out")])
    assert code == 0 and (tmp_path / "cli-out" / "README.md").is_file()


def test_strategy_summary_and_default_choice():
    def run(outcome, acc, seconds):
        return {"outcome": outcome, "seconds": seconds, "kwh": seconds / 100,
                "test": {"accuracy": acc}, "validation": {"accuracy": acc}, "attempts": [{}]}

    target = {"baseline": {"validation": {"accuracy": 0.9}, "test": {"accuracy": 0.8},
                           "train_seconds": 100.0, "kwh": 1.0},
              "strategies": {"plain": {"0": run("standard_lora", 0.8, 120.0),
                                       "1": run("transfer", 0.8, 40.0)},
                             "fast": {"0": run("transfer", 0.76, 20.0),
                                      "1": run("transfer", 0.76, 20.0)},
                             "good": {"0": run("transfer", 0.8, 50.0),
                                      "1": run("warm_fallback", 0.8, 70.0)}}}
    rows = summarize_strategies(target)
    assert rows["plain"]["time_ratio"] == pytest.approx(0.8)  # mean 80 s / 100 s
    assert rows["plain"]["transfer_rate"] == 0.5 and rows["plain"]["accuracy_ratio"] == 1.0
    assert rows["fast"]["accuracy_ratio"] == pytest.approx(0.95)
    assert rows["good"]["energy_ratio"] == pytest.approx(0.6)
    table = {name: {**row, "per_target": {"t": row}} for name, row in rows.items()}
    assert choose_default_strategy(table) == "good"  # fast loses accuracy; good beats plain
    table["good"]["per_target"]["t"] = {**rows["good"], "time_ratio": 1.2}
    assert choose_default_strategy(table) == "plain"  # one target too costly disqualifies


def _write_config(config: BenchConfig, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(config.as_dict()))
    return path


def test_config_errors_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max_train": 10, "bogus": 1}))
    with pytest.raises(Exception, match="unknown bench settings"):
        BenchConfig.from_file(path)
    path.write_text(json.dumps({"metrics": ["logme"], "ensemble_members": ["leep"]}))
    with pytest.raises(Exception, match="ensemble members"):
        BenchConfig.from_file(path)
    path.write_text(json.dumps({"max_train": 10}))
    args = SimpleNamespace(config=str(path), discover=None, source=["builtin:subjectivity"],
                           target=None, metric=None, base_model=None, run_dir=None, out=None,
                           max_train=None, max_eval=None, max_length=48, source_epochs=None,
                           transfer_epochs=None, baseline_max_epochs=None, scoring_samples=None,
                           subset=None, max_tries=None, threshold_fraction=None, seed=None,
                           only_target=None)
    config = build_config(args)
    assert config.max_train == 10 and config.max_length == 48
    assert config.all_sources() == ["builtin:subjectivity"]


def test_only_target_narrows_the_configs_targets_and_refuses_others(tmp_path):
    """``--only-target`` keeps the pool and the other targets' settings as they are and computes
    the named targets only (short key or spec); a name that is no target of the config is refused
    with the targets it has."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"targets": ["builtin:subjectivity", "builtin:word-sense"],
                                "extra_sources": ["builtin:movie-sentiment"]}))
    args = SimpleNamespace(config=str(path), discover=None, source=None, target=None,
                           metric=None, base_model=None, run_dir=None, out=None,
                           only_target=["builtin-word-sense"])
    config = build_config(args)
    assert config.all_targets() == ["builtin:word-sense"]
    assert config.all_sources() == BenchConfig.from_file(path).all_sources()  # pool unchanged
    args.only_target = ["builtin:digits"]
    from adapterpool.errors import UsageError

    with pytest.raises(UsageError, match="builtin:digits is not a target of this config; its "
                       "targets: builtin-subjectivity, builtin-word-sense"):
        build_config(args)


def test_bench_refuses_tasks_without_class_labels(tmp_path):
    from adapterpool.bench.harness import BenchRun
    from adapterpool.errors import UsageError

    run = BenchRun(BenchConfig(run_dir=str(tmp_path / "run"), max_train=20, max_eval=10),
                   show_progress=False, measure_energy=False)
    with pytest.raises(UsageError, match="builtin:definition is a text2text task"):
        run._task("builtin:definition")
    assert run._task("builtin:digits").kind == "image"  # labelled: accuracy applies
    assert not (tmp_path / "run" / "pool").exists()


def test_parallel_parts_merge_into_the_state_without_losing_units(tmp_path):
    """Workers' part files (each seeded with the state, then grown) fold into state.json deeply:
    a part never erases a unit another part or the state holds; merged parts are deleted."""
    state = BenchState(tmp_path / "state.json")
    state.put({"adapter_id": "a-1"}, "sources", "a")
    state.put({"accuracy": 0.5}, "targets", "t", "baseline")
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "sources-b.json").write_text(json.dumps(
        {"config": {"ignored": True}, "sources": {"a": {"adapter_id": "a-1"},
                                                  "b": {"adapter_id": "b-1"}}}))
    (parts / "timed-t.json").write_text(json.dumps(
        {"sources": {"a": {"adapter_id": "a-1"}},
         "targets": {"t": {"strategies": {"plain": {"0": {"seconds": 3.0}}}}}}))
    view = read_state(tmp_path / "state.json")  # what --report-only reads: merged, unwritten
    assert set(view["sources"]) == {"a", "b"} and len(list(parts.iterdir())) == 2
    assert "b" not in json.loads((tmp_path / "state.json").read_text())["sources"]
    state.fold_parts()
    saved = json.loads((tmp_path / "state.json").read_text())
    assert set(saved["sources"]) == {"a", "b"}
    assert saved["targets"]["t"]["baseline"] == {"accuracy": 0.5}  # kept beside the new units
    assert saved["targets"]["t"]["strategies"]["plain"]["0"]["seconds"] == 3.0
    assert "ignored" not in json.dumps(saved)
    assert not list(parts.iterdir())


def _curve(*points: tuple[float, float]) -> list[dict]:
    return [{"step": i + 1, "epoch": e, "seconds": float(i), "accuracy": a}
            for i, (e, a) in enumerate(points)]


def test_cutoff_calibration_replays_the_real_rule_leave_one_target_out():
    from adapterpool.bench.calibration import calibrate_cutoff, replay_cutoff, required_gain

    # Reaches 0.8 at epoch 2 from 0.5 at epoch 0.5: at 0.5 epochs it needs (0.8-0.5)/1.5 = 0.2 an
    # epoch, at 1.0 (best 0.6) (0.8-0.6)/1.0 = 0.2, at 1.5 (best 0.7) 0.1/0.5 = 0.2.
    slow = _curve((0.5, 0.5), (1.0, 0.6), (1.5, 0.7), (2.0, 0.8))
    need = required_gain(slow, 0.8, "accuracy", budget_epochs=2, min_epochs=0.5)
    assert need == pytest.approx(0.2)
    # Passes at once: no constraint; never passes: no constraint either.
    assert required_gain(_curve((0.5, 0.9)), 0.8, "accuracy", budget_epochs=2, min_epochs=0.5) == 0
    flat = _curve((0.5, 0.3), (1.0, 0.3), (1.5, 0.3), (2.0, 0.3))
    assert required_gain(flat, 0.8, "accuracy", budget_epochs=2, min_epochs=0.5) == 0
    # The replay stops where CutoffRule does: 0.3 + 0.2 x 1.5 = 0.6 < 0.8 at the first evaluation.
    cut = replay_cutoff(flat, 0.8, "accuracy", budget_epochs=2, min_epochs=0.5,
                        max_gain_per_epoch=0.2)
    assert (cut.cut_at_epoch, cut.passed, cut.epochs) == (0.5, False, 2.0)
    kept = replay_cutoff(slow, 0.8, "accuracy", budget_epochs=2, min_epochs=0.5,
                         max_gain_per_epoch=need)  # the least gain that keeps it, exactly
    assert kept.cut_at_epoch is None and kept.passed
    assert replay_cutoff(slow, 0.8, "accuracy", budget_epochs=2, min_epochs=0.5,
                         max_gain_per_epoch=0.19).cut_at_epoch == 0.5
    # Leave-one-target-out: held out "a", the gain comes from "b" alone (0.1) and cuts "a"'s slow
    # curve; held out "b", the gain is a's 0.2 and b passes uncut.
    gentle = _curve((0.5, 0.65), (1.0, 0.7), (1.5, 0.75), (2.0, 0.8))  # needs 0.1 an epoch
    result = calibrate_cutoff({"a": [(slow, 0.8), (flat, 0.8)], "b": [(gentle, 0.8)]}, "accuracy",
                              budget_epochs=2, min_epochs=0.5)
    assert result["per_target"]["a"]["max_gain_per_epoch"] == pytest.approx(0.1)
    assert result["per_target"]["a"]["false_cuts"] == 1
    assert result["per_target"]["a"]["failing_cut"] == 1
    assert result["per_target"]["a"]["failing_epochs_saved"] == pytest.approx(0.75)
    assert result["per_target"]["b"] == result["per_target"]["b"] | {
        "max_gain_per_epoch": pytest.approx(0.2), "false_cuts": 0, "passing": 1}
    assert result["max_gain_per_epoch"] == pytest.approx(0.2)
    assert (result["false_cuts"], result["passing"]) == (1, 2)


def test_ground_truth_from_another_machine_is_costed_in_this_machines_seconds():
    from adapterpool.bench.report import costed_here

    config = {"subset": 2, "strategy_metric": "knn"}
    target = {
        "baseline": {"train_seconds": 100.0, "epochs": 10.0, "kwh": 0.01, "co2_kg": 0.004},
        "finetune": {"a": {"train_seconds": 3.0, "epochs": 2.0, "kwh": None, "co2_kg": None},
                     "b": {"train_seconds": 2.0, "epochs": 1.5, "kwh": None, "co2_kg": None}},
        "scores": {i: {"seconds": 1.0, "forward_seconds": 0.4,
                       "metric_seconds": {"knn": 0.1, "logme": 0.5}} for i in "ab"},
        "strategies": {"plain": {"0": {"scoring_seconds": 4.0}}},  # 2.0 s a candidate here
    }
    assert costed_here(target, config) is target  # measured here: nothing to convert
    here = costed_here(target | {"ground_truth_on": "a GPU"}, config)
    # 10 s an epoch here (the baseline's), energy at the baseline's kWh per second.
    assert here["finetune"]["a"]["train_seconds"] == pytest.approx(20.0)
    assert here["finetune"]["b"]["train_seconds"] == pytest.approx(15.0)
    assert here["finetune"]["a"]["kwh"] == pytest.approx(0.002)
    # Scoring there: 0.5 s a candidate (forward + knn); here 2.0 s: every timing x 4.
    assert here["scores"]["a"]["forward_seconds"] == pytest.approx(1.6)
    assert here["scores"]["a"]["metric_seconds"] == pytest.approx({"knn": 0.4, "logme": 2.0})
    assert target["finetune"]["a"]["train_seconds"] == 3.0  # the recorded state is untouched


def test_min_score_calibration_leaves_each_target_out():
    from adapterpool.bench.calibration import calibrate_min_score

    tops = {"a": (0.9, True), "b": (0.7, True), "c": (0.5, False), "d": (0.3, False)}
    result = calibrate_min_score(tops)
    assert result["min_score"] == pytest.approx(0.6)  # midpoint of 0.5 (fails) and 0.7 (passes)
    # held out "b": fitted on a, c, d the midpoint is 0.7, and b (0.7) is not below it: kept
    assert result["per_target"]["b"]["min_score"] == pytest.approx(0.7)
    assert not result["per_target"]["b"]["skipped"] and result["per_target"]["b"]["right"]
    # held out "c": the others give (0.3 + 0.7) / 2 = 0.5; c is not below it, kept, and wrong
    assert result["per_target"]["c"]["min_score"] == pytest.approx(0.5)
    assert not result["per_target"]["c"]["skipped"] and not result["per_target"]["c"]["right"]
    assert result["per_target"]["d"]["skipped"] and result["per_target"]["d"]["right"]
    assert (result["right"], result["targets"]) == (3, 4)
    # overlapping scores: no threshold separates them
    assert calibrate_min_score({"a": (0.4, True), "b": (0.6, False), "c": (0.5, True)})[
        "min_score"] is None


def test_pool_view_serves_the_kept_adapters_task_summaries(tiny_pool):
    """The strategy runs' leave-one-out view must serve task summaries: without them the loop's
    prefilter silently fell back to a seeded random draw (the first family strategy runs did).
    On the view it chooses what it chooses on the pool restricted to the kept adapters."""
    from adapterpool.bench.harness import PoolView
    from adapterpool.errors import PoolError
    from adapterpool.ranking.prefilter import prefilter
    from adapterpool.tasks import load_task

    records = tiny_pool.list()
    kept = [r for r in records if r.id != records[0].id]
    view = PoolView(tiny_pool, {r.id for r in kept})
    task = load_task("builtin:movie-sentiment", max_train=48, max_eval=16, seed=0)
    on_view = prefilter(task, view, 1, seed=0)
    on_pool = prefilter(task, tiny_pool, 1, records=kept, seed=0)
    assert not on_view.warnings  # summaries read, no random fallback
    assert [r.id for r in on_view.chosen] == [r.id for r in on_pool.chosen]
    assert on_view.similarities == on_pool.similarities
    with pytest.raises(PoolError, match="left out"):
        view.task_summaries([records[0].id])
