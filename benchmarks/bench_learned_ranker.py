"""A learned ranker against single metrics, leave-one-target-out, on recorded ground truth; and the
ceiling that the ground truth's own noise puts on any ranking.

    PYTHONPATH=src python benchmarks/bench_learned_ranker.py \
        [--run-dir ~/.cache/adapterpool/bench-run-h200] [--out benchmarks/results/h200]

Reads the benchmark's state (every candidate's metric scores and the accuracies fine-tuning from it
reached) and its pool (each source adapter's recorded validation accuracy; its training texts,
from which the task summary is computed as contribution computes it). Per candidate, features:
every recorded metric, the cosine similarity of the target's and the source's task summaries
(Vu et al. 2020), and the source adapter's own validation accuracy, each z-scored within the target
(scales differ between targets; rankings are within one). Two learners, both linear on those
features, each fitted on all targets but one and evaluated on the one left out:

- ``ridge``: ridge regression to the candidates' z-scored validation accuracy;
- ``pairwise``: logistic regression on feature differences of candidate pairs (RankNet-style).

Quality is measured as the benchmark measures a metric (weighted Kendall tau, top-1 hit,
regret@1/3 against test accuracy). The *noise ceiling* ranks the candidates by their own
fine-tuned validation accuracy, i.e. by the outcome itself measured on another split: no score
computed before fine-tuning can be expected to beat that ordering's agreement with test accuracy.

Writes ``learned-ranker.json`` and ``learned-ranker.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from functools import partial
from pathlib import Path

import numpy as np
from bench_ranking_scale import target_spec, text_summaries
from sklearn.linear_model import LogisticRegression

from adapterpool.bench.quality import ranking_quality
from adapterpool.bench.state import read_state
from adapterpool.models.build import load_tokenizer
from adapterpool.pool import AdapterPool
from adapterpool.ranking.summarize import load_encoder, records_summary
from adapterpool.ranking.task_summary import similarities
from adapterpool.tasks import load_task

QUALITY_KEYS = ("weighted_tau", "top1_hit", "regret_at_1", "regret_at_3")
SIMILARITY = "similarity"
SOURCE_QUALITY = "source_validation_accuracy"


def zscore(x: np.ndarray) -> np.ndarray:
    """Column-wise z-scores within one target; a missing score becomes -3 (ranks last)."""
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    std[std == 0] = 1.0
    return np.nan_to_num((x - mean) / std, nan=-3.0)


def fit_ridge(train: list[dict], alpha: float) -> np.ndarray:
    x = np.vstack([zscore(t["x"]) for t in train])
    y = np.concatenate([(t["val"] - t["val"].mean()) / (t["val"].std() or 1.0) for t in train])
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def fit_pairwise(train: list[dict], c: float, seed: int) -> np.ndarray:
    diffs, wins = [], []
    for t in train:
        z, val = zscore(t["x"]), t["val"]
        for a, b in itertools.combinations(range(len(val)), 2):
            if val[a] != val[b]:
                diffs += [z[a] - z[b], z[b] - z[a]]
                wins += [int(val[a] > val[b]), int(val[b] > val[a])]
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=5000, random_state=seed)
    return model.fit(np.array(diffs), wins).coef_[0]


def mean_quality(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in QUALITY_KEYS}


def leave_one_target_out(targets: dict[str, dict], columns: list[int], fit) -> dict:
    per_target = {}
    for held in targets:
        weights = fit([t | {"x": t["x"][:, columns]} for key, t in targets.items()
                       if key != held])
        t = targets[held]
        scores = zscore(t["x"])[:, columns] @ weights
        per_target[held] = ranking_quality(list(scores), list(t["test"]))
    return {"mean": mean_quality(list(per_target.values())), "per_target": per_target}


def collect(state: dict, pool: AdapterPool, *, seed: int) -> tuple[list[str], dict[str, dict]]:
    """Per target: candidate ids, the feature matrix, validation and test accuracies."""
    summaries = text_summaries(pool, max_train=2000, seed=seed)
    records = {r.id: r for r in pool.list()}
    encoder, tokenizer = load_encoder(pool.base_model), load_tokenizer(pool.base_model)
    metrics = list(state["config"]["metrics"])
    targets = {}
    for key, target in sorted(state["targets"].items()):
        if not (target.get("scores") and target.get("finetune")):
            continue
        ids = sorted(set(target["scores"]) & set(target["finetune"]) & set(summaries))
        task = load_task(target_spec(key), seed=seed, max_train=state["config"]["max_train"])
        sims = similarities(records_summary(task.train, encoder, tokenizer, seed=seed),
                            [summaries[i] for i in ids], "cosine")
        x = np.array([[target["scores"][i]["scores"].get(m, np.nan) for m in metrics]
                      + [sims[n], records[i].metrics["validation"]["accuracy"]]
                      for n, i in enumerate(ids)], dtype=np.float64)
        targets[key] = {
            "ids": ids, "x": x,
            "val": np.array([target["finetune"][i]["validation"]["accuracy"] for i in ids]),
            "test": np.array([target["finetune"][i]["test"]["accuracy"] for i in ids]),
        }
    return [*metrics, SIMILARITY, SOURCE_QUALITY], targets


def evaluate(names: list[str], targets: dict[str, dict], *, seed: int) -> dict:
    n_metrics = len(names) - 2
    feature_sets = {
        "metrics": list(range(n_metrics)),
        "metrics+similarity+quality": list(range(len(names))),
        "similarity+quality": [n_metrics, n_metrics + 1],
    }
    learners = {f"ridge(alpha={a})": partial(fit_ridge, alpha=a) for a in (10, 100, 1000)}
    learners |= {f"pairwise(C={c})": partial(fit_pairwise, c=c, seed=seed)
                 for c in (0.01, 0.1, 1.0)}
    learned = {f"{learner} on {fs}": leave_one_target_out(targets, cols, fit)
               for fs, cols in feature_sets.items() for learner, fit in learners.items()}
    single = {}
    for j, name in enumerate(names):
        rows = {k: ranking_quality(list(t["x"][:, j]), list(t["test"]))
                for k, t in targets.items()}
        single[name] = {"mean": mean_quality(list(rows.values())), "per_target": rows}
    ceiling_rows = {k: ranking_quality(list(t["val"]), list(t["test"]))
                    for k, t in targets.items()}
    best_single = max(single, key=lambda m: single[m]["mean"]["weighted_tau"])
    best_learned = max(learned, key=lambda m: learned[m]["mean"]["weighted_tau"])
    return {
        "targets": list(targets), "candidates": {k: len(t["ids"]) for k, t in targets.items()},
        "features": names, "seed": seed,
        "single": single, "learned": learned,
        "noise_ceiling": {"mean": mean_quality(list(ceiling_rows.values())),
                          "per_target": ceiling_rows},
        "best_single": best_single, "best_learned": best_learned,
        "learned_beats_every_single": (learned[best_learned]["mean"]["weighted_tau"]
                                       > single[best_single]["mean"]["weighted_tau"]),
    }


def markdown(result: dict, run_dir: str) -> str:
    def row(name: str, q: dict) -> str:
        return (f"| {name} | {q['weighted_tau']:.3f} | {q['top1_hit']:.2f} | "
                f"{q['regret_at_1']:.2f} | {q['regret_at_3']:.2f} |")

    head = ["| ranking | weighted tau | top-1 hit | regret@1 (points) | regret@3 |",
            "|---|---|---|---|---|"]
    lines = ["# A learned ranker, leave-one-target-out, and the noise ceiling", "",
             f"Ground truth: `{run_dir}` ({len(result['targets'])} targets, "
             f"{', '.join(f'{k}: {n}' for k, n in result['candidates'].items())} candidates). "
             "Written by `benchmarks/bench_learned_ranker.py`; features z-scored within each "
             "target; every learned row is fitted on the other targets only.", "",
             "## Best of each kind", "", *head,
             row("noise ceiling: the candidates' own fine-tuned validation accuracy",
                 result["noise_ceiling"]["mean"]),
             row(f"best single metric: `{result['best_single']}`",
                 result["single"][result["best_single"]]["mean"]),
             row(f"best learned: {result['best_learned']}",
                 result["learned"][result["best_learned"]]["mean"]), "",
             "## Every learned ranker", "", *head]
    lines += [row(name, v["mean"]) for name, v in sorted(
        result["learned"].items(), key=lambda kv: -kv[1]["mean"]["weighted_tau"])]
    lines += ["", "## Every single feature", "", *head]
    lines += [row(f"`{name}`", v["mean"]) for name, v in sorted(
        result["single"].items(), key=lambda kv: -kv[1]["mean"]["weighted_tau"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="~/.cache/adapterpool/bench-run-h200")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "h200"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run_dir = Path(args.run_dir).expanduser()
    state = read_state(run_dir / "state.json")
    names, targets = collect(state, AdapterPool(run_dir / "pool"), seed=args.seed)
    result = evaluate(names, targets, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learned-ranker.json").write_text(json.dumps(result, indent=1))
    text = markdown(result, args.run_dir)
    (out / "learned-ranker.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
