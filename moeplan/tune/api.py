"""The one tuning entry point: tune these table specs with this backend.

`tune_tables` is what `moeplan tune MODEL`, `moeplan tune --matrix` and `--ray` all call:
it takes each table's lock (a table another live process is tuning is refused, or skipped
with `skip_busy`), applies the existing-table rules, plans every job (routing pools,
pruning), then hands the jobs to `run_jobs` (the CLI's progress display, or
`run_quietly`) with the backend's pools plugged in. Locks are released at the end.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from moeplan.plan import Resolution, TableSpec
from moeplan.tune.backends import Backend, LocalBackend
from moeplan.tune.lock import TableBusy, TableLock


@dataclass(frozen=True)
class TableRequest:
    """One table to tune, with the resolution (model, layout, quant) it comes from."""

    spec: TableSpec
    resolution: Resolution


def run_quietly(jobs) -> int:
    """Run the jobs with no display; 1 if some batch size found no passing config."""
    code = 0
    for job in jobs:
        o = job.run(lambda n: None, lambda n: None, lambda i, s: None, lambda s: None)
        if any(r.winner is None for r in o.rows):
            code = 1
    return code


def tune_tables(requests: Sequence[TableRequest], opts, backend: Optional[Backend] = None,
                run_jobs: Callable[[list], int] = run_quietly, skip_busy: bool = False,
                log: Callable[[str], None] = lambda s: None) -> int:
    """Tune every requested table into `opts.out_dir`; the exit code of `run_jobs` (0 when
    nothing was left to run). TableBusy (one line, exit 2) for a locked table unless
    `skip_busy`, which skips it with a log line."""
    from moeplan.tune.job import TableJob

    backend = backend or LocalBackend()
    with ExitStack() as stack:
        jobs = []
        for r in requests:
            lock = TableLock(opts.out_dir, r.spec.file_name)
            try:
                lock.acquire()
            except TableBusy as e:
                if not skip_busy:
                    raise
                log(f"skipped: {e}")
                continue
            stack.callback(lock.release)
            job = TableJob(r.spec, r.resolution, opts)
            job.pool_factory = backend.pool
            jobs.append(job)
        for j in jobs:  # refuse before measuring anything
            j.check_existing()
        for j in jobs:
            j.plan()
        try:
            return run_jobs(jobs) if jobs else 0
        finally:
            backend.close()


def time_configs(request: TableRequest, configs_by_M: dict, *, gpu, interpret: bool, device_name: str,
                 triton_version: str, timer: Optional[str] = None, seed: int = 0,
                 backend: Optional[Backend] = None) -> dict:
    """Time the given configs at their batch sizes with the tuner's own timing (its worker, routing
    pools and `confirm` phase), all in one worker process; nothing is written.

    configs_by_M: M -> configs to time at M. Returns {(M, config): the worker's result dict}
    (`status`, `median_us`, ...)."""
    import tempfile
    from pathlib import Path

    from moeplan.tune.job import TableJob, TuneOptions
    from moeplan.tune.worker import Task

    sizes = sorted(configs_by_M)
    every = sorted({c for cs in configs_by_M.values() for c in cs})
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="moeplan-time-") as tmp:
        opts = TuneOptions(batch_sizes=sizes, configs=every, space_source="given configs", out_dir=Path(tmp),
                           gpus=[gpu], interpret=interpret, seed=seed, device_name=device_name,
                           triton_version=triton_version, timer=timer, restart_every=0)
        job = TableJob(request.spec, request.resolution, opts)
        job.plan()  # the routing pools, drawn as the tuner draws them
        pool = (backend or LocalBackend()).pool(opts.gpus, job.job_payload(), restart_every=0,
                                                 point_timeout_s=opts.point_timeout_s)
        # one task a config with every batch size it is timed at: both sides' configs in the same process
        tasks = [Task(i, c, [(M, "confirm") for M in sizes if c in configs_by_M[M]]) for i, c in enumerate(every)]
        try:
            pool.start()
            pool.run(tasks, lambda task, M, phase, res, where: results.__setitem__((M, task.config), res))
        finally:
            pool.close()
            job.ckpt.close()
    return results
