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
