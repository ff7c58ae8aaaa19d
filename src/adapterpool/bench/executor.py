"""The benchmark's units as Ray tasks: one machine's cores, or a cluster's nodes and GPUs.

``adapterpool bench --ray`` (``--ray-address auto|HOST:PORT`` for a running cluster, else a local
Ray) computes the same units as the serial run, into the same ``state.json``, in three stages:

1. ``sources``: one task per pool member (standard LoRA, contributed to the run's pool);
2. ``ground-truth``: one task per target: metric scores, reference scores and the ground-truth
   warm-start fine-tunes. Their seconds feed no time ratio, so they run side by side (``SPREAD``);
3. ``timed``: one task per target: what every time ratio divides by (its standard-LoRA baseline;
   with a converged ground truth, standard LoRA per seed and the peers), then its strategy
   runs. Each asks for ``timed_cpus`` CPUs (default: the smallest node's count), so a node runs
   one timed target at a time and a target's baseline and loops all run on the same node: no
   time ratio compares a busy node with an idle one, or one node with another. With
   ``time_measure`` "cpu" on a CPU cluster the ratios divide CPU seconds of one-thread units,
   which the node's load does not change, so timed tasks take one CPU and run side by side,
   in one wave with the untimed ones (:func:`stage_waves`).

Every task asks for a whole GPU where the cluster has any. A task writes its units to its own
part file (``parts/`` beside ``state.json``, seeded with what it needs of the state) and returns
them; the driver merges each into ``state.json`` as it finishes, so an interrupted run resumes
(part files left by a dead driver are folded in at the next start). The run folder (pool
included) must be reachable from every node under the same path, as a shared filesystem gives.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..cluster import node_id, ray_session, set_threads, smallest_node_cpus, unit_resources
from ..errors import UsageError
from .config import BenchConfig
from .harness import BenchRun, task_key

STAGES = ("sources", "ground-truth", "timed")


def _unit(config: dict, part: str, stage: str, spec: str, energy: bool, cpus: float,
          deadline_at: float) -> dict:
    """One Ray task: a source; a target's untimed units; or a target's timed units (the
    strategy runs seed by seed). No unit starts after ``deadline_at``: a deadline leaves whole
    units (a converged ground truth's fine-tunes and peers, a strategy seed). Returns the units
    computed and where."""
    import ray

    from ..verbosity import quiet_third_party

    started = time.perf_counter()
    where = node_id(ray)
    if time.time() > deadline_at:
        return {"state": {}, "computed": {}, "node": where, "seconds": 0.0, "skipped": True}
    set_threads(cpus)
    quiet_third_party()
    run = BenchRun(BenchConfig(**config), show_progress=False, measure_energy=energy,
                   state_path=Path(part))
    if stage == "sources":
        run.build_pool([spec])
    else:
        pool = run.open_pool()
        if stage == "ground-truth":
            run.untimed_target(pool, spec, stop_at=deadline_at)
        else:
            run.timed_references(pool, spec, stop_at=deadline_at)
            if spec in run.config.strategy_target_specs():
                for seed in run.config.strategy_seeds:
                    if time.time() > deadline_at:
                        break
                    run.run_strategies(pool, spec, seeds=[seed])
    return {"state": run.state.data, "computed": dict(run.state.computed), "node": where,
            "seconds": time.perf_counter() - started, "skipped": False}


@dataclass
class StageReport:
    """What one stage did: units finished, skipped (deadline) and failed (with why)."""

    stage: str
    units: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> units it ran
    computed: dict[str, int] = field(default_factory=dict)  # unit kind -> computed (not reused)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {"stage": self.stage, "units": self.units, "done": self.done,
                "skipped": self.skipped, "failed": self.failed, "nodes": self.nodes,
                "computed": self.computed, "seconds": self.seconds}


def _wave(ray, run: BenchRun, plans: list[tuple], *, energy: bool, deadline_at: float,
          log) -> list[StageReport]:
    """Submit one task per spec of every stage in ``plans`` (``(stage, specs, cpus, gpus,
    spread)``, all at once), merge each task's units into the state as it finishes."""
    from ray.exceptions import RayError

    started = time.perf_counter()
    parts = run.state.parts_dir
    parts.mkdir(parents=True, exist_ok=True)
    reports, pending = {}, {}
    for stage, specs, cpus, gpus, spread in plans:
        reports[stage] = StageReport(stage, units=len(specs))
        options = unit_resources(ray, cpus, gpus) | {"max_retries": 0}
        if spread:
            options["scheduling_strategy"] = "SPREAD"
        remote = ray.remote(_unit).options(**options)
        for spec in specs:
            part = parts / f"{stage}-{task_key(spec)}.json"
            seed = {"sources": run.state.get("sources") or {}}
            if stage != "sources":
                seed["targets"] = {task_key(spec): run.state.get("targets", task_key(spec)) or {}}
            part.write_text(json.dumps(seed))
            ref = remote.remote(run.config.as_dict(), str(part), stage, spec, energy, cpus,
                                deadline_at)
            pending[ref] = (stage, spec, part)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            stage, spec, part = pending.pop(ref)
            report = reports[stage]
            try:
                out = ray.get(ref)
            except RayError as exc:  # the unit's traceback, kept short in the summary
                report.failed[spec] = _last_line(exc)
                log(f"[{stage}] FAILED {spec}: {report.failed[spec]}")
                continue
            run.state.merge(out["state"])
            run.state.computed.update(out["computed"])
            for kind, count in out["computed"].items():
                report.computed[kind] = report.computed.get(kind, 0) + count
            part.unlink(missing_ok=True)
            report.nodes[out["node"]] = report.nodes.get(out["node"], 0) + 1
            (report.skipped if out["skipped"] else report.done).append(spec)
            finished = len(report.done) + len(report.skipped) + len(report.failed)
            log(f"[{stage} {finished}/{report.units}] "
                f"{'skipped (deadline)' if out['skipped'] else 'done'} {spec} in "
                f"{out['seconds']:.0f} s on node {out['node'][:8]}")
    for report in reports.values():
        report.seconds = time.perf_counter() - started
    return list(reports.values())


def stage_waves(stages: list[str], *, cpu_time: bool) -> list[list[str]]:
    """The stages in the order they run, grouped into waves whose tasks run side by side.

    Sources come first (every target's tasks read the pool). The ground truth's untimed tasks
    and the timed ones need nothing of each other (a timed task trains its own baselines); they
    are one wave when time is counted in CPU seconds (``cpu_time``: a node's load changes no
    timed unit), so no core idles while the last target's untimed units finish; with wall time,
    timed tasks wait for a quiet node, after the untimed wave."""
    wanted = [s for s in STAGES if s in stages]
    waves = [["sources"]] if "sources" in wanted else []
    rest = [s for s in wanted if s != "sources"]
    if cpu_time:
        return waves + ([rest] if rest else [])
    return waves + [[s] for s in rest]


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "".join(traceback.format_exception_only(exc)).strip()


def run_on_ray(config: BenchConfig, *, address: str | None = None, stages: list[str] | None = None,
               timed_cpus: int | None = None, unit_gpus: float = 1.0,
               deadline: float | None = None, measure_energy: bool = True,
               log=print) -> tuple[dict, list[StageReport]]:
    """Every unit of ``config`` not recorded yet, on Ray; returns the state and each stage's
    report. ``stages`` (default all, in order), ``timed_cpus`` (default: the smallest node's
    CPUs), ``unit_gpus`` (the share of a GPU each untimed task asks for: 0.1 runs ten targets'
    ground truth on one GPU side by side; timed tasks always hold a whole GPU), ``deadline``
    (seconds after which no unit starts; rerun to resume)."""
    stages = list(STAGES) if stages is None else stages
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise UsageError(f"bench: unknown stages {unknown}; choose from {', '.join(STAGES)}")
    if timed_cpus is not None and timed_cpus < 1:
        raise UsageError(f"bench: --timed-cpus must be at least 1, got {timed_cpus}")
    if not 0 < unit_gpus <= 1:
        raise UsageError(f"bench: --unit-gpus must be in (0, 1], got {unit_gpus}")
    targets = config.all_targets()
    if not targets and stages != ["sources"]:
        raise UsageError("bench: no targets (set `discover` or `targets`)")
    deadline_at = time.time() + (deadline if deadline is not None else float("inf"))
    run = BenchRun(config, show_progress=False, measure_energy=measure_energy)
    run.state.fold_parts()  # left by an interrupted run: keep its units
    run.open_pool()  # created once here, before tasks add to it
    reports = []
    with ray_session(address) as ray:
        cpu_time = config.time_measure == "cpu" and not ray.cluster_resources().get("GPU")
        if cpu_time:
            # CPU seconds of one-thread units do not change with the node's load: timed units
            # run side by side like the others (on GPUs wall time counts: a whole GPU each)
            timed_plan = (targets, 1, unit_gpus, True)
        else:
            timed_plan = (targets, timed_cpus or smallest_node_cpus(ray), 1.0, False)
        plan = {"sources": (config.all_sources(), 1, unit_gpus, True),
                "ground-truth": (targets, 1, unit_gpus, True),
                "timed": timed_plan}
        for wave in stage_waves(stages, cpu_time=cpu_time):
            reports += _wave(ray, run, [(stage, *plan[stage]) for stage in wave],
                             energy=measure_energy, deadline_at=deadline_at, log=log)
    return run.state.data, reports
