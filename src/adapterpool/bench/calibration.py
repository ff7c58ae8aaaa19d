"""Calibrating the ``cutoff`` strategy on recorded validation curves, leave-one-target-out.

``CutoffRule`` gives up on an attempt when ``best so far + max_gain_per_epoch x remaining epochs``
is below the threshold. Too small a gain cuts attempts that would have passed (accuracy lost, and
the fallback paid for); too large a gain never cuts (nothing saved). The benchmark records every
ground-truth fine-tune's curve, so the rule can be replayed on them without training: the gain is
fitted as the least value that cuts no passing curve of the *other* targets, then judged on the
held-out target (false cuts, epochs saved). A rule fitted on every target at once would look
perfect on them and say nothing about a new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config import TrainConfig
from ..loop.strategies import CutoffRule

Curve = Sequence[Mapping[str, float]]


@dataclass(frozen=True)
class Replay:
    """Where ``CutoffRule`` stops one recorded curve (``None``: it runs to the end)."""

    cut_at_epoch: float | None
    passed: bool  # the full curve meets the threshold at some evaluation
    epochs: float  # of the full curve


def replay_cutoff(curve: Curve, threshold: float, metric: str, *, budget_epochs: float,
                  min_epochs: float, max_gain_per_epoch: float) -> Replay:
    """Feed ``curve`` to the real rule one evaluation at a time, as ``train`` does."""
    rule = CutoffRule(threshold, metric, min_epochs, max_gain_per_epoch)
    config = TrainConfig(epochs=budget_epochs)
    passed = any(entry[metric] >= threshold for entry in curve)
    for i in range(len(curve)):
        if rule(curve[: i + 1], config) is not None:
            return Replay(curve[i]["epoch"], passed, curve[-1]["epoch"])
    return Replay(None, passed, curve[-1]["epoch"])


def required_gain(curve: Curve, threshold: float, metric: str, *, budget_epochs: float,
                  min_epochs: float) -> float:
    """The least ``max_gain_per_epoch`` under which the rule never cuts ``curve`` before it
    passes (0 for a curve that fails: any gain is safe for it)."""
    need = 0.0
    best = float("-inf")
    for entry in curve:
        if entry[metric] >= threshold:
            return need
        best = max(best, entry[metric])
        remaining = budget_epochs - entry["epoch"]
        if entry["epoch"] >= min_epochs and remaining > 0:
            # A hair over the exact ratio: best + gain x remaining must not round below it.
            need = max(need, (threshold - best) / remaining + 1e-9)
    return 0.0


def calibrate_cutoff(curves: Mapping[str, Sequence[tuple[Curve, float]]], metric: str, *,
                     budget_epochs: float, min_epochs: float, margin: float = 0.0) -> dict:
    """Leave-one-target-out fit and check of ``max_gain_per_epoch``.

    ``curves`` maps a target to its recorded (curve, threshold) pairs. For each held-out target
    the gain is the largest :func:`required_gain` over the other targets' curves (plus
    ``margin``); the held-out curves are then replayed with it. Returns per target the fitted
    gain, the passing curves it would have cut, and the share of failing curves' epochs saved;
    and the gain fitted on all targets (what a default would be).
    """
    need = {target: [required_gain(c, t, metric, budget_epochs=budget_epochs,
                                   min_epochs=min_epochs) for c, t in pairs]
            for target, pairs in curves.items()}
    per_target = {}
    for held_out, pairs in curves.items():
        others = [g for target, gains in need.items() if target != held_out for g in gains]
        gain = max(others, default=0.0) + margin
        replays = [replay_cutoff(c, t, metric, budget_epochs=budget_epochs,
                                 min_epochs=min_epochs, max_gain_per_epoch=gain)
                   for c, t in pairs]
        passing = [r for r in replays if r.passed]
        failing = [r for r in replays if not r.passed]
        saved = sum(r.epochs - r.cut_at_epoch for r in failing if r.cut_at_epoch is not None)
        per_target[held_out] = {
            "max_gain_per_epoch": gain,
            "curves": len(replays),
            "passing": len(passing),
            "false_cuts": sum(r.cut_at_epoch is not None for r in passing),
            "failing_cut": sum(r.cut_at_epoch is not None for r in failing),
            "failing_epochs_saved": saved / sum(r.epochs for r in failing) if failing else None,
        }
    all_gains = [g for gains in need.values() for g in gains]
    return {
        "metric": metric, "budget_epochs": budget_epochs, "min_epochs": min_epochs,
        "margin": margin,
        "max_gain_per_epoch": max(all_gains, default=0.0) + margin,
        "false_cuts": sum(r["false_cuts"] for r in per_target.values()),
        "passing": sum(r["passing"] for r in per_target.values()),
        "per_target": per_target,
    }


def calibrate_min_score(targets: Mapping[str, tuple[float, bool]]) -> dict:
    """Leave-one-target-out fit and check of ``cutoff``'s ``min_score`` for one metric.

    ``targets`` maps a target to (its top candidate's score, whether any candidate's transfer
    passes). For each held-out target the rule is the midpoint between the highest top score of
    the other targets where nothing passes and the lowest where something does (``None`` when
    those overlap: no threshold separates them); the held-out target is then skipped or not by it.
    A skip is right when nothing would have passed; a kept target is right when something would.
    """

    def fit(items: list[tuple[float, bool]]) -> float | None:
        failing = [score for score, passes in items if not passes]
        passing = [score for score, passes in items if passes]
        if not failing or not passing:
            return None
        low, high = max(failing), min(passing)
        return (low + high) / 2 if low < high else None

    per_target = {}
    for held_out, (score, passes) in targets.items():
        threshold = fit([v for k, v in targets.items() if k != held_out])
        skipped = threshold is not None and score < threshold
        per_target[held_out] = {"top_score": score, "passes": passes, "min_score": threshold,
                                "skipped": skipped, "right": skipped != passes}
    rights = [row["right"] for row in per_target.values()]
    return {"min_score": fit(list(targets.values())), "right": sum(rights), "targets": len(rights),
            "per_target": per_target}


def fit_cut(items: list[tuple[float, bool]]) -> float | None:
    """The cut that misjudges fewest targets: below it a target is taken to have no related
    source. ``items``: (the rule's value on a target, has a related source). Candidates are the
    midpoints between neighbouring values; on a tie the lowest (skip less: a missed relative
    costs its whole saving, a useless try only its cut-off transfer). ``None`` when one of the
    two kinds of target is absent (nothing to separate)."""
    if not any(related for _, related in items) or all(related for _, related in items):
        return None
    values = sorted({value for value, _ in items})
    cuts = [values[0] - 1e-9] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    cuts.append(values[-1] + 1e-9)

    def errors(cut: float) -> int:
        return sum((value < cut) == related for value, related in items)

    return min(cuts, key=lambda cut: (errors(cut), cut))


def calibrate_cut(targets: Mapping[str, tuple[float, bool]]) -> dict:
    """Leave-one-target-out fit and check of one "nothing related" rule: for each held-out
    target the cut is fitted on the others (:func:`fit_cut`), then the held-out target is judged
    by it. Right: skipped and no related source, or kept and one."""
    per_target = {}
    for held_out, (value, related) in targets.items():
        cut = fit_cut([v for k, v in targets.items() if k != held_out])
        skipped = cut is not None and value < cut
        per_target[held_out] = {"value": value, "has_related_source": related, "cut": cut,
                                "skipped": skipped, "right": skipped != related}
    rights = [row["right"] for row in per_target.values()]
    return {"cut": fit_cut(list(targets.values())), "right": sum(rights),
            "targets": len(rights),
            "missed_relatives": sum(r["skipped"] and r["has_related_source"]
                                    for r in per_target.values()),
            "useless_tries": sum(not r["skipped"] and not r["has_related_source"]
                                 for r in per_target.values()),
            "per_target": per_target}
