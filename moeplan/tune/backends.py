"""Where a table's measurements run: a backend makes the measuring pool of one table job.

A pool has the interface of `moeplan.tune.worker.WorkerPool`: `start()`, `run(tasks,
on_point)` calling `on_point(task, M, phase, result, where)` on the driver for every point,
`close()`, `facts` (device facts reported by the workers) and `restarts`. The driver alone
checkpoints and writes; a pool only measures. Workers get the job payload by value (shape,
seed, timer, routing pools as bytes), never a local path or an environment variable.

- `LocalBackend`: one spawned process per local GPU (today's pool).
- `moeplan.tune.ray_backend.RayBackend`: one actor per GPU of a Ray cluster.
"""

from __future__ import annotations

import importlib.util
from typing import Optional, Protocol

from moeplan.base.errors import TuneError

CLUSTER_EXTRA = "pip install 'moeplan[cluster]'"


class Backend(Protocol):
    name: str

    def pool(self, gpus: list, job: dict, **kw):
        """A pool for one table job (keyword arguments as WorkerPool's)."""

    def close(self) -> None:
        """Release what the backend holds (connections); pools are closed by their jobs."""


class LocalBackend:
    """Worker processes on this machine, one per GPU in the job's `gpus`."""

    name = "local"

    def pool(self, gpus: list, job: dict, **kw):
        from moeplan.tune.worker import WorkerPool

        return WorkerPool(gpus, job, **kw)

    def close(self) -> None:
        pass


def check_backend(ray_address: Optional[str]) -> None:
    """The `--ray` option on its own (no connection): TuneError when empty or Ray is missing."""
    if ray_address is None:
        return
    from moeplan.base.safeio import check_text

    check_text("--ray", ray_address, "a Ray address (host:port, ray://host:port) or 'local'", 300, TuneError)
    if importlib.util.find_spec("ray") is None:
        raise TuneError(f"--ray needs Ray, which is not installed; install the cluster extra: {CLUSTER_EXTRA}")


def make_backend(ray_address: Optional[str]) -> Backend:
    """`--ray ADDRESS|local` -> a Ray backend (TuneError naming the extra when Ray is missing, or
    when the cluster has no GPU); None -> the local process pool."""
    check_backend(ray_address)
    if ray_address is None:
        return LocalBackend()
    from moeplan.tune.ray_backend import RayBackend

    return RayBackend(ray_address)
