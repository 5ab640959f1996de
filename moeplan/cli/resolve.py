"""`moeplan resolve` and `moeplan models`. Nothing here imports torch or triton."""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer

from moeplan.cli.options import (All2AllOpt, BlockOpt, DpOpt, DtypeOpt, EngineOpt, EpOpt, ModelArg, PerChannelOpt,
                                 PerTokenOpt, PlacementOpt, TpOpt, engine_choice)


def resolve(
    model: ModelArg,
    tp: TpOpt = 1,
    dp: DpOpt = 1,
    ep: EpOpt = False,
    placement: PlacementOpt = "linear",
    all2all_backend: All2AllOpt = "allgather_reducescatter",
    dtype: DtypeOpt = "auto",
    block_shape: BlockOpt = None,
    per_token: PerTokenOpt = False,
    per_channel: PerChannelOpt = False,
    device_name: Optional[str] = typer.Option(None, "--device-name", help="GPU name, e.g. 'NVIDIA H100 80GB HBM3' (default: the local GPU's, read with nvidia-smi; unknown without a GPU)."),
    tuned_dir: List[str] = typer.Option([], "--tuned-dir", help="Folder of tuning tables to look in (repeatable; $VLLM_TUNED_CONFIG_FOLDER is tried first, as the engine does). Default: ./tuned (where tune writes), then moeplan's shipped tables."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Show the table entry (or default config) a batch of M tokens would use."),
    engine: EngineOpt = None,
    triton_version: Optional[str] = typer.Option(None, "--triton-version", help="SGLang engines: the serving Triton version, which names the folder SGLang reads first (configs/triton_X_Y_Z). Default: the installed triton's (package metadata) when SGLang is installed here, else the one the SGLang release pins."),
    engine_configs: Optional[str] = typer.Option(None, "--engine-configs", help="The engine's folder of shipped tuning tables (vLLM: .../fused_moe/configs; SGLang: the folder holding configs/triton_*). Default: found from the installed engine's package files, never by importing it."),
    wide: bool = typer.Option(False, "--wide", help="Every column in full boxes, whatever the terminal's width."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
):
    """What every device of a TP/DP/EP layout gets: ranks, experts, N, quant config and tuning file."""
    from moeplan.base.safeio import MAX_BATCH, check_int, check_path
    from moeplan.cli.render import print_resolution
    from moeplan.layout.describe import resolve_report
    from moeplan.layout.resolve import resolution_from_options

    if batch_size is not None:
        check_int("--batch-size", batch_size, 1, MAX_BATCH)
    for d in tuned_dir:
        check_path("--tuned-dir", d, "a folder of tuning tables")
    choice = engine_choice(engine)
    res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                  device_name, all2all_backend, profile=choice.profile)
    data = resolve_report(res, tuned_dir, choice, engine_configs, batch_size, dict(os.environ), triton_version)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        print_resolution(data, wide)


def models(as_json: bool = typer.Option(False, "--json", help="Print the presets as a JSON list."),
           wide: bool = typer.Option(False, "--wide", help="Every column in full boxes, whatever the terminal's width.")):
    """List the model presets (usable as MODEL by resolve and tune)."""
    from moeplan.model.spec import list_presets

    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in list_presets()], indent=2))
        return
    from moeplan.cli.render import print_models
    from moeplan.model.load import preset_rows

    print_models(preset_rows(), wide)

