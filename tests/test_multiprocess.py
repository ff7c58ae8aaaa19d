"""``accelerate launch`` with two CPU processes: one ranking, one report, one contribution.

The README promises that ``accelerate launch -m adapterpool.cli adapt ...`` spreads the loop over
several devices. Training is data parallel (every process), but the side effects (report.json,
the saved adapter, ``pool.add``) must happen once, on the main process, or two processes race
for the same files and contribute the same adapter twice. Two CPU processes over gloo are the
cheapest real multi-process run there is, so that is what this test launches.

How to get two CPU processes out of ``accelerate launch`` (accelerate 1.x): ``--cpu`` alone
starts a single process (the simple launcher) unless an MPI host file is given, so the test
asks for the torchrun launcher with ``--multi_gpu`` and sets ``ACCELERATE_USE_CPU=1`` in the
environment, which makes every process pick the CPU and the gloo backend (MULTI_CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapterpool.errors import AdapterPoolError, DuplicateAdapterError, UsageError
from adapterpool.loop.processes import on_main_process, process_state, shareable
from adapterpool.pool import AdapterPool
from adapterpool.pool.maintenance import verify

SRC = Path(__file__).resolve().parents[1] / "src"


def _launch_env(tmp_path: Path) -> dict[str, str]:
    """Offline, CPU only, one thread per process, and no user accelerate config in the way."""
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ACCELERATE_USE_CPU": "1",  # every process on the CPU, gloo between them
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        # accelerate reads $HF_HOME/accelerate/default_config.yaml; an empty home has none
        "HF_HOME": str(tmp_path / "hf-home"),
    })
    return env


def _launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``accelerate launch`` with two CPU processes (torchrun underneath, gloo between them)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", "0",  # a free port: tests may run side by side
        *args,
    ]
    proc = subprocess.run(command, env=_launch_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_two_processes_write_one_report_and_contribute_once(tmp_path: Path, tiny_pool) -> None:
    pool_dir = tmp_path / "pool"
    shutil.copytree(tiny_pool.path, pool_dir)
    pool = AdapterPool(pool_dir)
    before = {record.id for record in pool.list()}
    out = tmp_path / "run"
    proc = _launch([
        "-m", "adapterpool.cli", "adapt", "builtin:movie-sentiment",
        "--pool", str(pool_dir), "--metric", "leep", "--subset", "2", "--max-tries", "1",
        "--threshold", "0", "--strategy", "plain", "--epochs", "1", "--max-train", "64",
        "--max-eval", "32",
        "--max-samples", "64", "--max-length", "32", "--batch-size", "8", "--no-energy",
        "--contribute", "--out", str(out), "--json",
    ], tmp_path)

    # one process printed the report, and it is the one on disk
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report == json.loads((out / "report.json").read_text())
    assert report["outcome"] == "transfer"
    # really data parallel: 64 examples in batches of 8 are 8 batches an epoch, 4 per process,
    # evaluated twice an epoch; one epoch is 4 steps, not 8 (each process sees half the data)
    assert report["settings"]["processes"] == 2
    history = report["attempts"][0]["history"]
    assert [(h["step"], h["epoch"]) for h in history] == [(2, 0.5), (4, 1.0)]

    # one report, one adapter folder, nothing else in the run folder
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "report.json"]
    assert len(list(out.rglob("report.json"))) == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert report["adapter_dir"] == str(out / "adapter")

    # the pool gained exactly one adapter, the reported one, and is consistent
    after = {record.id for record in AdapterPool(pool_dir).list()}
    assert after - before == {report["contributed_adapter_id"]}
    assert before <= after
    check = verify(AdapterPool(pool_dir))
    assert check["consistent"], check
    assert not check["orphans"], check


# Every process runs this; each writes down what it decided on its own (its local attempts), so
# the test can compare the processes' decisions rather than the one report the main one wrote.
DECISIONS_SCRIPT = """
import json, sys
from pathlib import Path

import pytest

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.loop.processes import process_state
from adapterpool.pool import AdapterPool
from adapterpool import TrainConfig

pool_dir, out_dir, dump_dir = sys.argv[1:4]
task = load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)
config = AdaptConfig(
    metric="leep", subset=2, max_tries=2, threshold=1.01, transfer_epochs=1, max_samples=64,
    strategy=("early-pass", "cutoff", "warm-fallback"), contribute=True,
    warm_fallback_max_shortfall=None, warm_fallback_at_once=False,
    fallback=TrainConfig(epochs=1, max_length=32, batch_size=8),
)
result = adapt(task, AdapterPool(pool_dir), config, out_dir=out_dir, show_progress=False,
               measure_energy=False)
local = []
for attempt in result.attempts:  # wall times differ between processes; decisions must not
    entry = {k: v for k, v in attempt.as_json().items() if k not in ("train_seconds", "energy")}
    entry["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in entry["history"]]
    local.append(entry)
state = process_state()

# What on_main_process hands the others when the main process fails: every process records the
# error it raised (the main one its own, the others what the broadcast gave them).
from adapterpool.errors import DuplicateAdapterError, UsageError
from adapterpool.loop.processes import on_main_process


class Unpicklable(Exception):
    def __init__(self):
        super().__init__("no")
        self.handle = lambda: None


def fail(error):
    raise error


errors = {}
for name, error in [("usage", UsageError("bad setting")),
                    ("duplicate", DuplicateAdapterError("already in the pool as x", "x")),
                    ("unpicklable", Unpicklable())]:
    try:
        on_main_process(state, lambda error=error: fail(error))
        errors[name] = None
    except Exception as exc:
        errors[name] = {"type": type(exc).__name__, "message": str(exc),
                        "families": [c.__name__ for c in type(exc).__mro__]}
errors["value"] = on_main_process(state, lambda: 42 + state.process_index)  # the main one's

Path(dump_dir, f"rank{state.process_index}.json").write_text(json.dumps({
    "processes": state.num_processes, "ranking": [s.adapter_id for s in result.scores],
    "outcome": result.outcome, "attempts": local, "report": result.report, "errors": errors,
}))
"""


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory, tiny_pool) -> dict:
    """One ``accelerate launch`` of DECISIONS_SCRIPT with two processes, read by two tests."""
    tmp_path = tmp_path_factory.mktemp("two-processes")
    pool_dir = tmp_path / "pool"
    shutil.copytree(tiny_pool.path, pool_dir)
    before = {record.id for record in AdapterPool(pool_dir).list()}
    script, out, dumps = tmp_path / "decide.py", tmp_path / "run", tmp_path / "dumps"
    script.write_text(DECISIONS_SCRIPT)
    dumps.mkdir()
    _launch([str(script), str(pool_dir), str(out), str(dumps)], tmp_path)
    main, other = (json.loads((dumps / f"rank{i}.json").read_text()) for i in (0, 1))
    return {"main": main, "other": other, "out": out, "pool_dir": pool_dir, "before": before}


def test_two_processes_take_the_same_decisions(two_processes: dict) -> None:
    """Ranking, cutoffs, the fallback's source and every validation score agree across processes;
    every process returns the main process's report, and only the main one wrote it.
    """
    main, other, out = two_processes["main"], two_processes["other"], two_processes["out"]
    pool_dir, before = two_processes["pool_dir"], two_processes["before"]
    assert main["processes"] == other["processes"] == 2
    assert main["ranking"] == other["ranking"] and len(main["ranking"]) == 2
    assert main["attempts"] == other["attempts"]  # kinds, sources, stop reasons, scores
    kinds = [a["kind"] for a in main["attempts"]]
    assert kinds == ["transfer", "transfer", "warm_fallback"], kinds
    assert {a["stop_reason"] for a in main["attempts"][:2]} == {"cutoff"}
    assert main["outcome"] == other["outcome"] == "failed"
    assert main["report"] == other["report"] == json.loads((out / "report.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "report.json"]
    # a failed run contributes nothing, from any process
    assert {record.id for record in AdapterPool(pool_dir).list()} == before


def test_main_process_errors_reach_the_other_processes_intact(two_processes: dict) -> None:
    """What ``on_main_process`` broadcasts when the main process fails, across two real
    processes (gloo): the error itself where it pickles, else one of the same family with its
    message (a user error stays one: every process exits 2); and a value, the main one's.
    """
    main, other = two_processes["main"]["errors"], two_processes["other"]["errors"]
    assert main["usage"]["type"] == other["usage"]["type"] == "UsageError"
    assert main["usage"]["message"] == other["usage"]["message"] == "bad setting"
    assert main["duplicate"]["type"] == "DuplicateAdapterError"  # its own, as raised
    assert "AdapterPoolError" in other["duplicate"]["families"]  # a stand-in of its family
    assert "already in the pool as x" in other["duplicate"]["message"]
    assert main["unpicklable"]["type"] == "Unpicklable"
    assert other["unpicklable"]["type"] == "RuntimeError"
    assert other["unpicklable"]["message"] == "Unpicklable on the main process: no"
    assert main["value"] == other["value"] == 42  # the main process's, not the other's 43
    # the stand-ins themselves, in this process
    plain = UsageError("bad setting")
    assert shareable(plain) is plain
    duplicate = DuplicateAdapterError("already in the pool as x", "x")  # does not unpickle
    shared = shareable(duplicate)
    assert isinstance(shared, AdapterPoolError) and "already in the pool as x" in str(shared)
    assert type(shareable(_Unpicklable())) is RuntimeError
    # one process: the work runs here, its value and its errors as they are
    assert on_main_process(process_state(), lambda: 41 + 1) == 42


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("no")
        self.handle = lambda: None
