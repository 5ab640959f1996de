"""moeplan: plan and autotune fused-MoE inference.

The packages, bottom layer first (a module imports only from its own layer and the ones below;
`docs/architecture.md` has the picture, `tests/test_architecture.py` the check):

  base      errors, the input layer (safeio), data paths, the local GPU's name
  model     ModelSpec, the presets, the config.json reader, checkpoint quantization
  engines   what an engine is (EngineProfile), vLLM's rules (names, lookup, default heuristic),
            kernel knobs and their limits, the launch geometry
  tables    tuning-table files: read/write/merge, verify, diff, lookup, staleness, measurement CSVs
  layout    parallel layouts, quant configs, model + layout + quant -> what every device gets
  fleet     matrix files: many models and layouts -> the distinct tables, their status, shards
  planner   `moeplan plan` (layouts ranked, hardware facts) and `moeplan report` (pictures)
  kernels   the Triton fused-MoE layer and its float32 reference (torch, triton)
  tune      the autotuner: search space, strategies, workers, checkpoints, locks, `tune(request)`
  cli       the typer app: parses options, calls one library function, prints

Everything below `kernels` is pure Python: no torch or triton, no I/O at import.

The Python API (every name loads its module on first use, so `import moeplan` stays cheap):

    import moeplan
    res = moeplan.resolve("deepseek-v3", tp=8, ep=True, device_name="NVIDIA H200")
    res.tables()[0].file_name            # the file the engine looks up on every device
    moeplan.describe(res)["tables"]      # where each table is found, what the engine loads
    plan = moeplan.plan("qwen3-30b-a3b", gpus=2, device_name="NVIDIA H200")
    plan.layouts[0].res.layout           # the best-ranked layout
    moeplan.load_table("tuned/E=8,N=7168,device_name=NVIDIA_H200.json").entry_for(64)
    moeplan.verify_folder("tuned")       # {file name: [problems]}
    moeplan.tune_tables(moeplan.TuneRequest(model="mixtral-8x7b", tp=2))  # on a GPU node
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

__version__ = "0.1.0"

__all__ = ["TuneRequest", "describe", "load_table", "plan", "resolve", "tune_tables", "verify_folder",
           "verify_table"]


def resolve(model: str, *, tp: int = 1, dp: int = 1, ep: bool = False, placement: str = "linear",
            dtype: str = "auto", block_shape: Optional[str] = None, per_token: bool = False,
            per_channel: bool = False, device_name: Optional[str] = None,
            all2all_backend: str = "allgather_reducescatter", engine: Optional[str] = None):
    """What every device of a layout gets (`moeplan resolve`): a `Resolution` (ranks, local experts,
    N, quant config, tuning-file names). `model`: a preset alias, repo id or config.json path;
    `block_shape` as `--block-shape` takes it ("128,128"). No device name: the file names' device
    part is unknown (the local GPU is never probed here). `engine`: a profile name whose engine
    names the files (e.g. "sglang-0.5.23"); None: vLLM's names."""
    from moeplan.engines.registry import get_profile
    from moeplan.layout.resolve import resolution_from_options

    return resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                   device_name, all2all_backend, detect_device=False,
                                   profile=get_profile(engine) if engine is not None else None)


def describe(res, tuned_dirs: Sequence[str] = (), engine: Optional[str] = None, batch_size: Optional[int] = None,
             env: Optional[Mapping[str, str]] = None) -> dict:
    """`moeplan resolve --json` for a Resolution: devices, quant, and every table looked up in
    `tuned_dirs` (empty: ./tuned, then moeplan's shipped tables) under `env` (None: this process's
    environment), with the engine profile `engine` (None: the installed engine's, else the newest)."""
    from moeplan.engines.registry import choose_profile
    from moeplan.layout.describe import resolve_report

    if engine is None and res.profile is not None:  # the profile the Resolution was named under
        engine = res.profile.name
    return resolve_report(res, tuned_dirs, choose_profile(engine), None, batch_size, env)


def plan(model: str, gpus: int, *, device_name: Optional[str] = None, dtype: str = "auto",
         batch_sizes: Sequence[int] = (1, 16, 64, 256, 1024), tuned_dirs: Sequence[str] = (),
         engine: Optional[str] = None, gpu_mem: Optional[str] = None):
    """Every valid TP/DP/EP layout of `model` on `gpus` GPUs, ranked (`moeplan plan`): a `Plan`
    whose `layouts` come best first."""
    from moeplan.planner.data import plan_model
    from moeplan.planner.plan import PlanRequest

    req = PlanRequest(gpus=gpus, dtype=dtype, batch_sizes=tuple(sorted(set(batch_sizes))))
    return plan_model(model, req, device_name, gpu_mem, engine, tuned_dirs)[0]


def tune_tables(request, **kw) -> int:
    """`moeplan tune` for a `TuneRequest` (on a GPU node, or with `interpret=True` in Triton's CPU
    interpreter for tests); the exit code. Keyword arguments go to `moeplan.tune.run.tune`
    (`run_jobs`, `say`, `warn`)."""
    from moeplan.tune.run import tune

    return tune(request, **kw)


def load_table(path):
    """A tuning table file as a `TuningTable` (`entries`, `entry_for(M)`); TableError if malformed."""
    from moeplan.tables.table import load_table as load

    return load(path)


def verify_table(path, strict: bool = False) -> list[str]:
    """Every problem of one table file (empty: fine), as `moeplan verify` reports them."""
    import os

    from moeplan.tables.table import read_table_text
    from moeplan.tables.verify import verify_table_text

    return verify_table_text(os.path.basename(os.fspath(path)), read_table_text(path), strict)


def verify_folder(folder, strict: bool = False) -> dict:
    """Problems of every table in a folder, by file name (`moeplan verify DIR`)."""
    from moeplan.tables.verify import verify_folder as verify

    return verify(folder, strict)


def __getattr__(name):
    if name == "TuneRequest":
        from moeplan.tune.run import TuneRequest

        return TuneRequest
    raise AttributeError(f"module 'moeplan' has no attribute {name!r}")
