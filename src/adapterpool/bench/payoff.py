"""From the multi-seed, converged ground truth (:mod:`.ground_truth`) to the payoff evidence:
which targets have a related source, how well each metric ranks against the seed means, the
noise ceiling of that ground truth, and the peers (peft's LoRA initialisations) beside standard
LoRA.

Definitions (fixed before the numbers are seen):

- *reach level* of a target: ``REACH_FRACTION`` x standard LoRA's best validation accuracy,
  mean over seeds;
- *epochs to reach*: the epoch of a run's first evaluation at or above the reach level
  (infinite if it never gets there); a unit's value is the mean over its seeds (infinite if any
  seed never gets there);
- a target *has a related source* when some candidate's warm start reaches it (with every
  seed) in at most ``RELATED_EPOCH_SHARE`` x the epochs standard LoRA needed; a seed of
  standard LoRA that never reaches it counts the epochs it ran (it needed at least those). The
  family label of bench-data is only compared with this afterwards (how often they agree); it
  decides nothing.
- *seconds*: a unit's and a loop run's wall time, or with ``time_measure`` "cpu" their CPU
  time (:mod:`adapterpool.training.energy`: unchanged by other work on the machine, so units
  may run side by side); every time ratio divides like by like.
- *oracle*: the least time a loop could take on the target knowing every outcome in advance:
  its scoring (the mean of the recorded strategy runs' time before training), then only the
  fine-tuned candidate that reaches the reach level soonest, stopped at that evaluation (mean
  over seeds), or standard LoRA stopped the same way where it gets there sooner (a seed that never
  does counts its whole run). A bound on time only: what accuracy on test such a stop keeps is
  what the real strategy runs measure.
- *learnable*: standard LoRA's or some warm start's seed-mean test accuracy is at least
  ``LEARNABLE_MARGIN`` above the share of the most frequent test label; a target that is not
  is reported but belongs to neither group (related / unrelated): nothing learns it.
- *ranking by time*: beside each metric's quality against the seed-mean test accuracy, its
  quality against the epochs to reach (what the loop's first try needs: the relative that gets
  there soonest, not the one that ends a point higher after 10 epochs): weighted tau of the
  scores against minus the epochs, whether the top-scored candidate is among the soonest, and
  its epoch regret (its epochs minus the soonest). A candidate that never reaches the level
  counts as late as the latest one that does, or standard LoRA (censored), whichever is later;
  where no candidate reaches it the time ranking is undefined (NaN).
- *noise ceiling*: the weighted tau of the candidates' own seed-mean validation accuracy against
  their seed-mean test accuracy (a ranking by the outcome itself, on another split), and the
  *seed-split* tau: one seed's test accuracy against the other seeds' mean (how well one
  realisation of the outcome predicts another).
"""

from __future__ import annotations

import math

import numpy as np

from ..loop.strategies.skip_unrelated import PROBE
from .calibration import calibrate_cut
from .quality import nanmean, ranking_quality

REACH_FRACTION = 0.99
RELATED_EPOCH_SHARE = 0.5
PEER_ACCURACY = 0.995  # a peer "reaches standard LoRA's accuracy" at this test-accuracy ratio
# a target is "learnable" when standard LoRA's or a warm start's seed-mean test accuracy beats
# the most frequent test label by this much; on a target nothing learns (liar at 500 examples:
# 0.209 against 0.208) validation curves are noise around chance, and a candidate touching the
# level by chance would count as a relative
LEARNABLE_MARGIN = 0.02
NO_FAMILY = "other"  # bench-data's label for a task that belongs to no family
# BenchConfig.time_measure -> (a training unit's seconds key, a loop run's seconds key)
SECONDS_KEYS = {"wall": ("train_seconds", "seconds"), "cpu": ("cpu_seconds", "cpu_seconds")}
# a peer's building (its data pass or SVD), recorded beside its training and added to its time
INIT_KEYS = {"wall": "init_seconds", "cpu": "init_cpu_seconds"}


def _test(record: dict) -> float:
    return (record.get("test") or record["validation"])["accuracy"]


def validation_level(baselines: dict) -> float:
    """Standard LoRA's best validation accuracy, mean over its seeds (``seed -> record``): the
    level a unit must reach and the base of the loop runs' threshold."""
    return float(np.mean([b["validation"]["accuracy"] for b in baselines.values()]))


def first_reaching(record: dict, level: float) -> dict | None:
    """A unit's first evaluation whose validation accuracy is at least ``level`` (None: never)."""
    return next((entry for entry in record.get("history") or []
                 if entry.get("accuracy", -math.inf) >= level - 1e-12), None)


def epochs_to_reach(record: dict, level: float) -> float:
    """Epoch of the first evaluation whose validation accuracy is at least ``level``."""
    entry = first_reaching(record, level)
    return math.inf if entry is None else float(entry["epoch"])


def unit_seconds(record: dict, measure: str = "wall") -> float:
    """A unit's whole seconds by ``measure``; a unit recorded before CPU time was counts its wall
    time (one-thread units agree within 3%)."""
    total = record.get(SECONDS_KEYS[measure][0])
    return record["train_seconds"] if total is None else total


def seconds_to_reach(record: dict, level: float, measure: str = "wall") -> float:
    """A unit's seconds (by ``measure``) until its first evaluation at or above ``level``: its
    total, scaled by the share of its wall time that evaluation came at (the curve records wall
    seconds; infinite if it never gets there)."""
    entry = first_reaching(record, level)
    if entry is None:
        return math.inf
    return unit_seconds(record, measure) * entry["seconds"] / record["train_seconds"]


def stopped_seconds(record: dict, level: float, measure: str = "wall") -> float:
    """A unit's seconds until its first evaluation at ``level``, or its whole run where it never
    gets there."""
    reached = seconds_to_reach(record, level, measure)
    return reached if math.isfinite(reached) else unit_seconds(record, measure)


def oracle(target: dict, candidates: dict, baseline: dict, level: float,
           measure: str = "wall") -> dict:
    """The oracle's time on one target (see the module), alone and over standard LoRA's."""
    key = "scoring_cpu_seconds" if measure == "cpu" else "scoring_seconds"
    runs = [r for by_seed in (target.get("strategies") or {}).values() for r in by_seed.values()]
    scoring = [r[key] for r in runs if r.get(key) is not None]
    scoring_seconds = float(np.mean(scoring)) if scoring else math.nan
    reach = {i: float(np.mean([seconds_to_reach(r, level, measure) for r in by_seed.values()]))
             for i, by_seed in (target.get("gt_finetune") or {}).items() if i in candidates}
    reach = {i: v for i, v in reach.items() if not math.isnan(v)}
    best = min(reach, key=reach.get) if reach else None
    transfer = reach[best] if best is not None else math.inf
    # standard LoRA stopped where it first reaches the level (a loop's fallback stops at its
    # threshold); a seed that never does counts its whole run
    fallback = float(np.mean([stopped_seconds(r, level, measure)
                              for r in target["gt_baseline"].values()]))
    seconds = scoring_seconds + min(transfer, fallback)
    return {"candidate": best if transfer < fallback else None,
            "transfer_seconds": transfer, "scoring_seconds": scoring_seconds,
            "seconds": seconds, "time_ratio": seconds / baseline["seconds"],
            "transfer_ratio": transfer / baseline["seconds"]}


def seed_mean(records: dict, level: float, measure: str = "wall") -> dict:
    """Means over seeds of one unit (baseline, candidate or peer), with the per-seed values;
    ``seconds`` by ``measure`` (:data:`SECONDS_KEYS`; NaN where a unit did not record it), its
    building included where recorded (:data:`INIT_KEYS`)."""
    seeds = sorted(records, key=int)
    key, init = SECONDS_KEYS[measure][0], INIT_KEYS[measure]
    tests = [_test(records[s]) for s in seeds]
    reach = [epochs_to_reach(records[s], level) for s in seeds]
    return {
        "accuracy": float(np.mean(tests)),
        "accuracy_seeds": tests,
        "accuracy_spread": float(np.std(tests)),
        "validation_accuracy": float(np.mean([records[s]["validation"]["accuracy"]
                                              for s in seeds])),
        "epochs": float(np.mean([records[s]["epochs"] for s in seeds])),
        "seconds": float(np.mean([records[s].get(key, math.nan) + records[s].get(init, 0.0)
                                  for s in seeds])),
        "epochs_to_reach": float(np.mean(reach)),
        "seeds": len(seeds),
    }


def _tau(predicted: list[float], observed: list[float]) -> float:
    return ranking_quality(predicted, observed)["weighted_tau"] if len(observed) > 1 else math.nan


def noise_ceiling(candidates: dict) -> dict:
    """Weighted tau a ranking by the outcome itself reaches (see the module)."""
    ids = sorted(candidates)
    if len(ids) < 2:
        return {"validation_vs_test": math.nan, "seed_split": math.nan}
    validation = [candidates[i]["validation_accuracy"] for i in ids]
    test = [candidates[i]["accuracy"] for i in ids]
    splits = []
    n_seeds = min(len(candidates[i]["accuracy_seeds"]) for i in ids)
    for held in range(n_seeds if n_seeds > 1 else 0):
        one = [candidates[i]["accuracy_seeds"][held] for i in ids]
        rest = [float(np.mean([a for k, a in enumerate(candidates[i]["accuracy_seeds"])
                               if k != held])) for i in ids]
        splits.append(_tau(one, rest))
    return {"validation_vs_test": _tau(validation, test),
            "seed_split": float(np.nanmean(splits)) if splits else math.nan}


def time_quality(scores: list[float], epochs: list[float], censor: float) -> dict:
    """A metric's ranking against how soon each candidate reaches the level (see the module):
    ``epochs`` infinite for a candidate that never does (counted at ``censor``, or the latest
    finite value if later)."""
    finite = [e for e in epochs if math.isfinite(e)]
    if len(epochs) < 2 or not finite:
        return {"time_weighted_tau": math.nan, "time_top1_hit": math.nan,
                "time_regret_at_1": math.nan}
    late = max([censor, *finite])
    speed = [-(e if math.isfinite(e) else late) for e in epochs]
    quality = ranking_quality(scores, speed)  # "accuracy" here is minus the epochs
    return {"time_weighted_tau": quality["weighted_tau"], "time_top1_hit": quality["top1_hit"],
            "time_regret_at_1": quality["regret_at_1"] / 100}  # back from points to epochs


def summarize_ground_truth(target: dict, metrics: list[str],
                           measure: str = "wall") -> dict | None:
    """One target's converged ground truth, or None while its baseline has no seed yet."""
    baselines = target.get("gt_baseline") or {}
    if not baselines:
        return None
    best_validation = validation_level(baselines)
    level = REACH_FRACTION * best_validation
    baseline = seed_mean(baselines, level, measure)
    scores = target.get("scores") or {}
    candidates = {}
    for adapter_id, by_seed in sorted((target.get("gt_finetune") or {}).items()):
        entry = seed_mean(by_seed, level, measure)
        score_entry = scores.get(adapter_id) or {}
        entry["source_task"] = score_entry.get("source_task")
        entry["scores"] = {m: score_entry.get("scores", {}).get(m) for m in metrics}
        candidates[adapter_id] = entry
    # a seed of standard LoRA that never reaches the level within its budget needed at least the
    # epochs it ran (censored there); a candidate must reach it with every seed
    baseline["epochs_to_reach_censored"] = float(np.mean([
        reach if math.isfinite(reach := epochs_to_reach(run, level)) else run["epochs"]
        for run in baselines.values()]))
    related = [i for i, c in candidates.items() if math.isfinite(c["epochs_to_reach"]) and
               c["epochs_to_reach"] <= RELATED_EPOCH_SHARE * baseline["epochs_to_reach_censored"]]
    quality = {}
    ids = sorted(candidates)
    if len(ids) > 1:
        accuracies = [candidates[i]["accuracy"] for i in ids]
        epochs = [candidates[i]["epochs_to_reach"] for i in ids]
        for metric in metrics:
            values = [candidates[i]["scores"].get(metric) for i in ids]
            values = [math.nan if v is None else float(v) for v in values]
            if any(math.isfinite(v) for v in values):
                quality[metric] = ranking_quality(values, accuracies) | time_quality(
                    values, epochs, baseline["epochs_to_reach_censored"])
    peers = {name: seed_mean(by_seed, level, measure)
             for name, by_seed in sorted((target.get("peers") or {}).items())}
    reaching = {"standard-lora": baseline["seconds"]} | {
        name: p["seconds"] for name, p in peers.items()
        if p["accuracy"] >= PEER_ACCURACY * baseline["accuracy"]}
    fastest = min(reaching, key=reaching.get)
    return {
        "validation_level": best_validation,
        "reach_level": level,
        "baseline": baseline,
        "candidates": candidates,
        "has_related_source": bool(related),
        "related_sources": related,
        "oracle": oracle(target, candidates, baseline, level, measure),
        "noise_ceiling": (ceiling := noise_ceiling(candidates)),
        "noise_ceiling_tau": ceiling["validation_vs_test"],
        "quality": quality,
        "peers": peers,
        "fastest_peer": {"name": fastest, "seconds": reaching[fastest]},
        "complete": bool(candidates) and all(
            c["seeds"] == baseline["seeds"] for c in candidates.values()),
        "majority_test": (majority := (target.get("task") or {}).get("majority_test")),
        # learned by standard LoRA or by some warm start (mrpc: standard LoRA 1.7 points over
        # the most frequent label, twitter_url's warm start 5.8)
        "learnable": majority is None or max(
            [baseline["accuracy"], *(c["accuracy"] for c in candidates.values())]
        ) >= majority + LEARNABLE_MARGIN,
    }


def family_of(spec: str) -> str | None:
    """The ``family`` a bench-data folder's meta.json declares (reporting only: nothing in the
    loop or the ranking reads it)."""
    import json
    from pathlib import Path

    meta = Path(spec) / "meta.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("family")


def strategy_ratios(target: dict, gt: dict, measure: str = "wall") -> dict:
    """Per strategy on one target: mean over seeds of the real loop runs against standard LoRA's
    seed means (accuracy and seconds by ``measure``), and against the fastest peer reaching its
    accuracy."""
    key = SECONDS_KEYS[measure][1]
    out = {}
    base = gt["baseline"]
    for strategy, runs in sorted((target.get("strategies") or {}).items()):
        runs = list(runs.values())
        accuracy = float(np.mean([_test(r) if (r.get("test") or r.get("validation"))
                                  else math.nan for r in runs]))
        seconds = float(np.mean([r.get(key) if r.get(key) is not None else math.nan
                                 for r in runs]))
        out[strategy] = {
            "accuracy_ratio": accuracy / base["accuracy"],
            "time_ratio": seconds / base["seconds"],
            "peer_time_ratio": seconds / gt["fastest_peer"]["seconds"],
            "transfer_rate": float(np.mean([r["outcome"] == "transfer" for r in runs])),
            "outcomes": {o: sum(r["outcome"] == o for r in runs)
                         for o in sorted({r["outcome"] for r in runs})},
            "accuracy": accuracy,
            "seconds": seconds,
            "seeds": len(runs),
        }
    return out


def _mean_rows(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """Each key's mean over the rows that have a number for it (NaN where none has)."""
    return {k: nanmean(r.get(k) for r in rows) for k in keys}


def probe_margins(state: dict, targets: dict, threshold_fraction: float) -> dict:
    """skip-unrelated's value on each of ``targets`` (key -> its ground-truth summary), with
    whether the target has a related source: the best linear-probe accuracy minus the threshold.
    As the loop runs saw it where they recorded it (the strategy subset, the loop's scoring
    sample: mean over those runs); else from the ground truth's scores of every candidate
    against ``threshold_fraction`` x standard LoRA's seed-mean validation accuracy."""
    rows = {}
    for key, gt in targets.items():
        target = state["targets"][key]
        seen = [run["skip_unrelated"]["probe"] - run["skip_unrelated"]["threshold"]
                for runs in (target.get("strategies") or {}).values() for run in runs.values()
                if "probe" in (run.get("skip_unrelated") or {})]
        if seen:
            rows[key] = (float(np.mean(seen)), gt["has_related_source"])
            continue
        probes = [e["scores"].get(PROBE) for e in (target.get("scores") or {}).values()]
        probes = [v for v in probes if v is not None and math.isfinite(v)]
        if probes:
            threshold = threshold_fraction * gt["validation_level"]
            rows[key] = (max(probes) - threshold, gt["has_related_source"])
    return rows


def summarize_payoff(state: dict, config: dict, specs: dict[str, str]) -> dict:
    """Every target's converged ground truth (``specs``: target key -> its spec, for the family
    label), the peers, the ranking quality on targets with and without a related source, and
    each strategy's ratios split the same way."""
    metrics = list(config["metrics"])
    measure = config.get("time_measure", "wall")
    targets, incomplete = {}, []
    for key, target in sorted((state.get("targets") or {}).items()):
        gt = summarize_ground_truth(target, metrics, measure)
        if gt is None or not gt["complete"]:
            incomplete.append(key)
            if gt is None:
                continue
        gt["family"] = family_of(specs.get(key, ""))
        # the metric whose top candidates joined the ground truth (the loop's, when recorded)
        gt["score_metric"] = (target.get("gt_candidates") or {}).get("score_metric")
        gt["strategies"] = strategy_ratios(target, gt, measure)
        targets[key] = gt
    complete = {k: t for k, t in targets.items() if t["complete"]}
    groups = {"related": [k for k, t in complete.items()
                          if t["learnable"] and t["has_related_source"]],
              "unrelated": [k for k, t in complete.items()
                            if t["learnable"] and not t["has_related_source"]]}
    quality = {
        group: {m: _mean_rows([complete[k]["quality"][m] for k in keys
                               if m in complete[k]["quality"]],
                              ("weighted_tau", "top1_hit", "regret_at_1", "regret_at_3",
                               "time_weighted_tau", "time_top1_hit", "time_regret_at_1"))
                for m in metrics}
        for group, keys in groups.items()}
    ceilings = {group: _mean_rows([complete[k] for k in keys], ("noise_ceiling_tau",))
                ["noise_ceiling_tau"] for group, keys in groups.items()}
    oracles = {group: _mean_rows([complete[k]["oracle"] for k in keys],
                                 ("time_ratio", "transfer_ratio"))
               | {"max_time_ratio": max((complete[k]["oracle"]["time_ratio"] for k in keys),
                                        default=math.nan)}
               for group, keys in groups.items()}
    strategies: dict = {}
    for name in sorted({s for t in complete.values() for s in t["strategies"]}):
        strategies[name] = {}
        for group, keys in groups.items():
            rows = [complete[k]["strategies"][name] for k in keys
                    if name in complete[k]["strategies"]]
            strategies[name][group] = _mean_rows(
                rows, ("accuracy_ratio", "time_ratio", "peer_time_ratio", "transfer_rate"))
            strategies[name][group]["max_time_ratio"] = (
                max(r["time_ratio"] for r in rows) if rows else math.nan)
            strategies[name][group]["n_targets"] = len(rows)
    def same_family_member(key: str) -> bool:  # "other" is no family: it groups nothing
        family = complete[key]["family"]
        return family not in (None, NO_FAMILY) and any(
            family_of(spec) == family for member, spec in specs.items() if member != key)

    learnable = [k for k, t in complete.items() if t["learnable"]]
    with_family = [k for k in learnable if complete[k]["family"] is not None]
    agree = sum(same_family_member(k) == complete[k]["has_related_source"] for k in with_family)
    # skip-unrelated's rule: the best candidate's linear-probe accuracy minus the threshold the
    # bench's loop runs are given; and, for comparison, two normalisations of each metric's top
    # score: over the bare base model's own score, and over the median candidate (does the top
    # stand out from the crowd?). Every source adapter also trained BERT's pooler, which the
    # base model's features lack, so the first gain is above 0 even where nothing is related.
    probe_rows = probe_margins(state, {k: complete[k] for k in learnable},
                               config.get("threshold_fraction", 0.99))
    probe_rule = calibrate_cut(probe_rows) if len(probe_rows) >= 3 else None
    if probe_rule is not None:
        probe_rule["probe_shortfall"] = (None if probe_rule["cut"] is None
                                         else -probe_rule["cut"])
    gains, standout = {}, {}
    for metric in metrics:
        rows, rows_standout = {}, {}
        for key in learnable:
            target = state["targets"][key]
            reference = ((target.get("reference") or {}).get("scores") or {}).get(metric)
            tops = [e["scores"].get(metric) for e in (target.get("scores") or {}).values()]
            tops = [v for v in tops if v is not None and math.isfinite(v)]
            related = complete[key]["has_related_source"]
            if reference is not None and math.isfinite(reference) and tops:
                rows[key] = (max(tops) - reference, related)
            if len(tops) >= 2:
                rows_standout[key] = (max(tops) - float(np.median(tops)), related)
        if len(rows) >= 3:
            gains[metric] = calibrate_cut(rows)
        if len(rows_standout) >= 3:
            standout[metric] = calibrate_cut(rows_standout)
    peers: dict = {}
    for key, t in complete.items():
        for name, p in t["peers"].items():
            peers.setdefault(name, {})[key] = {
                "accuracy": p["accuracy"], "seconds": p["seconds"], "epochs": p["epochs"],
                "time_ratio": p["seconds"] / t["baseline"]["seconds"], "seeds": p["seeds"]}
    return {
        "targets": targets,
        "incomplete_targets": incomplete,
        "groups": groups,
        "not_learnable": sorted(k for k, t in complete.items() if not t["learnable"]),
        "quality_by_group": quality,
        "noise_ceiling_by_group": ceilings,
        "strategies_by_group": strategies,
        "oracle_by_group": oracles,
        "peers": peers,
        "nothing_related_rule": probe_rule,
        "nothing_related_gain": gains,
        "nothing_related_standout": standout,
        "family_agreement": {"targets": len(with_family), "agree": agree,
                             "rule": "a same-family pool member exists <=> has_related_source"},
        "definitions": {"reach_fraction": REACH_FRACTION,
                        "related_epoch_share": RELATED_EPOCH_SHARE,
                        "peer_accuracy": PEER_ACCURACY,
                        "learnable_margin": LEARNABLE_MARGIN,
                        "time_measure": measure},
    }
