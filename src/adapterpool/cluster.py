"""Ray for batch work (the optional extra ``adapterpool[ray]``): connecting, resource requests.

Batch commands (``adapterpool bench --ray``, ``train-many``, ``adapt-many``) hand their units to
Ray Core as tasks with resource requests, so the same command runs on this machine (a local Ray
started for the command) or on a cluster (``--ray-address auto`` or ``HOST:PORT``: the head that
``ray start --head`` printed). Every node must reach the pool (a shared folder, or a PostgreSQL
catalog with object storage, or a pool server URL) and, for the benchmark, its run folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import UsageError

# A local Ray for one command: no dashboard, a small object store (units pass JSON, not tensors).
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024


def import_ray() -> Any:
    """``ray``, or a message that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError("Ray is not installed: `pip install adapterpool[ray]` (or `pip install "
                         "ray`) to run batch work on Ray") from exc
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected for the duration of a command: to ``address`` (``auto`` or ``HOST:PORT``)
    or, without one, a local Ray started here and stopped afterwards. Already connected (a
    caller's own ``ray.init``): used as it is and left connected."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        try:
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        except ConnectionError as exc:
            raise UsageError(f"no Ray cluster at {address!r}: start one with `ray start --head` "
                             f"(or leave --ray-address out for a local Ray): {exc}") from exc
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level="warning",
                 log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def unit_resources(ray: Any, cpus: float = 1, gpus: float = 1) -> dict:
    """What one training unit asks Ray for: ``cpus`` CPUs, and ``gpus`` of a GPU where the
    cluster has GPUs (default a whole one; a fraction puts several small models on one GPU, for
    units whose seconds feed no time ratio)."""
    if not 0 < gpus <= 1:
        raise UsageError(f"GPUs per unit must be in (0, 1], got {gpus}")
    return {"num_cpus": cpus, "num_gpus": gpus if ray.cluster_resources().get("GPU", 0) else 0}


def smallest_node_cpus(ray: Any) -> int:
    """The CPU count of the smallest alive node: a unit asking for that many holds a node of that
    size whole (timed units), and fits on every node."""
    cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    cpus = [c for c in cpus if c > 0]
    if not cpus:
        raise UsageError("the Ray cluster has no node with CPUs")
    return min(cpus)


def node_id(ray: Any) -> str:
    """The Ray node this unit runs on (recorded in summaries, never in results)."""
    return ray.get_runtime_context().get_node_id()


def set_threads(cpus: float) -> None:
    """torch and the BLAS libraries on the unit's share of CPUs (Ray sets OMP_NUM_THREADS too):
    left at every core, several units on one node oversubscribe it many times over."""
    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(max(1, int(cpus)))
