"""The payoff report (:mod:`.payoff`) as Markdown: which targets have a related source, how each
metric ranks against the seed-mean ground truth and its noise ceiling, the peers, the strategies
on targets with and without a related source."""

from __future__ import annotations

import math

from .render import fmt


def _pm(values: list[float]) -> str:
    """Mean ± spread (population std over seeds), in accuracy."""
    if not values:
        return "–"
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return f"{mean:.3f} ± {spread:.3f}"


def _epochs(value: float) -> str:
    return "never" if value is None or math.isinf(value) else f"{value:.1f}"


def _related(target: dict) -> str:
    if not target.get("learnable", True):
        return "– (not learnable)"
    return "yes" if target["has_related_source"] else "no"


def _default_line(summary: dict) -> str:
    """The default the rule picks, or, when no strategy meets it, that none does yet."""
    name = summary.get("default_strategy")
    row = (summary.get("strategies") or {}).get(name) or {}
    if row and row["accuracy_ratio"] >= 0.995 and row["max_time_ratio"] <= 1.05:
        return f"Default (rule: cheapest keeping accuracy, no target over 1.05x): **{name}**."
    return ("No strategy keeps accuracy at no more than 1.05x standard LoRA on every target yet "
            f"(the rule's fallback, the most accurate: {name}); the product default stays.")


def target_table(summary: dict) -> list[str]:
    lines = ["| target | family | related source (ground truth) | standard LoRA test | epochs "
             "to reach | best warm start | its test | its epochs to reach | fastest peer | "
             "oracle time ratio | noise ceiling tau |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, t in summary["targets"].items():
        best = (min(t["candidates"], key=lambda i: t["candidates"][i]["epochs_to_reach"])
                if t["candidates"] else None)
        cand = t["candidates"].get(best) if best else None
        lines.append(
            f"| {key}{'' if t['complete'] else ' (partial)'} | {t.get('family') or '–'} | "
            f"{_related(t)} | "
            f"{_pm(t['baseline']['accuracy_seeds'])} | "
            f"{_epochs(t['baseline']['epochs_to_reach'])} | "
            f"{(cand or {}).get('source_task') or '–'} | "
            f"{_pm(cand['accuracy_seeds']) if cand else '–'} | "
            f"{_epochs(cand['epochs_to_reach']) if cand else '–'} | "
            f"{t['fastest_peer']['name']} | {fmt(t['oracle']['time_ratio'])} | "
            f"{fmt(t['noise_ceiling_tau'])} |")
    return lines


def quality_table(summary: dict) -> list[str]:
    groups = summary["quality_by_group"]
    lines = ["| metric | weighted tau (related) | regret@1 pts (related) | top-1 (related) | "
             "weighted tau by time (related) | epoch regret@1 (related) | top-1 by time "
             "(related) | weighted tau (unrelated) | regret@1 pts (unrelated) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for metric in summary["config"]["metrics"]:
        rel, unrel = groups["related"].get(metric, {}), groups["unrelated"].get(metric, {})
        lines.append(f"| {metric} | {fmt(rel.get('weighted_tau'))} | "
                     f"{fmt(rel.get('regret_at_1'), 2)} | {fmt(rel.get('top1_hit'), 2)} | "
                     f"{fmt(rel.get('time_weighted_tau'))} | "
                     f"{fmt(rel.get('time_regret_at_1'), 2)} | "
                     f"{fmt(rel.get('time_top1_hit'), 2)} | "
                     f"{fmt(unrel.get('weighted_tau'))} | {fmt(unrel.get('regret_at_1'), 2)} |")
    return lines


def _ceiling_line(summary: dict) -> list[str]:
    """The groups' mean noise ceiling: what a ranking by the outcome itself reaches."""
    ceilings = summary.get("noise_ceiling_by_group") or {}
    if not ceilings:
        return []
    return [f"Noise ceiling (the candidates' own validation accuracy ranking their test accuracy, "
            f"weighted tau), mean over the targets: related {fmt(ceilings.get('related'))}, "
            f"unrelated {fmt(ceilings.get('unrelated'))}.", ""]


def peer_table(summary: dict) -> list[str]:
    targets = list(summary["targets"])
    lines = ["| init | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    base = {k: t["baseline"] for k, t in summary["targets"].items()}
    lines.append("| standard LoRA | " + " | ".join(
        f"{base[k]['accuracy']:.3f} / {base[k]['seconds']:.0f} s ({base[k]['seeds']})"
        for k in targets) + " |")
    for name, by_target in summary["peers"].items():
        lines.append(f"| {name} | " + " | ".join(
            f"{by_target[k]['accuracy']:.3f} / {by_target[k]['time_ratio']:.2f}x "
            f"({by_target[k]['seeds']})" if k in by_target else "–" for k in targets) + " |")
    return lines


def strategy_table(summary: dict) -> list[str]:
    lines = ["| strategy | acc ratio (related) | time ratio (related) | peer time ratio (related) "
             "| acc ratio (unrelated) | worst time ratio (unrelated) |",
             "|---|---|---|---|---|---|"]
    bound = summary.get("oracle_by_group") or {}
    if bound:
        lines.append(f"| oracle (a bound on time) | – | {fmt(bound['related']['time_ratio'])} | "
                     f"– | – | {fmt(bound['unrelated']['max_time_ratio'])} |")
    for name, groups in summary["strategies_by_group"].items():
        rel, unrel = groups["related"], groups["unrelated"]
        lines.append(f"| {name} | {fmt(rel['accuracy_ratio'])} | {fmt(rel['time_ratio'])} | "
                     f"{fmt(rel['peer_time_ratio'])} | {fmt(unrel['accuracy_ratio'])} | "
                     f"{fmt(unrel['max_time_ratio'])} |")
    return lines


def nothing_related_table(summary: dict) -> list[str]:
    """skip-unrelated's rule (the best linear probe against the threshold), then each
    normalisation of each metric's top score for comparison: the fitted cut and how many
    held-out targets it judged right (leave one target out)."""
    lines = ["| value | metric | cut (all targets) | right (held out) | missed relatives | "
             "useless tries |", "|---|---|---|---|---|---|"]
    rows = []
    if summary.get("nothing_related_rule"):
        rows.append(("best probe minus the threshold (the rule)", "linear-probe",
                     summary["nothing_related_rule"]))
    for label, key in (("top score minus the base model's", "nothing_related_gain"),
                       ("top score minus the median candidate's", "nothing_related_standout")):
        rows += [(label, metric, row) for metric, row in
                 sorted((summary.get(key) or {}).items(), key=lambda kv: (-kv[1]["right"], kv[0]))]
    for label, metric, row in rows:
        lines.append(f"| {label} | {metric} | {fmt(row['cut'])} | {row['right']} of "
                     f"{row['targets']} | {row['missed_relatives']} | {row['useless_tries']} |")
    return lines


def _by_score_metric(targets: dict) -> str:
    """"knn: a, b; logme: c": which metric's top candidates each target's ground truth holds."""
    by_metric: dict[str, list[str]] = {}
    for key, target in targets.items():
        by_metric.setdefault(target.get("score_metric") or "none yet", []).append(key)
    return "; ".join(f"{metric}: {', '.join(keys)}" for metric, keys in sorted(by_metric.items()))


def payoff_markdown(summary: dict) -> str:
    c, d = summary["config"], summary["definitions"]
    groups, agreement = summary["groups"], summary["family_agreement"]
    lines = [
        "# adapterpool benchmark: the payoff where a related adapter exists",
        "",
        "Produced by `adapterpool bench` from a run with a converged, multi-seed ground truth "
        "(`src/adapterpool/bench/ground_truth.py`, `payoff.py`); regenerate with `--report-only`.",
        "",
        "## Setup",
        "",
        f"- Pool: {len(summary['sources'])} members; each target sees all but its own task.",
        f"- Ground truth: every unit (standard LoRA, each chosen warm start, each peer) trained "
        f"until early stopping ({c['ground_truth_patience']} epochs without gain, "
        f"{c['ground_truth_evals_per_epoch']} evaluations an epoch, at most "
        f"{c['ground_truth_max_epochs']} epochs) with seeds {c['ground_truth_seeds']}; "
        f"{c['max_train']} training, {c['max_eval']} validation, up to "
        f"{c.get('max_test') or c['max_eval']} test examples a target. Candidates fine-tuned: "
        + (f"the prefilter's top {c['ground_truth_candidates']['prefilter_top']}, "
           f"{c['ground_truth_candidates']['random']} drawn at random"
           + (f" and the top {c['ground_truth_candidates']['score_top']} by the loop's ranking "
              f"metric when the target was recorded ({_by_score_metric(summary['targets'])})"
              if c["ground_truth_candidates"].get("score_top") else "")
           if c.get("ground_truth_candidates") else "all") + ".",
        f"- A target has a related source when some warm start reaches {d['reach_fraction']} x "
        "standard LoRA's best validation accuracy (mean over seeds) in at most "
        f"{d['related_epoch_share']} x the epochs standard LoRA needed to reach it (mean over "
        "seeds). The family label is compared afterwards only: "
        f"{agreement['agree']} of {agreement['targets']} targets agree ({agreement['rule']}).",
        f"- Targets complete: {summary['n_targets']} (related: "
        f"{', '.join(groups['related']) or 'none'}; unrelated: "
        f"{', '.join(groups['unrelated']) or 'none'})"
        + (f"; not learnable by standard LoRA at this size (within "
           f"{d.get('learnable_margin', 0.02)} of predicting the most frequent label; in "
           f"neither group): {', '.join(summary['not_learnable'])}"
           if summary.get("not_learnable") else "")
        + (f"; partial: {', '.join(summary['incomplete_targets'])}"
           if summary["incomplete_targets"] else "") + ".",
        f"- Loop runs: threshold {c['threshold_fraction']} x standard LoRA's seed-mean "
        f"validation accuracy; {c['subset']} candidates ({c.get('strategy_subset')}) ranked by "
        f"{c.get('strategy_metric')} on "
        f"{c.get('strategy_scoring_samples') or c['scoring_samples']} target examples each "
        f"(the ground truth's scores above: {c['scoring_samples']}); at most {c['max_tries']} "
        f"tries of {c['transfer_epochs']} epochs; seeds {c.get('strategy_seeds')}.",
        "",
        "## Targets",
        "",
        *target_table(summary),
        "",
        "## Ranking against the seed-mean ground truth",
        "",
        "Two outcomes: the candidates' converged test accuracy (weighted tau, regret@1 in "
        "accuracy points, top-1) and how soon each warm start reaches the level (by time: "
        "weighted tau against minus the epochs to reach, the top-scored candidate's epochs "
        "beyond the soonest, whether it is among the soonest), which is what the loop's first "
        "try needs.",
        "",
        *quality_table(summary),
        "",
        *_ceiling_line(summary),
        "## Peers: peft's LoRA initialisations (test accuracy / time, seed means; in brackets the "
        "seeds run): standard LoRA's seconds, each peer's as a ratio to them, its building "
        "included",
        "",
        *peer_table(summary),
        "",
        "## Noticing \"nothing related\" from the scores (skip-unrelated's rule)",
        "",
        "A target is judged to have no related source when its value is below the cut "
        "(skip-unrelated's probe_shortfall is minus the rule's cut); fitted "
        "leave-one-target-out against the ground truth.",
        "",
        *nothing_related_table(summary),
        "",
    ]
    if summary["strategies_by_group"]:
        lines += ["## Loop strategies (real runs)", "", *strategy_table(summary), "",
                  _default_line(summary), ""]
    return "\n".join(lines)
