"""`moeplan tune`: `register(app)` adds it to a typer app.

Importing this module is cheap (no torch/triton): the tuner loads them on use.
Every MoeplanError becomes one stderr line and exit code 2 here already, so the
command behaves the same on any typer app.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from moeplan.cli_common import (All2AllOpt, BlockOpt, DpOpt, DtypeOpt, EngineOpt, EpOpt, PerChannelOpt, PerTokenOpt,
                                 PlacementOpt, TpOpt, engine_choice, one_line_errors)
from moeplan.engine import ENGINE_BATCH_SIZES
from moeplan.errors import TuneError
from moeplan.paths import DEFAULT_OUT
from moeplan.safeio import check_device_name, check_path, shown

MAX_BATCH_SIZES = 64  # batch sizes per run (the engine tunes 18)
MAX_TUNE_BATCH = 65536  # routing pools are drawn per batch size: (M, E) logits per draw
MAX_SPACE = 100_000  # configs in a search space (the engine's has 1,920)
MAX_GPU_INDEX = 1023
MAX_SEED = 2**32 - 1
MAX_POINT_TIMEOUT_S = 86_400.0
MAX_RESTART_EVERY = 1_000_000
MAX_COMPILE_THREADS = 256
INTERPRETER_DEVICE = "cpu_interpreter"  # the only device name an --interpret run writes

_UINT_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() also takes '²'


def usable_cpus() -> int:
    """Cores this process may run on (taskset / cgroup cpusets), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def parse_batch_sizes(text: Optional[str]) -> list[int]:
    if text is None:
        return list(ENGINE_BATCH_SIZES)
    parts = [p.strip() for p in text.split(",")]
    out = []
    for p in parts:
        if not _UINT_RE.fullmatch(p) or not 1 <= int(p) <= MAX_TUNE_BATCH:
            raise TuneError(f"--batch-sizes {shown(text)}: {shown(p)} is not a batch size; expected comma-separated "
                            f"integers in 1..{MAX_TUNE_BATCH} like 1,2,4,8")
        out.append(int(p))
    if len(set(out)) > MAX_BATCH_SIZES:
        raise TuneError(f"--batch-sizes {shown(text)} lists {len(set(out))} sizes; the limit is {MAX_BATCH_SIZES}")
    return sorted(set(out))


def parse_gpu_indices(text: str) -> Optional[list[int]]:
    """`all` (None) or distinct indices in 0..MAX_GPU_INDEX, in the given order; no GPU needed."""
    if not isinstance(text, str) or text.strip().lower() == "all":
        return None
    out = []
    for p in (x.strip() for x in text.split(",")):
        if not _UINT_RE.fullmatch(p) or int(p) > MAX_GPU_INDEX:
            raise TuneError(f"--gpus {shown(text)}: {shown(p)} is not a GPU index; expected 'all' or indices "
                            f"in 0..{MAX_GPU_INDEX} like 0,1")
        if int(p) not in out:
            out.append(int(p))
    return out


def parse_gpus(text: str, count: int) -> list[int]:
    if count < 1:
        raise TuneError("no CUDA GPU is visible; tuning needs one (or --interpret, Triton's CPU interpreter, "
                        "for tests)")
    wanted = parse_gpu_indices(text)
    if wanted is None:
        return list(range(count))
    for i in wanted:
        if i >= count:
            raise TuneError(f"--gpus {shown(text)}: there is no GPU {i}; visible GPUs: "
                            f"{', '.join(map(str, range(count)))}")
    return wanted


def load_space(path: str) -> list:
    """A --search-space file through the input layer: capped, UTF-8, depth-limited JSON whose size
    (a list's length, an object's Cartesian product) is checked before any config is built."""
    from moeplan import safeio
    from moeplan.tune.space import parse_search_space

    check_path("--search-space", path, "a JSON file of kernel configs")
    text = safeio.read_text(path, "search space", safeio.MAX_JSON_BYTES, TuneError)
    obj = safeio.parse_json(text, f"search space {shown(path)}", TuneError)
    size = len(obj) if isinstance(obj, list) else 1
    if isinstance(obj, dict):
        for v in obj.values():
            size *= len(v) if isinstance(v, list) else 1
            if size > MAX_SPACE:
                break
    if size > MAX_SPACE:
        raise TuneError(f"search space {shown(path)} holds over {MAX_SPACE:,} configs; the limit is {MAX_SPACE:,}")
    configs = parse_search_space(text, shown(path))
    from moeplan.tables import entry_problems
    for i, cfg in enumerate(configs):  # a table `verify --strict` or `show` would refuse is never tuned
        problems = entry_problems(cfg.to_dict(), strict=True)
        if problems:
            raise TuneError(f"search space {shown(path)}: config {i} ({cfg.short()}): {problems[0]}")
    return configs


def _writable_folder(option: str, path: Path) -> None:
    """`path` is, or can be created as, a folder this process writes into (nothing is created)."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise TuneError(f"{option} {shown(str(path))} is a file; pass a folder for the tables")
        probe = path
    else:
        probe = path.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise TuneError(f"{option} {shown(str(path))}: {shown(str(probe))} is a file, so the folder cannot "
                            "be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise TuneError(f"{option} {shown(str(path))}: no permission to write in {shown(str(probe))}; "
                        "pass a folder you can write to")


def _check_job_paths(job) -> None:
    """What a job will write must not already be something else (a folder where a file goes...)."""
    if len(job.ckpt.folder.name.encode()) > 255:
        raise TuneError(f"{job.spec.file_name}: the checkpoint folder name is too long for the file system")
    for p, kind in ((job.path, "file"), (job.csv_path, "file"), (job.ckpt.folder.parent, "folder"),
                    (job.ckpt.folder, "folder")):
        if p.exists() and (p.is_dir() if kind == "file" else not p.is_dir()):
            raise TuneError(f"{shown(str(p))} is a {'folder' if kind == 'file' else 'file'}; this run writes a "
                            f"{kind} there: move it away or pass another --out")


def _missing_folders(path: Path) -> list[Path]:
    """The folders that creating `path` would create, outermost first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out[::-1]


def _clean_up(created: list[Path], jobs, existed: set) -> None:
    """Remove what a failed run created: its new checkpoint folders, then its new folders if empty."""
    import shutil

    for j in jobs:
        j.ckpt.close()
        if j.ckpt.folder not in existed and j.ckpt.folder.is_dir():
            shutil.rmtree(j.ckpt.folder, ignore_errors=True)
    from moeplan.tune.lock import lock_path
    for j in jobs:  # released locks stay as empty files: remove the ones this run made
        lock = Path(lock_path(j.opts.out_dir, j.spec.file_name))
        if lock not in existed:
            lock.unlink(missing_ok=True)
    roots = sorted({j.ckpt.folder.parent for j in jobs} - existed)
    for d in roots + list(reversed(created)):
        try:
            d.rmdir()  # only when empty: never anything a user put there
        except OSError:
            pass


@one_line_errors
def tune(
    model: Annotated[Optional[str], typer.Argument(help="Preset alias or HF repo id (see `moeplan models`), or a path to a config.json or a folder holding one. Omit with --matrix.")] = None,
    tp: TpOpt = 1,
    dp: DpOpt = 1,
    ep: EpOpt = False,
    placement: PlacementOpt = "linear",
    all2all_backend: All2AllOpt = "allgather_reducescatter",
    dtype: DtypeOpt = "auto",
    block_shape: BlockOpt = None,
    per_token: PerTokenOpt = False,
    per_channel: PerChannelOpt = False,
    device_name: Optional[str] = typer.Option(None, "--device-name", help="GPU name for the file name (default: the GPU's own; must match it)."),
    engine: EngineOpt = None,
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Comma-separated batch sizes (default: the engine's 18, 1..4096)."),
    search_space: Optional[str] = typer.Option(None, "--search-space", help="JSON list of configs, or an object of knob -> values (default: the engine profile's space, pruned). Only configs of the space are written; the default heuristic's config is timed as the baseline."),
    strategy: str = typer.Option("fast", "--strategy", help="fast | exhaustive"),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output folder for tables, CSVs and the checkpoint (default: ./tuned, the first folder `resolve` looks in)."),
    gpus: str = typer.Option("all", "--gpus", help="GPU indices, e.g. 0,1, or all (one worker process per GPU)."),
    routing: str = typer.Option("uniform", "--routing", help="uniform | zipf:S | FILE of captured topk ids (.pt/.npy/.json, tokens x topk)."),
    interpret: bool = typer.Option(False, "--interpret", help="Run in Triton's CPU interpreter (tests only: tiny shapes, meaningless times). Its tables are named device_name=cpu_interpreter; --device-name is refused."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore (delete) this job's checkpoint and start over."),
    force: bool = typer.Option(False, "--force", help="Replace an existing table instead of merging into it or refusing."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, inputs and routing draws."),
    point_timeout: float = typer.Option(120.0, "--point-timeout", help="Seconds one measurement may take before its worker is killed."),
    restart_every: int = typer.Option(400, "--restart-every", help="Restart a worker after this many configs (bounds memory)."),
    compile_threads: Optional[int] = typer.Option(None, "--compile-threads", help="CPU threads per GPU worker compiling configs ahead (default: usable cores / GPUs - 1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    matrix: Optional[str] = typer.Option(None, "--matrix", help="Tune every missing table of this matrix file (see `moeplan matrix`) instead of one MODEL; a run with nothing missing does nothing."),
    shard: Optional[str] = typer.Option(None, "--shard", help="With --matrix: only shard I/N of its tables (as `moeplan matrix --shard`)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Measure on every GPU of a Ray cluster: its address (host:port) or 'local' to start one here (needs the cluster extra)."),
):
    """Autotune the fused-MoE kernel for every distinct tuning table the layout needs (or a matrix file's missing tables)."""
    import importlib.util

    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneError(f"moeplan tune needs {' and '.join(missing)} (not installed); "
                        "install the kernel extra: pip install -e '.[kernels]'")
    from moeplan import safeio
    from moeplan.tune.space import engine_space
    from moeplan.tune.search import STRATEGIES
    from moeplan.tune.routing import load_captured_ids, parse_routing

    # 1. Every option on its own, before the file system, the GPU or the kernel is touched.
    if interpret and device_name is not None:
        raise TuneError(f"--device-name {shown(device_name)} cannot be used with --interpret: interpreter timings "
                        f"say nothing about a GPU, so its tables are always named "
                        f"device_name={INTERPRETER_DEVICE}; drop --device-name")
    if device_name is not None:
        check_device_name(device_name)
    sizes = parse_batch_sizes(batch_sizes)
    if strategy not in STRATEGIES:
        raise TuneError(f"--strategy {shown(strategy)} is unknown; valid: {', '.join(STRATEGIES)}")
    if (model is None) == (matrix is None):
        raise TuneError("pass a MODEL or --matrix FILE (one of them)")
    if shard is not None and matrix is None:
        raise TuneError(f"--shard {shown(shard)} needs --matrix FILE")
    safeio.check_text("--routing", routing, "uniform, zipf:S or a file of captured topk ids", error=TuneError)
    route = parse_routing(routing)
    safeio.check_int("--seed", seed, 0, MAX_SEED, TuneError)
    safeio.check_float("--point-timeout", point_timeout, 0, MAX_POINT_TIMEOUT_S, TuneError)
    safeio.check_int("--restart-every", restart_every, 0, MAX_RESTART_EVERY, TuneError)
    if compile_threads is not None:
        safeio.check_int("--compile-threads", compile_threads, 0, MAX_COMPILE_THREADS, TuneError)
    parse_gpu_indices(gpus)
    check_path("--out", out, "a folder for the tables")
    out_path = Path(out)
    _writable_folder("--out", out_path)
    fleet = None
    if matrix is not None:  # the tables come from the matrix file (moeplan.cli_fleet); exits when none is to do
        from moeplan.cli_fleet import MatrixRun
        fleet = MatrixRun.plan(matrix, shard, out, force, engine)
        sizes = sizes if batch_sizes is not None or not fleet.batch_sizes else list(fleet.batch_sizes)
        engine = engine if engine is not None else fleet.engine  # the matrix's profile unless --engine says
    choice = engine_choice(engine)
    profile = choice.profile
    configs = load_space(search_space) if search_space is not None else engine_space(profile)
    space_source = search_space if search_space is not None else f"engine profile {profile.name} ({len(configs)} configs)"
    from moeplan.tune.backends import make_backend
    backend = make_backend(ray)

    # 2. The model, layout and quantization, and the routing file's contents against them.
    from moeplan.cli_common import resolution_from_options
    from moeplan.kernels.quantize import TUNABLE_SCHEMES
    if fleet is not None:
        fleet.skip_untunable(TUNABLE_SCHEMES)
    else:
        res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                      device_name or INTERPRETER_DEVICE, all2all_backend, detect_device=False)
        if res.scheme not in TUNABLE_SCHEMES:
            raise TuneError(f"--dtype {res.scheme} ({res.model.alias or res.model.name}) cannot be tuned with moeplan's "
                            f"kernel yet; tunable schemes: {', '.join(TUNABLE_SCHEMES)}")
        if route.kind == "file":  # ids index the global experts, EP or not
            load_captured_ids(route.path, res.model.top_k, res.model.num_experts)

    import triton

    # 3. The GPUs (an --interpret run has none) and the device name the tables get.
    if interpret:
        gpu_list: list = [None]
        dev = INTERPRETER_DEVICE
        threads = 0
    elif ray is not None:  # the GPUs are the cluster's; the driver needs none
        dev = device_name or (fleet.only_device() if fleet else None)
        if not dev:
            raise TuneError("--ray needs --device-name: the name of the cluster's GPUs, for the file names")
        gpu_list, threads = ["ray"], 0
    else:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < 1:
            raise TuneError("no CUDA GPU is visible; tuning needs one (pass --interpret to run in Triton's CPU "
                            "interpreter, for tests only)")
        gpu_list = parse_gpus(gpus, count)
        names = {i: torch.cuda.get_device_name(i) for i in gpu_list}
        if len(set(names.values())) > 1:
            raise TuneError(f"--gpus {shown(gpus)} mixes GPU models ({', '.join(sorted(set(names.values())))}); "
                            "one table is for one model: pick GPUs of one kind")
        actual = names[gpu_list[0]]
        from moeplan.naming import normalize_device_name
        if device_name and normalize_device_name(device_name) != normalize_device_name(actual):
            raise TuneError(f"--device-name {shown(device_name)} does not match the GPU being tuned ({actual!r}); "
                            "omit it or pass the GPU's name")
        dev = actual
        threads = compile_threads if compile_threads is not None else max(1, usable_cpus() // len(gpu_list) - 1)

    if fleet is None:
        res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                      dev, all2all_backend, detect_device=False)

    from moeplan.tune.job import TuneOptions
    opts = TuneOptions(batch_sizes=sizes, configs=configs, space_source=space_source, strategy=strategy,
                       out_dir=out_path, gpus=gpu_list, routing=route, interpret=interpret, fresh=fresh, force=force,
                       seed=seed, device_name=dev, point_timeout_s=point_timeout, restart_every=restart_every,
                       compile_threads=threads, triton_version=triton.__version__,
                       timer=os.environ.get("MOEPLAN_TUNE_TIMER") or None, engine=profile.name)
    from moeplan.tune.api import TableRequest, tune_tables
    from moeplan.tune.job import TableJob
    targets = [TableRequest(spec, res) for spec in res.tables()] if fleet is None else fleet.requests(dev, interpret)
    if not targets:
        raise typer.Exit(0)
    jobs = [TableJob(t.spec, t.resolution, opts) for t in targets]  # nothing is created by a TableJob
    for j in jobs:  # refuse before creating or measuring anything
        _check_job_paths(j)
        if fleet is None:
            j.check_existing()

    # 4. Side effects. A failure from here on removes the folders this run created.
    created = _missing_folders(out_path)
    from moeplan.tune.lock import lock_path
    existed = {p for j in jobs for p in (j.ckpt.folder, j.ckpt.folder.parent,
                                          Path(lock_path(out_path, j.spec.file_name))) if p.exists()}
    try:
        try:
            out_path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TuneError(f"--out {shown(out)}: cannot create the folder ({e.strerror or e})") from None
        def run_jobs(jobs) -> int:  # once the tables are locked and planned: what is measured, and why
            typer.echo(f"engine profile: {profile.name} ({choice.reason})")
            return _run_jobs(jobs, quiet)

        code = tune_tables(targets, opts, backend, run_jobs, skip_busy=matrix is not None, log=typer.echo)
    except KeyboardInterrupt:
        raise  # the checkpoint is the point of an interrupted run: kept for the resume
    except BaseException:
        _clean_up(created, jobs, existed)
        raise
    raise typer.Exit(code)


def _run_jobs(jobs, quiet: bool) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from moeplan.tune.report import rich_summary

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    err = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=err, disable=quiet, transient=False)
    estimates = [j.estimate_points() for j in jobs]
    overall = progress.add_task(f"tuning {len(jobs)} table(s)", total=sum(estimates))
    gpu_tasks: dict[int, int] = {}
    state = {"completed": 0, "round_end": 0}
    outcomes = []
    code = 0

    def advance(n: int):
        state["completed"] += n
        progress.advance(overall, n)

    def log(msg: str):
        progress.console.print(f"[yellow]{msg}[/yellow]")

    try:
        with progress:
            for idx, job in enumerate(jobs):
                est_rest = sum(estimates[idx + 1:])
                for i, g in enumerate(job.opts.gpus):
                    if i not in gpu_tasks:
                        label = "interpreter" if g is None else f"GPU {g}"
                        gpu_tasks[i] = progress.add_task(f"  {label}: starting", total=None)

                def on_status(i: int, text: str, _job=job):
                    g = _job.opts.gpus[i]
                    label = "interpreter" if g is None else f"GPU {g}"
                    progress.update(gpu_tasks[i], description=f"  {label}: {text}")

                def set_total(n_round: int, _est_rest=est_rest):
                    total = progress.tasks[overall].total or 0
                    need = state["completed"] + n_round + _est_rest
                    if need > total:
                        progress.update(overall, total=need)

                progress.update(overall, description=f"table {idx + 1}/{len(jobs)} {job.spec.file_name}")
                if job.resumed_points:
                    log(f"resuming {job.spec.file_name}: {job.resumed_points} points from the checkpoint")
                o = job.run(advance, set_total, on_status, log)
                outcomes.append(o)
                # the estimate of this table is spent: the total becomes what is known
                progress.update(overall, total=state["completed"] + est_rest)
    except KeyboardInterrupt:
        err.print(f"interrupted: progress is checkpointed under {jobs[0].opts.out_dir}/.moeplan-tune; "
                  "run the same command to resume")
        return 130
    for o in outcomes:
        out.print(rich_summary(o))
        out.print(f"{o.action}: {o.path} ({o.message}); measurements: {o.csv_path}")
        if any(r.winner is None for r in o.rows):
            code = 1
    return code


def register(app: typer.Typer) -> None:
    """Add `tune` to a typer app."""
    app.command("tune")(tune)
