"""Batch work on Ray, tested as a cluster on one machine: a head and a second node, one CPU each
(Ray's own ``ray.cluster_utils.Cluster``).

The benchmark spread over both nodes must give the state the serial run gives (same seeds; only
seconds and energy differ), and use both nodes; ``adapt-many`` must report a failing target and
finish the others. The cluster is started once for the module and its own processes are stopped
afterwards, leaving none behind and any other Ray on the machine running.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

if os.environ.get("CI") == "true":  # the dev extras install it: there it must run
    import ray  # noqa: F401
else:
    pytest.importorskip("ray")

from adapterpool.bench.config import BenchConfig  # noqa: E402
from adapterpool.bench.executor import run_on_ray  # noqa: E402
from adapterpool.bench.harness import BenchRun  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def cluster_env(tmp_path: Path) -> dict[str, str]:
    """What the nodes' workers inherit: this checkout's sources, offline, one thread."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        str(SRC), os.environ.get("PYTHONPATH")])), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="", RAY_USAGE_STATS_ENABLED="0")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two Ray nodes on loopback, one CPU each, in a folder of their own; yields the head's
    address. Ray's own test cluster (``ray.cluster_utils.Cluster``) keeps the processes it
    starts and stops exactly those: ``ray stop`` would stop every Ray on the machine, a user's
    running benchmark included."""
    from ray.cluster_utils import Cluster

    folder = tmp_path_factory.mktemp("ray")
    node = {"num_cpus": 1, "object_store_memory": 100_000_000, "temp_dir": str(folder)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in cluster_env(folder).items():
            patch.setenv(key, value)
        cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                          head_node_args=node | {"include_dashboard": False})
        try:
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            yield cluster.address
        finally:
            cluster.shutdown()


TIMINGS = {"kwh", "co2_kg", "energy", "timing", "load_average"}


def without_timings(node) -> str:
    """The state without what only measures the run (seconds, energy), as canonical JSON (NaN
    scores compare equal there): what must be equal."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()
                    if k not in TIMINGS and not k.endswith("seconds")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return json.dumps(strip(node), sort_keys=True)


def _config(tiny_base_model: str, bench_folders: Path, run_dir: Path) -> BenchConfig:
    return BenchConfig(
        discover=[str(bench_folders)], extra_sources=["builtin:subjectivity"],
        metrics=["logme", "leep"], ensemble_members=["logme", "leep"],
        max_train=48, max_eval=24, max_length=32, source_epochs=1, transfer_epochs=1,
        baseline_max_epochs=2, scoring_samples=32, subset=2, max_tries=1, loop_seeds=[0],
        base_model=tiny_base_model, run_dir=str(run_dir), out_dir=str(run_dir / "out"),
        strategies=["plain"], strategy_seeds=[0], strategy_targets=["debate-role"],
        strategy_metric="logme", time_measure="cpu",  # untimed and timed tasks in one wave
    )


def test_bench_on_two_ray_nodes_gives_the_serial_state(ray_cluster, tiny_base_model,
                                                      bench_folders, tmp_path, one_torch_thread):
    serial = BenchRun(_config(tiny_base_model, bench_folders, tmp_path / "serial"),
                      show_progress=False, measure_energy=False)
    expected = serial.run()

    config = _config(tiny_base_model, bench_folders, tmp_path / "ray")
    lines: list[str] = []
    state, reports = run_on_ray(config, address=ray_cluster, measure_energy=False,
                                log=lines.append)
    assert [r.stage for r in reports] == ["sources", "ground-truth", "timed"]
    assert not any(r.failed for r in reports), [r.failed for r in reports]
    assert sum(len(r.done) for r in reports) == 3 + 2 + 2  # 3 sources, 2 targets twice
    assert len({node for r in reports for node in r.nodes}) == 2  # both nodes worked
    # the same units, the same numbers: adapter ids (hashes of the weights), scores, accuracies
    config_free = {k: v for k, v in state.items() if k != "config"}
    assert without_timings(config_free) == without_timings(
        {k: v for k, v in expected.items() if k != "config"})
    assert reports[0].computed == {"source": 3} and reports[2].computed == {"baseline": 2,
                                                                           "strategy": 1}
    saved = json.loads((tmp_path / "ray" / "state.json").read_text())
    assert without_timings(saved) == without_timings(state)
    assert not list((tmp_path / "ray" / "parts").iterdir())  # every part merged, then deleted
    assert any("on node" in line for line in lines)

    # resumed: every unit is recorded, so no task computes anything
    again, reports = run_on_ray(config, address=ray_cluster, stages=["sources", "timed"],
                                measure_energy=False, log=lines.append)
    assert [r.stage for r in reports] == ["sources", "timed"]
    assert all(r.done and not r.computed for r in reports)
    assert json.dumps(again, sort_keys=True) == json.dumps(state, sort_keys=True)


def test_stage_waves_run_untimed_and_timed_tasks_together_only_in_cpu_time():
    """Sources first; with CPU time the untimed and timed tasks share a wave (no core idles
    between them), with wall time the timed ones wait for the untimed wave to end."""
    from adapterpool.bench.executor import stage_waves

    every = ["sources", "ground-truth", "timed"]
    assert stage_waves(every, cpu_time=True) == [["sources"], ["ground-truth", "timed"]]
    assert stage_waves(every, cpu_time=False) == [["sources"], ["ground-truth"], ["timed"]]
    assert stage_waves(["timed", "ground-truth"], cpu_time=True) == [["ground-truth", "timed"]]
    assert stage_waves(["sources"], cpu_time=True) == [["sources"]]


def test_bench_on_ray_refuses_bad_settings_before_any_work(tmp_path):
    from adapterpool.errors import UsageError

    config = BenchConfig(run_dir=str(tmp_path / "run"), targets=["builtin:subjectivity"])
    with pytest.raises(UsageError, match="unknown stages"):
        run_on_ray(config, stages=["sources", "everything"])
    with pytest.raises(UsageError, match="--timed-cpus"):
        run_on_ray(config, timed_cpus=0)
    with pytest.raises(UsageError, match="--unit-gpus"):
        run_on_ray(config, unit_gpus=1.5)
    assert not (tmp_path / "run").exists()


def test_units_ask_for_their_share_of_a_gpu_only_where_the_cluster_has_gpus():
    """Several untimed units share one GPU (a fraction each); on a CPU-only cluster none asks."""
    from types import SimpleNamespace

    from adapterpool.cluster import unit_resources
    from adapterpool.errors import UsageError

    gpu = SimpleNamespace(cluster_resources=lambda: {"CPU": 16, "GPU": 1})
    cpu = SimpleNamespace(cluster_resources=lambda: {"CPU": 2})
    assert unit_resources(gpu, 1) == {"num_cpus": 1, "num_gpus": 1}
    assert unit_resources(gpu, 1, 0.1) == {"num_cpus": 1, "num_gpus": 0.1}
    assert unit_resources(cpu, 2, 0.1) == {"num_cpus": 2, "num_gpus": 0}
    with pytest.raises(UsageError, match="GPUs per unit"):
        unit_resources(gpu, 1, 0)


def _broken_task(root: Path) -> Path:
    """A task folder whose records lack the text field: load_task fails inside its Ray task."""
    folder = root / "broken"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"name": "broken", "task_type": "single",
                                                  "label_names": ["a", "b"]}))
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"sentence": f"s{i}", "label": i % 2}) + "\n" for i in range(8)))
    return folder


def test_adapt_many_reports_the_failing_target_and_finishes_the_others(
        ray_cluster, pool_copy, tmp_path, capsys):
    from adapterpool.cli.main import main
    from adapterpool.pool import AdapterPool
    from adapterpool.pool.maintenance import verify

    before = {r.id for r in pool_copy.list()}
    targets = ["builtin:movie-sentiment", str(_broken_task(tmp_path)), "builtin:subjectivity",
               "builtin:word-sense"]
    out = tmp_path / "runs"
    code = main(["adapt-many", *targets, "--pool", str(pool_copy.path), "--ray-address",
                 ray_cluster, "--metric", "leep", "--subset", "2", "--max-tries", "1",
                 "--threshold", "0", "--epochs", "1", "--max-train", "48", "--max-eval", "24",
                 "--max-samples", "48", "--max-length", "32", "--batch-size", "8",
                 "--no-energy", "--contribute", "--out", str(out), "--json"])
    assert code == 1  # one target failed
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert [r["task"] for r in summary["tasks"]] == targets  # in the order given
    assert [r["ok"] for r in summary["tasks"]] == [True, False, True, True]
    failed = summary["tasks"][1]
    assert "TaskDataError" in failed["error"] and "text" in failed["error"]
    assert summary["done"] == 3 and summary["failed"] == 1 and summary["nodes"] == 2
    # each finished target's report is where adapt --out puts it, and its adapter joined the pool
    contributed = set()
    for row in summary["tasks"][::2] + summary["tasks"][3:]:
        report = json.loads((Path(row["out"]) / "report.json").read_text())
        assert report["outcome"] == row["outcome"] == "transfer"
        assert report["contributed_adapter_id"] == row["contributed_adapter_id"]
        contributed.add(row["contributed_adapter_id"])
    assert not (out / "broken" / "report.json").exists()
    pool = AdapterPool(pool_copy.path)
    assert {r.id for r in pool.list()} - before == contributed and len(contributed) == 3
    assert verify(pool)["consistent"]


def test_train_many_builds_sources_and_refuses_bad_settings_first(ray_cluster, tiny_base_model,
                                                                  tmp_path, capsys):
    from adapterpool.cli.main import main
    from adapterpool.pool import AdapterPool

    pool = AdapterPool.init(tmp_path / "pool", base_model=tiny_base_model)
    common = ["--pool", str(pool.path), "--ray-address", ray_cluster, "--epochs", "1",
              "--max-train", "48", "--max-eval", "24", "--max-length", "32", "--no-energy",
              "--contribute", "--out", str(tmp_path / "runs")]
    # a bad setting and a task given twice stop before Ray starts; nothing is written
    assert main(["train-many", "builtin:subjectivity", *common, "--cpus-per-task", "0"]) == 2
    assert main(["train-many", "builtin:subjectivity", "builtin:subjectivity", *common]) == 2
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "runs").exists()

    code = main(["train-many", "builtin:subjectivity", "builtin:debate-role", *common])
    assert code == 0
    rows = json.loads((tmp_path / "runs" / "summary.json").read_text())["tasks"]
    assert [r["outcome"] for r in rows] == ["standard_lora", "standard_lora"]
    assert {r.task_name for r in AdapterPool(pool.path).list()} == {"subjectivity", "debate-role"}
