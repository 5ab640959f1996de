"""The one tuning entry point: tune these table specs with this backend.

`tune_tables` is what `moeplan tune MODEL`, `moeplan tune --matrix` and `--ray` all call:
it takes each table's lock (a table another live process is tuning is refused, or skipped
with `skip_busy`), applies the existing-table rules, plans every job (routing pools,
pruning), then hands the jobs to `run_jobs` (the CLI's progress display, or
`run_quietly`) with the backend's pools plugged in. Locks are released at the end; a failed
run first removes what it created for the tables it holds (`moeplan.base.ledger`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from moeplan.layout.resolve import Resolution, TableSpec
from moeplan.tune.backends import Backend, LocalBackend
from moeplan.base.ledger import Ledger
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
                log: Callable[[str], None] = lambda s: None, ledger: Optional[Ledger] = None) -> int:
    """Tune every requested table into `opts.out_dir`; the exit code of `run_jobs` (0 when
    nothing was left to run). TableBusy (one line, exit 2) for a locked table unless
    `skip_busy`, which skips it with a log line.

    On a failure (not Ctrl-C, whose checkpoints are kept to resume) every table whose lock this
    run holds loses what this run created for it (its checkpoint folder, its lock file), while
    the lock is still held; tables already written are kept. A table locked by another process
    is never touched. `ledger` records the folders made for `--out` (made again here if they
    vanished)."""
    from moeplan.tune.job import TableJob

    backend = backend or LocalBackend()
    ledger = ledger if ledger is not None else Ledger()
    held: list = []  # (lock, job) of the tables this run holds
    try:
        for r in requests:
            lock = TableLock(opts.out_dir, r.spec.file_name)
            try:
                lock.acquire(make_folder=lambda: ledger.make_dirs(opts.out_dir))
            except TableBusy as e:
                if not skip_busy:
                    raise
                log(f"skipped: {e}")
                continue
            job = TableJob(r.spec, r.resolution, opts)
            job.pool_factory = backend.pool
            held.append((lock, job))
        jobs = [j for _, j in held]
        for j in jobs:  # refuse before measuring anything
            j.check_existing()
        for j in jobs:
            j.plan()
        try:
            return run_jobs(jobs) if jobs else 0
        finally:
            backend.close()
    except KeyboardInterrupt:
        raise  # the checkpoints are the point of an interrupted run: kept for the resume
    except BaseException:
        for lock, job in held:
            done = bool(job.ckpt.meta().get("done"))  # its table is written: the run's output, kept
            if not done:
                job.ckpt.discard_made()
            lock.release(remove=not done)
        raise
    finally:
        for lock, _ in held:
            lock.release()  # a no-op for those released above


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


def measure_diff(d, model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel, gpu: int,
                 interpret: bool) -> dict:
    """`diff --measure`: time, where two tables differ, the config each side's engine would run there,
    both in one worker process on one GPU (or the interpreter) with the tuner's timing. The model and
    layout give what the file names lack (K, top-k, the experts). TuneError/TableError on bad input."""
    import importlib.util

    from moeplan.layout.resolve import resolution_from_options
    from moeplan.tables.diff import engine_choices
    from moeplan.base.errors import TableError, TuneError
    from moeplan.engines.vllm import parse_tuning_file_name

    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneError(f"diff --measure needs {' and '.join(missing)} (not installed); install the kernel extra: "
                        "pip install -e '.[kernels]'")
    import triton

    if interpret:
        device = "Triton's CPU interpreter"
        gpu_index = None
    else:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpu < 0 or gpu >= count:
            raise TuneError(f"--gpu {gpu}: no such CUDA GPU (visible: {count}); --measure times on a GPU "
                            "(or --interpret, for tests)")
        device, gpu_index = torch.cuda.get_device_name(gpu), gpu
    out: dict = {"device": device, "tables": {}}
    for t in d.tables:
        name = t.file_name.split(" | ")[0]
        try:
            info = parse_tuning_file_name(name)
        except TableError as e:
            raise TableError(f"--measure needs engine file names to find the shape: {e}") from None
        res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                      info["device"], detect_device=False)
        spec = next((s for s in res.tables() if s.file_name == name), None)
        if spec is None:
            raise TableError(f"{name} is not a table of {model} with this layout (it needs "
                             f"{', '.join(s.file_name for s in res.tables())}); pass the --tp/--dp/--ep/--dtype that "
                             "load it")
        pairs = engine_choices(t)
        rows = []
        if pairs:
            got = time_configs(TableRequest(spec, res), {M: [ca, cb] for M, (ca, cb) in pairs.items()},
                               gpu=gpu_index, interpret=interpret, device_name=info["device"],
                               triton_version=triton.__version__, timer=os.environ.get("MOEPLAN_TUNE_TIMER") or None)
            for M, (ca, cb) in sorted(pairs.items()):
                ra, rb = got.get((M, ca), {}), got.get((M, cb), {})
                ok = ra.get("status") == "ok" and rb.get("status") == "ok"
                rows.append({"M": M, "a": ca.to_dict(), "b": cb.to_dict(),
                             "a_us": ra.get("median_us"), "b_us": rb.get("median_us"),
                             "a_status": ra.get("status", "missing"), "b_status": rb.get("status", "missing"),
                             "speedup": ra["median_us"] / rb["median_us"] if ok and rb["median_us"] else None})
        out["tables"][t.file_name] = rows
    return out
