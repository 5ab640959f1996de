"""`tune(TuneRequest)`: the whole of `moeplan tune` as a library call, from option values to
tables on disk, for the CLI and for Python callers alike.

The order is the contract: (1) every option on its own, (2) the model, layout and quantization
and the routing file against them, (3) the GPUs and the device name the tables get, then (4)
side effects: folders, locks, measurements, tables. Nothing is created before (4), and a failure
in (4) removes what this run created, recorded as it creates it (`moeplan.base.ledger`), never
another run's work (an interrupted run keeps its checkpoint to resume).

Importing this module is cheap (no torch/triton): they load when `tune` runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from moeplan.base.errors import TuneError
from moeplan.base.paths import DEFAULT_OUT
from moeplan.base.safeio import MAX_BATCH_SIZES, MAX_TUNE_BATCH, check_device_name, check_path, shown
from moeplan.engines.vllm import ENGINE_BATCH_SIZES

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
    from moeplan.base import safeio
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
    from moeplan.engines.limits import entry_problems
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
    down = [(job.down_path, "file")] if job.down_path is not None else []
    for p, kind in ((job.path, "file"), *down, (job.csv_path, "file"), (job.ckpt.folder.parent, "folder"),
                    (job.ckpt.folder, "folder")):
        if p.exists() and (p.is_dir() if kind == "file" else not p.is_dir()):
            raise TuneError(f"{shown(str(p))} is a {'folder' if kind == 'file' else 'file'}; this run writes a "
                            f"{kind} there: move it away or pass another --out")


@dataclass(frozen=True)
class TuneRequest:
    """One `moeplan tune` run: option values as a user gives them (strings where the CLI takes
    text, so Python callers get the same checks and messages). `model` or `matrix`, not both."""

    model: Optional[str] = None  # preset alias, repo id, or a config.json path (or a folder holding one)
    matrix: Optional[str] = None  # a matrix file: tune its missing tables instead of one model's
    shard: Optional[str] = None  # with matrix: "I/N"
    tp: int = 1
    dp: int = 1
    ep: bool = False
    placement: str = "linear"
    all2all_backend: str = "allgather_reducescatter"
    dtype: str = "auto"
    block_shape: Optional[str] = None  # "BN,BK"
    per_token: bool = False
    per_channel: bool = False
    device_name: Optional[str] = None  # default: the GPU's own name
    engine: Optional[str] = None  # an engine profile name; default: the installed engine's, else the newest
    batch_sizes: Union[None, str, Sequence[int]] = None  # "1,2,4" or a sequence; default the engine's 18
    search_space: Optional[str] = None  # a JSON file of configs; default the profile's pruned space
    strategy: str = "fast"
    out: str = DEFAULT_OUT
    gpus: str = "all"  # "all" or "0,1"
    routing: str = "uniform"  # uniform | zipf:S | FILE of captured topk ids
    interpret: bool = False  # Triton's CPU interpreter (tests only)
    fresh: bool = False
    force: bool = False
    seed: int = 0
    point_timeout: float = 120.0
    restart_every: int = 400
    compile_threads: Optional[int] = None
    ray: Optional[str] = None  # a Ray cluster's address, or "local"


def _quiet(jobs) -> int:
    from moeplan.tune.api import run_quietly

    return run_quietly(jobs)


def tune(req: TuneRequest, run_jobs: Callable[[list], int] = _quiet, say: Callable[[str], None] = print,
         warn: Callable[[str], None] = lambda line: None) -> int:
    """Tune every distinct table `req` asks for (a model's layout, or a matrix file's missing
    tables) into `req.out`; returns the exit code (0 done or nothing to do, 1 when some batch size
    found no passing config, 130 interrupted). `run_jobs` runs the planned jobs (the CLI's progress
    display; default: quietly); `say` gets the lines for stdout, `warn` those for stderr.
    MoeplanError (one line) on bad input, before anything is created."""
    import importlib.util

    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneError(f"moeplan tune needs {' and '.join(missing)} (not installed); "
                        "install the kernel extra: pip install -e '.[kernels]'")
    from moeplan.base import safeio
    from moeplan.engines.registry import choose_profile
    from moeplan.layout.resolve import resolution_from_options
    from moeplan.tune.routing import load_captured_ids, parse_routing
    from moeplan.tune.search import STRATEGIES
    from moeplan.tune.space import engine_space

    model, matrix, device_name = req.model, req.matrix, req.device_name
    batch_text = req.batch_sizes if req.batch_sizes is None or isinstance(req.batch_sizes, str) \
        else ",".join(str(v) for v in req.batch_sizes)

    # 1. Every option on its own, before the file system, the GPU or the kernel is touched.
    if req.interpret and device_name is not None:
        raise TuneError(f"--device-name {shown(device_name)} cannot be used with --interpret: interpreter timings "
                        f"say nothing about a GPU, so its tables are always named "
                        f"device_name={INTERPRETER_DEVICE}; drop --device-name")
    if device_name is not None:
        check_device_name(device_name)
    sizes = parse_batch_sizes(batch_text)
    if req.strategy not in STRATEGIES:
        raise TuneError(f"--strategy {shown(req.strategy)} is unknown; valid: {', '.join(STRATEGIES)}")
    if (model is None) == (matrix is None):
        raise TuneError("pass a MODEL or --matrix FILE (one of them)")
    if req.shard is not None and matrix is None:
        raise TuneError(f"--shard {shown(req.shard)} needs --matrix FILE")
    safeio.check_text("--routing", req.routing, "uniform, zipf:S or a file of captured topk ids", error=TuneError)
    route = parse_routing(req.routing)
    safeio.check_int("--seed", req.seed, 0, MAX_SEED, TuneError)
    safeio.check_float("--point-timeout", req.point_timeout, 0, MAX_POINT_TIMEOUT_S, TuneError)
    safeio.check_int("--restart-every", req.restart_every, 0, MAX_RESTART_EVERY, TuneError)
    if req.compile_threads is not None:
        safeio.check_int("--compile-threads", req.compile_threads, 0, MAX_COMPILE_THREADS, TuneError)
    parse_gpu_indices(req.gpus)
    check_path("--out", req.out, "a folder for the tables")
    out_path = Path(req.out)
    _writable_folder("--out", out_path)
    engine = req.engine
    fleet = None
    if matrix is not None:  # the tables come from the matrix file; nothing to do is a clean exit
        from moeplan.fleet.status import MatrixRun
        fleet = MatrixRun.plan(matrix, req.shard, req.out, req.force, engine, say)
        if fleet is None:
            return 0
        sizes = sizes if batch_text is not None or not fleet.batch_sizes else list(fleet.batch_sizes)
        engine = engine if engine is not None else fleet.engine  # the matrix's profile unless --engine says
    choice = choose_profile(engine)
    if choice.warning:
        warn("moeplan: warning: " + " ".join(choice.warning.split()))
    profile = choice.profile
    configs = load_space(req.search_space) if req.search_space is not None else engine_space(profile)
    space_source = req.search_space if req.search_space is not None else \
        f"engine profile {profile.name} ({len(configs)} configs)"
    from moeplan.tune.backends import check_backend, make_backend
    check_backend(req.ray)  # connecting (and starting `--ray local`) waits until everything is checked

    # 2. The model, layout and quantization, and the routing file's contents against them.
    from moeplan.kernels.quantize import TUNABLE_SCHEMES
    layout_args = (req.tp, req.dp, req.ep, req.placement, req.dtype, req.block_shape, req.per_token,
                   req.per_channel)
    if fleet is not None:
        if not fleet.skip_untunable(TUNABLE_SCHEMES, say):
            return 0
    else:
        res = resolution_from_options(model, *layout_args, device_name or INTERPRETER_DEVICE, req.all2all_backend, profile=profile,
                                      detect_device=False)
        if res.scheme not in TUNABLE_SCHEMES:
            raise TuneError(f"--dtype {res.scheme} ({res.model.alias or res.model.name}) cannot be tuned with moeplan's "
                            f"kernel yet; tunable schemes: {', '.join(TUNABLE_SCHEMES)}")
        if route.kind == "file":  # ids index the global experts, EP or not
            load_captured_ids(route.path, res.model.top_k, res.model.num_experts)

    import triton

    # 3. The GPUs (an --interpret run has none) and the device name the tables get.
    gpu_list, dev, threads = _gpus_and_device(req, fleet)
    if fleet is None:
        res = resolution_from_options(model, *layout_args, dev, req.all2all_backend, detect_device=False, profile=profile)

    from moeplan.tune.job import TuneOptions
    table_dir = out_path
    if profile.engine == "sglang":  # SGLang reads <root>/configs/triton_<X_Y_Z>/: the Triton that was measured
        from moeplan.engines.sglang import version_folder
        table_dir = out_path / "configs" / version_folder(triton.__version__)
    opts = TuneOptions(batch_sizes=sizes, configs=configs, space_source=space_source, strategy=req.strategy,
                       out_dir=table_dir, gpus=gpu_list, routing=route, interpret=req.interpret, fresh=req.fresh,
                       force=req.force, seed=req.seed, device_name=dev, point_timeout_s=req.point_timeout,
                       restart_every=req.restart_every, compile_threads=threads, triton_version=triton.__version__,
                       timer=os.environ.get("MOEPLAN_TUNE_TIMER") or None, engine=profile.name,
                       builtin_space=req.search_space is None)
    from moeplan.tune.api import TableRequest, tune_tables
    from moeplan.tune.job import TableJob
    backend = make_backend(req.ray)  # a cluster without GPUs is refused here, before any output
    try:
        targets = [TableRequest(spec, res) for spec in res.tables()] if fleet is None \
            else [TableRequest(spec, res) for spec, res in fleet.requests(dev, req.interpret, say)]
        jobs = [TableJob(t.spec, t.resolution, opts) for t in targets]  # nothing is created by a TableJob
        for j in jobs:  # refuse before creating or measuring anything
            _check_job_paths(j)
            if fleet is None:
                j.check_existing()
    except BaseException:
        backend.close()
        raise
    if not targets:
        backend.close()
        return 0

    # 4. Side effects. A failure from here on removes what this run created, and only that: the
    # folders its own mkdir made (`Ledger`), and per table whose lock it holds, its checkpoint
    # folder and lock file (`tune_tables`). A run that loses a table's lock touches nothing of it.
    from moeplan.base.ledger import Ledger
    ledger = Ledger()
    try:
        ledger.make_out(req.out, "--out", TuneError)

        def run_locked(jobs) -> int:  # once the tables are locked and planned: what is measured, and why
            say(f"engine profile: {profile.name} ({choice.reason})")
            return run_jobs(jobs)

        return tune_tables(targets, opts, backend, run_locked, skip_busy=matrix is not None, log=say, ledger=ledger)
    except KeyboardInterrupt:
        raise  # the checkpoint is the point of an interrupted run: kept for the resume
    except BaseException:
        backend.close()
        ledger.undo()  # the folders this run made, each only if empty
        raise


def _gpus_and_device(req: TuneRequest, fleet) -> tuple[list, str, int]:
    """(GPUs to measure on, the device name the tables get, compile threads per GPU)."""
    if req.interpret:
        return [None], INTERPRETER_DEVICE, 0
    if req.ray is not None:  # the GPUs are the cluster's; the driver needs none
        dev = req.device_name or (fleet.only_device() if fleet else None)
        if not dev:
            raise TuneError("--ray needs --device-name: the name of the cluster's GPUs, for the file names")
        return ["ray"], dev, 0
    import torch

    from moeplan.engines.vllm import normalize_device_name
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 1:
        raise TuneError("no CUDA GPU is visible; tuning needs one (pass --interpret to run in Triton's CPU "
                        "interpreter, for tests only)")
    gpu_list = parse_gpus(req.gpus, count)
    names = {i: torch.cuda.get_device_name(i) for i in gpu_list}
    if len(set(names.values())) > 1:
        raise TuneError(f"--gpus {shown(req.gpus)} mixes GPU models ({', '.join(sorted(set(names.values())))}); "
                        "one table is for one model: pick GPUs of one kind")
    actual = names[gpu_list[0]]
    if req.device_name and normalize_device_name(req.device_name) != normalize_device_name(actual):
        raise TuneError(f"--device-name {shown(req.device_name)} does not match the GPU being tuned ({actual!r}); "
                        "omit it or pass the GPU's name")
    threads = req.compile_threads if req.compile_threads is not None else max(1, usable_cpus() // len(gpu_list) - 1)
    return gpu_list, actual, threads
