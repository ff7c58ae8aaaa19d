"""Two-stage ranking: stage 1 keeps the N adapters whose task summaries are closest to the
target's (one base-model pass, no adapter run); stage 2 scores only those. Recorded in rank's
JSON and report.json; adapters without a summary come last, named in the warnings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from adapterpool import AdaptConfig, adapt, load_task, rank
from adapterpool.errors import UsageError
from adapterpool.pool import AdapterPool
from adapterpool.pool.catalog import task_summaries_table
from adapterpool.pool.task_summaries import attach_summary
from adapterpool.ranking.prefilter import prefilter
from adapterpool.ranking.task_summary import TaskSummary
from adapterpool.tasks.task import Task
from adapterpool.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def target() -> Task:
    return load_task("builtin:subjectivity", max_train=48, max_eval=16, seed=1)


def _unit(vector) -> TaskSummary:
    mean = np.asarray(vector, dtype=np.float32)
    return TaskSummary(mean, np.zeros_like(mean), 8, "probe", 0, 32)


def _replace_summaries(pool: AdapterPool, summaries: dict[str, TaskSummary | None]) -> None:
    with pool.engine.begin() as conn:
        conn.execute(task_summaries_table.delete())
    for adapter_id in summaries:
        (pool.adapter_dir(adapter_id) / "task_embedding.safetensors").unlink()
    for adapter_id, summary in summaries.items():
        if summary is not None:
            attach_summary(pool, adapter_id, summary)


def test_keeps_the_most_similar_and_puts_adapters_without_summary_last(
    pool_copy: AdapterPool, target: Task, caplog: pytest.LogCaptureFixture
):
    ids = sorted(r.id for r in pool_copy.list())
    axis = np.eye(32)
    _replace_summaries(pool_copy, {ids[0]: _unit(axis[1]), ids[1]: _unit(axis[0] + axis[1]),
                                   ids[2]: None})
    goal = _unit(axis[0])
    with caplog.at_level("WARNING", logger="adapterpool"):
        stage1 = prefilter(target, pool_copy, 2, target=goal)
    assert [r.id for r in stage1.chosen] == [ids[1], ids[0]]
    assert stage1.similarities[ids[1]] == pytest.approx(1 / math.sqrt(2))
    assert stage1.similarities[ids[0]] == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(stage1.similarities[ids[2]])
    assert "pool reindex" in stage1.warnings[0] and ids[2] in stage1.warnings[0]
    assert any("reindex" in r.getMessage() for r in caplog.records)
    everything = prefilter(target, pool_copy, 5, target=goal)
    assert [r.id for r in everything.chosen] == [ids[1], ids[0], ids[2]]  # NaN last
    record = everything.as_json()
    assert [s["adapter_id"] for s in record["similarities"]] == [ids[1], ids[0], ids[2]]
    assert record["similarities"][-1] == {"adapter_id": ids[2], "similarity": None,
                                          "summary": None}
    fr = prefilter(target, pool_copy, 1, target=goal, similarity="frechet")
    assert fr.similarities[ids[1]] == pytest.approx(-1.0)  # -|e0 - (e0 + e1)|^2, no variance
    assert fr.similarities[ids[0]] == pytest.approx(-2.0)  # -|e0 - e1|^2
    with pytest.raises(UsageError, match="unknown similarity"):
        prefilter(target, pool_copy, 1, target=goal, similarity="l1")
    with pytest.raises(UsageError, match="at least 1"):
        prefilter(target, pool_copy, 0, target=goal)


def test_a_target_is_closest_to_the_adapter_of_its_own_task(tiny_pool: AdapterPool,
                                                             target: Task):
    """Real summaries end to end (tiny BERT): a target drawn from a source task's data finds
    that source first, from one base-model pass over the target."""
    stage1 = prefilter(target, tiny_pool, 1, seed=0)
    own = next(r for r in tiny_pool.list() if r.task_name == "subjectivity")
    assert [r.id for r in stage1.chosen] == [own.id]
    assert stage1.sources == {r.id: "texts" for r in tiny_pool.list()}
    assert not stage1.warnings and stage1.target.n_texts == 48


def test_a_pool_without_summaries_support_falls_back_to_a_seeded_draw(
    tiny_pool: AdapterPool, target: Task
):
    class NoSummaries:  # a Pool without task_summaries (the protocol does not require it)
        base_model = tiny_pool.base_model
        list, adapter_dir, get = tiny_pool.list, tiny_pool.adapter_dir, tiny_pool.get

    view = NoSummaries()
    first = prefilter(target, view, 2, seed=3)
    assert "serves no task summaries" in first.warnings[0]
    assert [r.id for r in first.chosen] == [r.id for r in prefilter(target, view, 2, seed=3).chosen]


def test_rank_scores_only_the_kept_and_records_stage_1(tiny_pool: AdapterPool, target: Task):
    result = rank(target, tiny_pool, ["logme"], subset=2, max_samples=48, max_length=32,
                  subset_strategy="prefilter", show_progress=False, measure_energy=False)
    payload = json.loads(json.dumps(result.as_json(), allow_nan=False))
    stage1 = payload["prefilter"]
    assert payload["subset_strategy"] == "prefilter" and stage1["similarity"] == "cosine"
    assert payload["subset"] == stage1["chosen"] and len(payload["subset"]) == 2
    assert {s["adapter_id"] for s in payload["scores"]} == set(payload["subset"])
    assert stage1["pool_size"] == 3 and len(stage1["similarities"]) == 3
    values = [s["similarity"] for s in stage1["similarities"]]
    assert values == sorted(values, reverse=True)
    assert [s["adapter_id"] for s in stage1["similarities"][:2]] == stage1["chosen"]
    plain = rank(target, tiny_pool, ["logme"], subset=2, max_samples=48, max_length=32,
                 show_progress=False, measure_energy=False)
    assert plain.subset_strategy == "random" and plain.prefilter is None
    assert plain.subset == [r.id for r in tiny_pool.sample(2, 0)]
    with pytest.raises(UsageError, match="subset_strategy"):
        rank(target, tiny_pool, ["logme"], subset_strategy="best")


def test_adapt_records_the_choice_in_report_json(tiny_pool: AdapterPool, target: Task,
                                                 tmp_path: Path):
    config = AdaptConfig(metric="logme", subset=2, max_tries=1, transfer_epochs=1,
                         fallback=TrainConfig(epochs=1, max_length=32, evals_per_epoch=1),
                         max_samples=48, subset_strategy="prefilter")
    adapt(target, tiny_pool, config, out_dir=tmp_path / "run", show_progress=False,
          measure_energy=False)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["subset_strategy"] == "prefilter"
    assert report["prefilter"]["chosen"] == report["subset"]
    assert report["settings"]["config"]["subset_strategy"] == "prefilter"
    assert report["attempts"][0]["adapter_id"] in report["subset"]
    default = replace(config, subset_strategy="random")
    assert AdaptConfig.from_dict(default.to_dict()) == default
    with pytest.raises(UsageError, match="subset_strategy"):
        AdaptConfig(subset_strategy="closest")
    with pytest.raises(UsageError, match="prefilter_similarity"):
        AdaptConfig(prefilter_similarity="dot")


def test_cli_options_default_to_the_config_fields():
    from adapterpool.cli.main import adapt_config_from_args, build_parser

    parse = build_parser().parse_args
    for command in ("rank", "adapt"):
        args = parse([command, "builtin:subjectivity", "--pool", "p"])
        assert (args.subset_strategy, args.prefilter_similarity) == ("random", "cosine")
    args = parse(["adapt", "builtin:subjectivity", "--pool", "p", "--subset-strategy",
                  "prefilter", "--prefilter-similarity", "frechet", "--subset", "20"])
    assert adapt_config_from_args(args) == AdaptConfig(
        subset=20, subset_strategy="prefilter", prefilter_similarity="frechet")
    with pytest.raises(SystemExit):
        parse(["rank", "builtin:subjectivity", "--pool", "p", "--subset-strategy", "best"])
