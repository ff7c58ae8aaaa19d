"""The converged, multi-seed ground truth and what the payoff report reads from it."""

from __future__ import annotations

import json
import math

import pytest

from adapterpool.bench.config import BenchConfig
from adapterpool.bench.harness import BenchRun
from adapterpool.bench.payoff import (
    epochs_to_reach,
    noise_ceiling,
    seed_mean,
    strategy_ratios,
    summarize_ground_truth,
    time_quality,
)
from adapterpool.bench.render import write_reports
from adapterpool.bench.report import summarize
from adapterpool.errors import UsageError
from adapterpool.models.peft_methods import peft_config
from adapterpool.task_kinds import DEFAULT_METRIC


def _unit(curve: list[float], test: float, per_epoch: float = 10.0) -> dict:
    """A recorded run: one evaluation every half epoch with these validation accuracies."""
    history = [{"step": i + 1, "epoch": (i + 1) / 2, "seconds": per_epoch * (i + 1) / 2,
                "accuracy": a} for i, a in enumerate(curve)]
    return {"history": history, "validation": {"accuracy": max(curve)},
            "test": {"accuracy": test}, "epochs": len(curve) / 2,
            "train_seconds": per_epoch * len(curve) / 2}


def test_epochs_to_reach_is_the_first_evaluation_at_the_level():
    run = _unit([0.5, 0.7, 0.8, 0.79], 0.8)
    assert epochs_to_reach(run, 0.7) == 1.0
    assert epochs_to_reach(run, 0.8) == 1.5
    assert epochs_to_reach(run, 0.81) == math.inf


def test_seed_mean_is_infinite_when_one_seed_never_reaches():
    runs = {"0": _unit([0.5, 0.8], 0.80), "1": _unit([0.5, 0.6], 0.70)}
    mean = seed_mean(runs, 0.8)
    assert mean["epochs_to_reach"] == math.inf
    assert mean["accuracy"] == pytest.approx(0.75) and mean["accuracy_seeds"] == [0.80, 0.70]
    assert mean["accuracy_spread"] == pytest.approx(0.05)


def test_related_source_needs_half_the_epochs_standard_lora_needed():
    # standard LoRA reaches its best (0.80) after 2 epochs with both seeds
    baseline = {"0": _unit([0.6, 0.7, 0.75, 0.80, 0.80], 0.80),
                "1": _unit([0.6, 0.7, 0.78, 0.80, 0.79], 0.79)}
    fast = {s: _unit([0.795, 0.80, 0.80], 0.80) for s in ("0", "1")}  # 0.5 epochs: related
    slow = {s: _unit([0.6, 0.7, 0.795, 0.80], 0.80) for s in ("0", "1")}  # 1.5 epochs: not
    scores = {"fast": {"source_task": "a", "scores": {"knn": 0.9}},
              "slow": {"source_task": "b", "scores": {"knn": 0.1}}}
    target = {"gt_baseline": baseline, "gt_finetune": {"slow": slow}, "scores": scores}
    out = summarize_ground_truth(target, ["knn"])
    assert out["reach_level"] == pytest.approx(0.99 * 0.80)
    assert out["baseline"]["epochs_to_reach"] == pytest.approx(2.0)
    assert not out["has_related_source"] and out["related_sources"] == []
    target["gt_finetune"]["fast"] = fast
    out = summarize_ground_truth(target, ["knn"])
    assert out["has_related_source"] and out["related_sources"] == ["fast"]
    assert out["candidates"]["fast"]["scores"] == {"knn": 0.9}
    assert out["complete"]


def test_time_quality_ranks_by_epochs_to_reach_with_never_counted_last():
    """The ranking by time: the top-scored candidate against the soonest to reach the level; a
    candidate that never reaches it counts at the censor (standard LoRA's epochs) or, if later,
    the latest candidate that does."""
    epochs = [0.5, 2.0, math.inf]  # A soonest, B later, C never
    right = time_quality([0.9, 0.5, 0.1], epochs, censor=5.0)
    assert right["time_weighted_tau"] == pytest.approx(1.0)
    assert right["time_top1_hit"] == 1.0 and right["time_regret_at_1"] == 0.0
    b_first = time_quality([0.5, 0.9, 0.1], epochs, censor=5.0)
    assert b_first["time_top1_hit"] == 0.0 and b_first["time_regret_at_1"] == pytest.approx(1.5)
    assert b_first["time_weighted_tau"] < right["time_weighted_tau"]
    # C (never) first: it costs the censor's epochs ...
    assert time_quality([0.1, 0.5, 0.9], epochs, censor=5.0)["time_regret_at_1"] == (
        pytest.approx(4.5))
    # ... and never less than the latest candidate that does reach the level
    assert time_quality([0.1, 0.5, 0.9], epochs, censor=1.0)["time_regret_at_1"] == (
        pytest.approx(1.5))
    nothing = time_quality([0.1, 0.5], [math.inf, math.inf], censor=5.0)
    assert all(math.isnan(v) for v in nothing.values())


def test_ground_truth_quality_has_both_outcomes():
    """Each metric's quality on a target reads the converged test accuracy and the epochs to
    reach: here the metric prefers the candidate that ends higher but reaches the level later."""
    baseline = {s: _unit([0.6, 0.7, 0.75, 0.80, 0.80], 0.80) for s in ("0", "1")}
    fast = {s: _unit([0.795, 0.80, 0.80], 0.80) for s in ("0", "1")}  # 0.5 epochs, test 0.80
    slow = {s: _unit([0.6, 0.7, 0.795, 0.82], 0.84) for s in ("0", "1")}  # 1.5 epochs, 0.84
    scores = {"fast": {"source_task": "a", "scores": {"knn": 0.1}},
              "slow": {"source_task": "b", "scores": {"knn": 0.9}}}
    target = {"gt_baseline": baseline, "gt_finetune": {"fast": fast, "slow": slow},
              "scores": scores}
    quality = summarize_ground_truth(target, ["knn"])["quality"]["knn"]
    assert quality["top1_hit"] == 1.0 and quality["regret_at_1"] == 0.0  # by accuracy: right
    assert quality["time_top1_hit"] == 0.0  # by time: the slower one first
    assert quality["time_regret_at_1"] == pytest.approx(1.0)


def test_oracle_stops_the_soonest_reaching_candidate_at_its_first_reaching_evaluation():
    """The oracle's time: scoring (the strategy runs' mean) plus the candidate that reaches the
    level soonest, stopped there (seconds scaled by the share of the curve's wall time, in the
    measure asked for); standard LoRA where no candidate ever reaches it."""
    baseline = {s: _unit([0.6, 0.7, 0.75, 0.80, 0.80], 0.80) | {"cpu_seconds": 50.0}
                for s in ("0", "1")}  # wall 25 s
    fast = {"0": _unit([0.5, 0.80, 0.80, 0.80], 0.80) | {"cpu_seconds": 40.0},  # at 2 of 4
            "1": _unit([0.80, 0.80, 0.80, 0.80], 0.80) | {"cpu_seconds": 40.0}}  # at 1 of 4
    slow = {s: _unit([0.6, 0.7, 0.795, 0.80], 0.80) | {"cpu_seconds": 40.0} for s in ("0", "1")}
    runs = {"0": {"scoring_cpu_seconds": 4.0, "scoring_seconds": 9.0},
            "1": {"scoring_cpu_seconds": 6.0, "scoring_seconds": 9.0}}
    target = {"gt_baseline": baseline, "gt_finetune": {"fast": fast, "slow": slow},
              "strategies": {"plain": runs}}
    out = summarize_ground_truth(target, [], "cpu")["oracle"]
    # fast: seed 0 reaches at 10 of 20 wall seconds (20 of 40 CPU s), seed 1 at 5 (10 CPU s)
    assert out["candidate"] == "fast" and out["transfer_seconds"] == pytest.approx(15.0)
    assert out["scoring_seconds"] == pytest.approx(5.0)
    assert out["time_ratio"] == pytest.approx((5.0 + 15.0) / 50.0)
    wall = summarize_ground_truth(target, [])["oracle"]
    assert wall["time_ratio"] == pytest.approx((9.0 + 7.5) / 25.0)
    # a unit recorded before CPU time was counts its wall time (here 20 s, reaching at 5)
    target["gt_finetune"]["old"] = {s: _unit([0.80, 0.80, 0.80, 0.80], 0.80) for s in ("0", "1")}
    out = summarize_ground_truth(target, [], "cpu")["oracle"]
    assert out["candidate"] == "old" and out["transfer_seconds"] == pytest.approx(5.0)
    del target["gt_finetune"]["old"]
    never = {s: _unit([0.5, 0.6], 0.6) | {"cpu_seconds": 40.0} for s in ("0", "1")}
    target["gt_finetune"] = {"never": never}
    out = summarize_ground_truth(target, [], "cpu")["oracle"]
    # standard LoRA stopped at its first evaluation at the level: the 4th of 5 (40 of 50 CPU s)
    assert out["candidate"] is None and out["time_ratio"] == pytest.approx((5.0 + 40.0) / 50.0)
    # a seed below the seed-mean level (0.99 x 0.79) never reaches it: its whole run counts
    target["gt_baseline"]["1"] = _unit([0.6, 0.7, 0.75, 0.78], 0.78) | {"cpu_seconds": 20.0}
    out = summarize_ground_truth(target, [], "cpu")["oracle"]
    assert out["seconds"] == pytest.approx(5.0 + (40.0 + 20.0) / 2)
    assert out["time_ratio"] == pytest.approx(out["seconds"] / ((50.0 + 20.0) / 2))


def test_a_standard_lora_seed_that_never_reaches_the_level_counts_the_epochs_it_ran():
    """The level is 0.99 x the seed mean of standard LoRA's best validation accuracy, so a weak
    seed may never reach it: it needed at least the epochs it ran. A candidate never reaching it
    is no relative even then (infinite <= half of infinite must not make every candidate one)."""
    baseline = {"0": _unit([0.6, 0.7, 0.8, 0.8], 0.80),  # reaches 0.792 at 1.5 epochs
                "1": _unit([0.6, 0.7, 0.7, 0.7, 0.7, 0.75], 0.74)}  # best 0.75: never (3 run)
    never = {s: _unit([0.5, 0.6, 0.7, 0.7], 0.7) for s in ("0", "1")}
    fast = {s: _unit([0.79, 0.80], 0.8) for s in ("0", "1")}  # 0.5 epochs <= 0.5 x 2.25
    target = {"gt_baseline": baseline, "gt_finetune": {"never": never}}
    out = summarize_ground_truth(target, [])
    assert out["baseline"]["epochs_to_reach"] == math.inf
    assert out["baseline"]["epochs_to_reach_censored"] == pytest.approx((1.5 + 3.0) / 2)
    assert not out["has_related_source"]
    target["gt_finetune"]["fast"] = fast
    assert summarize_ground_truth(target, [])["related_sources"] == ["fast"]


def test_a_target_standard_lora_does_not_learn_belongs_to_no_group():
    """At chance level every validation curve is noise: a candidate touching the level by luck
    is no relative. A target whose standard LoRA scores within LEARNABLE_MARGIN of predicting
    its most frequent label is reported as not learnable and kept out of both groups."""
    from adapterpool.bench.payoff import summarize_payoff

    noise = {s: _unit([0.21, 0.25, 0.22, 0.20], 0.21) for s in ("0", "1")}
    lucky = {s: _unit([0.26, 0.20], 0.20) for s in ("0", "1")}  # reaches 0.99 x 0.25 at once
    target = {"gt_baseline": noise, "gt_finetune": {"lucky": lucky},
              "task": {"majority_test": 0.20}}
    out = summarize_ground_truth(target, [])
    assert out["has_related_source"] and not out["learnable"]
    summary = summarize_payoff({"targets": {"chance": target}}, {"metrics": []}, {})
    assert summary["not_learnable"] == ["chance"]
    assert summary["groups"] == {"related": [], "unrelated": []}
    target["task"]["majority_test"] = 0.10  # 0.21 is well above predicting one class
    assert summarize_ground_truth(target, [])["learnable"]
    # a warm start that learns it makes it learnable, whatever standard LoRA reached
    target["task"]["majority_test"] = 0.20
    target["gt_finetune"]["learns"] = {s: _unit([0.3, 0.3], 0.26) for s in ("0", "1")}
    assert summarize_ground_truth(target, [])["learnable"]


def test_noise_ceiling_is_the_outcomes_own_agreement():
    agreeing = {i: {"validation_accuracy": v, "accuracy": v, "accuracy_seeds": [v, v, v]}
                for i, v in (("a", 0.9), ("b", 0.8), ("c", 0.7))}
    assert noise_ceiling(agreeing) == {"validation_vs_test": pytest.approx(1.0),
                                       "seed_split": pytest.approx(1.0)}
    # seed 0 ranks the candidates the other way round from seeds 1 and 2
    noisy = {i: {"validation_accuracy": v, "accuracy": v, "accuracy_seeds": seeds}
             for i, v, seeds in (("a", 0.9, [0.7, 0.95, 0.95]), ("b", 0.8, [0.8, 0.8, 0.8]),
                                 ("c", 0.7, [0.9, 0.6, 0.6]))}
    assert noise_ceiling(noisy)["seed_split"] < 1.0


def test_fastest_peer_must_reach_standard_loras_accuracy():
    baseline = {"0": _unit([0.6, 0.8], 0.80, per_epoch=10)}
    peers = {"quick-but-worse": {"0": _unit([0.7], 0.70, per_epoch=10)},
             "quick": {"0": _unit([0.8], 0.80, per_epoch=10)}}
    out = summarize_ground_truth({"gt_baseline": baseline, "peers": peers}, [])
    assert out["fastest_peer"] == {"name": "quick", "seconds": 5.0}
    # a peer's building (its data pass) is part of its time: 5 s of training + 6 s of pass
    # makes it slower than standard LoRA's 10 s
    peers["quick"]["0"] |= {"init_seconds": 6.0, "init_cpu_seconds": 1.0}
    out = summarize_ground_truth({"gt_baseline": baseline, "peers": peers}, [])
    assert out["peers"]["quick"]["seconds"] == 11.0
    assert out["fastest_peer"] == {"name": "standard-lora", "seconds": 10.0}


def test_time_measure_cpu_divides_cpu_seconds_by_cpu_seconds():
    """With time_measure "cpu" every ratio reads the units' and the loop runs' CPU seconds; wall
    seconds (here 3x larger, as on a busy machine) no longer count."""
    base = {"0": _unit([0.6, 0.8], 0.80) | {"cpu_seconds": 4.0}}
    peers = {"quick": {"0": _unit([0.8], 0.80) | {"cpu_seconds": 1.0}}}
    runs = {"0": {"outcome": "transfer", "test": {"accuracy": 0.80}, "seconds": 9.0,
                  "cpu_seconds": 2.0}}
    target = {"gt_baseline": base, "peers": peers, "strategies": {"plain": runs}}
    wall = summarize_ground_truth(target, [])
    assert wall["baseline"]["seconds"] == 10.0 and wall["fastest_peer"]["seconds"] == 5.0
    assert strategy_ratios(target, wall)["plain"]["time_ratio"] == pytest.approx(0.9)
    cpu = summarize_ground_truth(target, [], "cpu")
    assert cpu["baseline"]["seconds"] == 4.0 and cpu["fastest_peer"] == {"name": "quick",
                                                                         "seconds": 1.0}
    ratios = strategy_ratios(target, cpu, "cpu")["plain"]
    assert ratios["time_ratio"] == pytest.approx(0.5)
    assert ratios["peer_time_ratio"] == pytest.approx(2.0)
    with pytest.raises(UsageError, match="time_measure"):
        BenchConfig(time_measure="gpu").validate()


def test_ground_truth_settings_are_checked():
    with pytest.raises(UsageError, match="unknown peers"):
        BenchConfig(ground_truth_max_epochs=2, peers=["lora-xyz"]).validate()
    with pytest.raises(UsageError, match="ground_truth_max_epochs"):
        BenchConfig(peers=["pissa"]).validate()
    with pytest.raises(UsageError, match="prefilter_top, random and optionally score_top"):
        BenchConfig(ground_truth_max_epochs=2, ground_truth_candidates={"top": 1}).validate()
    with pytest.raises(UsageError, match="unknown peers"):
        BenchConfig(strategy_fallback="lora-xyz").validate()
    with pytest.raises(UsageError, match="strategy_scoring_samples must be >= 1"):
        BenchConfig(strategy_scoring_samples=0).validate()


def test_the_loops_fallback_takes_a_peers_recipe(tmp_path):
    """strategy_fallback: the loop runs' fallback is the run's LoRA config (rank, modules) with
    the peer's initialisation; unset, the run's own method."""
    peft = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}
    run = BenchRun(BenchConfig(peft=peft, run_dir=str(tmp_path / "run")), show_progress=False,
                   measure_energy=False)
    assert peft_config(run.fallback_peft()).init_lora_weights is True
    run = BenchRun(BenchConfig(peft=peft, strategy_fallback="olora", run_dir=str(tmp_path / "r")),
                   show_progress=False, measure_energy=False)
    fallback = run.fallback_peft()
    assert fallback.init_lora_weights == "olora"
    assert (fallback.r, fallback.lora_alpha, set(fallback.target_modules)) == (
        4, 8, {"query", "value"})


def test_peers_run_seed_by_seed_and_no_unit_starts_after_the_deadline(tmp_path, monkeypatch):
    """Every peer's first seed before any second; a unit whose turn comes after ``stop_at`` is
    left whole for the next run, which computes exactly the rest."""
    from types import SimpleNamespace

    from adapterpool.bench import ground_truth, harness
    from adapterpool.bench.ground_truth import TIMED_UNITS, run_ground_truth

    config = BenchConfig(ground_truth_max_epochs=1, ground_truth_seeds=[0, 1],
                         peers=["olora", "eva"], run_dir=str(tmp_path / "run"))
    run = BenchRun(config, show_progress=False, measure_energy=False)
    key = harness.task_key("builtin:subjectivity")
    for seed in ("0", "1"):  # standard LoRA recorded: only the peers are left
        run.state.put({"test": {"accuracy": 0.8}}, "targets", key, "gt_baseline", seed)
    clock, trained = [0.0], []

    def fake_train(model, task, tokenizer, config, **_):
        trained.append((model, config.seed))
        clock[0] += 10.0  # each unit takes 10 s
        return "result"

    monkeypatch.setattr(ground_truth, "time", SimpleNamespace(
        time=lambda: clock[0], perf_counter=lambda: clock[0], process_time=lambda: clock[0]))
    monkeypatch.setattr(ground_truth, "load_tokenizer", lambda base: None)
    monkeypatch.setattr(ground_truth, "peer_model", lambda run, pool, task, name, seed: name)
    monkeypatch.setattr(ground_truth, "train", fake_train)
    monkeypatch.setattr(harness, "result_record", lambda result: {"test": {"accuracy": 0.8}})
    monkeypatch.setattr(run, "target_task", lambda spec: "task")
    pool = SimpleNamespace(base_model="unused")

    run_ground_truth(run, pool, "builtin:subjectivity", units=TIMED_UNITS, stop_at=25.0)
    assert trained == [("olora", 0), ("eva", 0), ("olora", 1)]  # started at 0, 10, 20 s
    peers = run.state.get("targets", key, "peers")
    assert {name: sorted(seeds) for name, seeds in peers.items()} == {
        "olora": ["0", "1"], "eva": ["0"]}
    run_ground_truth(run, pool, "builtin:subjectivity", units=TIMED_UNITS)
    assert trained[3:] == [("eva", 1)]
    assert sorted(run.state.get("targets", key, "peers", "eva")) == ["0", "1"]


def test_converged_bench_runs_resumes_and_reports(tiny_base_model, bench_folders, tmp_path):
    config = BenchConfig(
        discover=[str(bench_folders)], extra_sources=["builtin:subjectivity"],
        metrics=["logme", "knn"], ensemble_members=[], max_train=48, max_eval=16, max_test=24,
        max_length=32, source_epochs=1, baseline_max_epochs=2, scoring_samples=32,
        ground_truth_max_epochs=2, ground_truth_seeds=[0, 1], ground_truth_patience=1,
        ground_truth_candidates={"prefilter_top": 1, "random": 0}, peers=["eva"],
        strategies=["skip-unrelated,early-pass"], strategy_subset="prefilter", subset=1,
        threshold_fraction=0.9, time_measure="cpu",
        base_model=tiny_base_model, run_dir=str(tmp_path / "run"), out_dir=str(tmp_path / "out"),
    )
    first = BenchRun(config, show_progress=False, measure_energy=False)
    state = first.run()
    # the progress lines counted every unit they announced: 3 sources; per target scores,
    # 2 baselines, 2 warm starts, 2 peers, 1 strategy run
    assert first.units_done == first.units_total == 3 + 2 * 8
    # 3 sources; per target: 2 baseline seeds, 1 chosen candidate x 2 seeds, 1 peer x 2 seeds
    assert first.state.computed == {"source": 3, "scores": 2, "reference": 2, "gt_baseline": 4,
                                    "gt_finetune": 4, "peers": 4, "strategy": 2}
    for target in state["targets"].values():
        chosen = target["gt_candidates"]
        assert len(chosen["prefilter_top"]) == 1 and chosen["random"] == []
        assert set(target["gt_finetune"]) == set(chosen["prefilter_top"])
        assert set(target["gt_baseline"]) == {"0", "1"}
        assert set(target["peers"]) == {"eva"}
        assert target["task"]["n_validation"] == 16 and target["task"]["n_test"] == 24
        assert set(target["reference"]["scores"]) == {"logme", "knn"}
        # seeds differ: the two baseline runs do not follow the same curve
        curves = [[h["accuracy"] for h in run["history"]]
                  for run in target["gt_baseline"].values()]
        assert all(len(c) >= 2 for c in curves)  # two evaluations an epoch
        for unit in [*target["gt_baseline"].values(), *target["peers"]["eva"].values()]:
            assert 0 < unit["cpu_seconds"] < 4 * unit["train_seconds"]  # CPU time recorded
        # the strategies ran against the ground truth's standard LoRA: the threshold is the
        # fraction of its seed-mean validation accuracy, the subset the prefilter's, and a
        # fallback trains like gt_baseline (two evaluations an epoch)
        (loop,) = target["strategies"]["skip-unrelated,early-pass"].values()
        mean_validation = sum(b["validation"]["accuracy"]
                              for b in target["gt_baseline"].values()) / 2
        assert loop["threshold"] == pytest.approx(0.9 * mean_validation)
        assert loop["subset_strategy"] == "prefilter" and len(loop["ranking"]) == 1
        assert set(loop["skip_unrelated"]) >= {"probe", "threshold", "probe_shortfall"}
        assert loop["cpu_seconds"] > 0
    fallback = first.strategy_config("plain", 0, 0.5).fallback
    assert (fallback.evals_per_epoch, fallback.patience, fallback.epochs) == (2, 1, 2)
    again = BenchRun(config, show_progress=False, measure_energy=False)
    again.run()
    assert not again.state.computed  # resumed: nothing recomputed

    # the plan grows by the loop metric's top 2: recorded beside the first choice, and only the
    # candidates not fine-tuned yet are trained (each seed)
    grown = BenchConfig(**(config.as_dict() | {"ground_truth_candidates": {
        "prefilter_top": 1, "random": 0, "score_top": 2}}))
    more = BenchRun(grown, show_progress=False, measure_energy=False)
    more.run()
    new = 0
    for key, target in more.state.data["targets"].items():
        chosen = target["gt_candidates"]
        metric = grown.strategy_metric  # the loop's, recorded with the choice
        score = {i: e["scores"][metric] for i, e in target["scores"].items()}
        assert chosen["score_top"] == sorted(score, key=lambda i: (-score[i], i))[:2]
        assert chosen["score_metric"] == metric == DEFAULT_METRIC
        assert chosen["prefilter_top"] == state["targets"][key]["gt_candidates"]["prefilter_top"]
        assert set(target["gt_finetune"]) == set(chosen["prefilter_top"]) | set(
            chosen["score_top"])
        new += 2 * len(set(chosen["score_top"]) - set(chosen["prefilter_top"]))
    assert more.state.computed.get("gt_finetune", 0) == new and new > 0
    assert set(more.state.computed) <= {"gt_finetune"}

    summary = summarize(again.state.data)
    assert summary["n_targets"] == 2 and not summary["incomplete_targets"]
    # a target the config no longer names keeps its units but leaves the report
    narrowed = again.state.data | {"config": again.state.data["config"] | {
        "only_targets": ["debate-role"]}}
    assert list(summarize(narrowed)["targets"]) == ["debate-role"]
    assert len(again.state.data["targets"]) == 2
    for key, target in summary["targets"].items():
        assert target["family"] == "politics"
        majority = again.state.data["targets"][key]["task"]["majority_test"]
        best = max([target["baseline"]["accuracy"],
                    *(c["accuracy"] for c in target["candidates"].values())])
        assert 0 < majority < 1 and target["learnable"] == (best >= majority + 0.02)
        assert isinstance(target["has_related_source"], bool)
        (cand,) = target["candidates"].values()
        assert len(cand["accuracy_seeds"]) == 2 and set(cand["scores"]) == {"logme", "knn"}
        assert cand["accuracy"] == pytest.approx(sum(cand["accuracy_seeds"]) / 2)
    assert set(summary["peers"]) == {"eva"}
    assert set(summary["peers"]["eva"]) == set(summary["targets"])
    for key, peer in summary["peers"]["eva"].items():  # seeds run, time against standard LoRA
        assert peer["seeds"] == 2
        assert peer["time_ratio"] == pytest.approx(
            peer["seconds"] / summary["targets"][key]["baseline"]["seconds"])
    # each strategy's per-target rows carry the ratio against the fastest peer too (the results
    # format tools read), the same number as the target's own row
    for key, row in summary["strategies"]["skip-unrelated,early-pass"]["per_target"].items():
        own = summary["targets"][key]["strategies"]["skip-unrelated,early-pass"]
        assert row["peer_time_ratio"] == own["peer_time_ratio"]
        assert row["time_ratio"] == own["time_ratio"]
    # each target has a same-family pool member: agreement counts every learnable target (the
    # tiny random model may learn neither at this size)
    learnable = [k for k, t in summary["targets"].items() if t["learnable"]]
    assert summary["family_agreement"]["targets"] == len(learnable)
    assert sorted(summary["not_learnable"]) == sorted(set(summary["targets"]) - set(learnable))
    # 2 targets are too few to calibrate the "nothing related" rule (3 at least): empty, not wrong
    assert summary["nothing_related_rule"] is None
    assert summary["nothing_related_gain"] == {} and summary["nothing_related_standout"] == {}
    ceilings = [summary["targets"][k]["noise_ceiling_tau"] for k in summary["groups"]["related"]]
    ceilings = [c for c in ceilings if not math.isnan(c)]
    related_ceiling = summary["noise_ceiling_by_group"]["related"]
    assert (math.isnan(related_ceiling) if not ceilings
            else related_ceiling == pytest.approx(sum(ceilings) / len(ceilings)))
    files = write_reports(summary, config.out_dir)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "noise_ceiling_tau" in written["targets"]["debate-role"]
    assert written["targets"]["debate-role"]["oracle"]["scoring_seconds"] > 0
    assert any(f.name == "README.md" for f in files)
    # the report says which metric's top candidates each target's ground truth holds
    grown_summary = summarize(more.state.data)
    assert {t["score_metric"] for t in grown_summary["targets"].values()} == {DEFAULT_METRIC}
    assert {t["score_metric"] for t in summary["targets"].values()} == {None}
    write_reports(grown_summary, tmp_path / "grown")
    names = ", ".join(sorted(grown_summary["targets"]))
    assert (f"by the loop's ranking metric when the target was recorded ({DEFAULT_METRIC}: "
            f"{names})") in (tmp_path / "grown" / "README.md").read_text()


@pytest.mark.parametrize("name", ["pissa", "olora", "eva", "corda", "lora-ga"])
def test_peers_start_from_their_own_initialisation(tiny_base_model, bench_folders, tmp_path, name):
    """Default LoRA starts with B = 0 (a no-op); the peers start elsewhere. PiSSA, OLoRA, CorDA
    and LoRA-GA move B A out of each base weight (so base + B A is still the original weight);
    EVA, CorDA and LoRA-GA read the target's training data (other examples, other factors)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    from adapterpool.bench.ground_truth import peer_model
    from adapterpool.models.build import base_classifier
    from adapterpool.tasks import load_task

    config = BenchConfig(discover=[str(bench_folders)], max_train=32, max_eval=8,
                         max_length=16, base_model=tiny_base_model, ground_truth_max_epochs=1,
                         peers=[name], run_dir=str(tmp_path / "run"))
    run = BenchRun(config, show_progress=False, measure_energy=False)
    pool = run.open_pool()
    task = run._task(str(bench_folders / "debate-role"))
    model = peer_model(run, pool, task, name, seed=0)
    a = {k: v for k, v in model.state_dict().items() if "lora_A" in k}
    b = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert a and b
    if name == "eva":  # EVA's A: unit-norm singular vectors of the target's layer inputs
        for v in a.values():
            assert torch.allclose(v.norm(dim=1), torch.ones(v.shape[0]), atol=1e-3)
    else:  # the others move part of W into A and B: B is no longer zero, W - B A stays behind
        assert all(torch.count_nonzero(v) > 0 for v in b.values())
        plain = dict(base_classifier(tiny_base_model, task.label_names).named_parameters())
        for module_name, module in model.base_model.model.named_modules():
            if isinstance(module, BaseTunerLayer):
                delta = module.get_delta_weight("default")
                restored = module.get_base_layer().weight + delta
                torch.testing.assert_close(restored, plain[f"{module_name}.weight"],
                                           atol=1e-5, rtol=1e-4)
    other = load_task(str(bench_folders / "debate-role"), max_train=32, max_eval=8, seed=7)
    again = peer_model(run, pool, other, name, seed=0)
    a_other = {k: v for k, v in again.state_dict().items() if "lora_A" in k}
    reads_data = name in ("eva", "corda", "lora-ga")
    assert any(not torch.allclose(a[k], a_other[k]) for k in a) == reads_data


def test_probe_margin_is_the_best_probe_minus_the_loops_threshold():
    from adapterpool.bench.payoff import probe_margins

    state = {"targets": {
        "a": {"scores": {"x": {"scores": {"linear-probe": 0.70, "knn": 0.9}},
                         "y": {"scores": {"linear-probe": 0.80}},
                         "z": {"scores": {"linear-probe": math.nan}}}},
        "b": {"scores": {"x": {"scores": {"knn": 0.5}}}}}}  # no probe: no row
    rows = probe_margins(state, {"a": {"validation_level": 0.9, "has_related_source": True},
                                 "b": {"validation_level": 0.5, "has_related_source": False}},
                         0.99)
    assert rows == {"a": (pytest.approx(0.80 - 0.99 * 0.9), True)}
    # where the loop runs recorded their own probe (their subset, their sample), those count
    state["targets"]["a"]["strategies"] = {
        "skip-unrelated": {"0": {"skip_unrelated": {"probe": 0.75, "threshold": 0.85}},
                           "1": {"skip_unrelated": {"probe": 0.79, "threshold": 0.85}}},
        "plain": {"0": {"skip_unrelated": None}}}
    rows = probe_margins(state, {"a": {"validation_level": 0.9, "has_related_source": True}},
                         0.99)
    assert rows == {"a": (pytest.approx(-0.08), True)}


def test_cut_fit_misjudges_fewest_and_is_checked_leave_one_out():
    from adapterpool.bench.calibration import calibrate_cut, fit_cut

    assert fit_cut([(0.1, True), (0.2, True)]) is None  # nothing to separate
    # separable: the cut lies between the highest unrelated and the lowest related value
    assert fit_cut([(-0.02, False), (0.01, False), (0.05, True), (0.2, True)]) == \
        pytest.approx(0.03)
    # one unrelated target above a related one: the cut that misjudges one target, lowest first
    assert fit_cut([(0.0, False), (0.04, True), (0.06, False), (0.1, True)]) == \
        pytest.approx(0.02)
    out = calibrate_cut({"a": (-0.02, False), "b": (0.01, False), "c": (0.05, True),
                         "d": (0.2, True)})
    assert out["cut"] == pytest.approx(0.03) and out["targets"] == 4
    assert out["right"] == 3 and out["missed_relatives"] == 1 and out["useless_tries"] == 0
    # held out, "c" is judged by the cut fitted on a, b, d: (0.01 + 0.2) / 2 = 0.105 > 0.05
    assert out["per_target"]["c"]["cut"] == pytest.approx(0.105)
    assert out["per_target"]["c"]["skipped"] and not out["per_target"]["c"]["right"]
    # the report shows the rule first, then both normalisations, best-judging metric first
    from adapterpool.bench.payoff_render import nothing_related_table

    worse = calibrate_cut({"a": (0.2, False), "b": (0.01, False), "c": (0.05, True),
                           "d": (0.0, True)})
    lines = nothing_related_table({"nothing_related_rule": out,
                                   "nothing_related_gain": {"knn": worse, "logme": out},
                                   "nothing_related_standout": {"knn": out}})
    rows = [line.split(" | ") for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("| best probe minus the threshold (the rule)", "linear-probe"),
        ("| top score minus the base model's", "logme"),
        ("| top score minus the base model's", "knn"),
        ("| top score minus the median candidate's", "knn")]
    assert rows[1][3] == "3 of 4" and rows[2][3] == f"{worse['right']} of 4"


def test_the_report_names_a_default_only_when_it_meets_the_rule():
    """The rule's fallback (the most accurate strategy) is not presented as a default that met
    the bar; a not-learnable target is shown as such, not as having a related source."""
    from adapterpool.bench.payoff_render import _default_line, _related

    row = {"accuracy_ratio": 0.998, "max_time_ratio": 1.51}
    summary = {"default_strategy": "early-pass", "strategies": {"early-pass": row}}
    assert _default_line(summary).startswith("No strategy keeps accuracy")
    row["max_time_ratio"] = 1.04
    assert "**early-pass**" in _default_line(summary)
    assert _related({"learnable": False, "has_related_source": True}) == "– (not learnable)"
    assert _related({"learnable": True, "has_related_source": False}) == "no"
