"""`moeplan tune`: its options, the call to `moeplan.tune.run.tune`, and the progress display.

Importing this module is cheap (no torch/triton): the tuner loads them on use.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from moeplan.base.paths import DEFAULT_OUT
from moeplan.base.safeio import printable
from moeplan.cli.options import (All2AllOpt, BlockOpt, DpOpt, DtypeOpt, EngineOpt, EpOpt, PerChannelOpt, PerTokenOpt,
                                 PlacementOpt, TpOpt)

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
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Output folder for tables, CSVs and the checkpoint (default: ./tuned, the first folder `resolve` looks in). SGLang engines: the root SGLang reads, tables under OUT/configs/triton_<X_Y_Z>/ (the Triton that measured them) as a pair: the up table and its _down table."),
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

    from moeplan.tune.run import TuneRequest
    from moeplan.tune.run import tune as run_tune

    req = TuneRequest(model=model, matrix=matrix, shard=shard, tp=tp, dp=dp, ep=ep, placement=placement,
                      all2all_backend=all2all_backend, dtype=dtype, block_shape=block_shape, per_token=per_token,
                      per_channel=per_channel, device_name=device_name, engine=engine, batch_sizes=batch_sizes,
                      search_space=search_space, strategy=strategy, out=out, gpus=gpus, routing=routing,
                      interpret=interpret, fresh=fresh, force=force, seed=seed, point_timeout=point_timeout,
                      restart_every=restart_every, compile_threads=compile_threads, ray=ray)
    code = run_tune(req, run_jobs=lambda jobs: _run_jobs(jobs, quiet), say=lambda line: typer.echo(printable(line)),
                    warn=lambda line: typer.echo(line, err=True))
    raise typer.Exit(code)


def _run_jobs(jobs, quiet: bool) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from moeplan.tune.summary import rich_summary

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

    from moeplan.cli.render import user_text

    def log(msg: str):  # one line each, never wrapped (a warning is one line per table)
        progress.console.print(f"[yellow]{user_text(msg)}[/yellow]", soft_wrap=True)

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
        err.print(f"interrupted: progress is checkpointed under {user_text(jobs[0].opts.out_dir)}/.moeplan-tune; "
                  "run the same command to resume")
        return 130
    for o in outcomes:
        out.print(rich_summary(o))
        out.print(f"{o.action}: {user_text(o.path)} ({user_text(o.message)}); measurements: {user_text(o.csv_path)}")
        if any(r.winner is None for r in o.rows):
            code = 1
    sglang_out = [o for o in outcomes if o.engine.startswith("sglang")]
    if sglang_out:  # the folder SGLang reads is the root above configs/triton_<X_Y_Z>/
        from moeplan.engines.sglang import engine_config_dir
        from moeplan.tables.sglang_lookup import serving_hint
        root = sglang_out[0].path.parent.parent.parent
        for line in serving_hint(str(root), sglang_out[0].engine, engine_config_dir(sglang_out[0].engine)):
            out.print(user_text(line), soft_wrap=True, highlight=False)
    return code

