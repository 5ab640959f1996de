"""Option handling shared by the commands that take a model + layout + quantization."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

# Options shared by the commands that take a model, a layout and a quantization (resolve, tune).
ModelArg = Annotated[str, typer.Argument(
    help="Preset alias or HF repo id (see `moeplan models`), or a path to a config.json or a folder holding one.")]
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel size.")]
DpOpt = Annotated[int, typer.Option("--dp", help="Data-parallel size.")]
EpOpt = Annotated[bool, typer.Option("--ep/--no-ep", help="Expert parallelism over the tp*dp devices.")]
PlacementOpt = Annotated[str, typer.Option("--placement", help="Expert placement under EP: linear | round_robin.")]
All2AllOpt = Annotated[str, typer.Option(
    "--all2all-backend", help="All-to-all backend used when dp > 1 with EP (naive, allgather_reducescatter, pplx, "
                              "deepep_high_throughput, deepep_low_latency, flashinfer_all2allv).")]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="auto (the checkpoint's quantization, else bf16) | bf16 | fp16 | fp32 | fp8_w8a8 | fp8_w8a16 | "
                    "int8_w8a8 | int8_w8a16 | int4_w4a16 | mxfp4 | nvfp4")]
BlockOpt = Annotated[Optional[str], typer.Option(
    "--block-shape", help="Quantization block as BN,BK (e.g. 128,128); weight-only int4/int8 take 0,G for group size "
                          "G. A zero entry keeps the block selector out of the file name. With --dtype equal to the "
                          "checkpoint's scheme, the checkpoint's block shape is the default.")]
PerTokenOpt = Annotated[bool, typer.Option("--per-token", help="Per-token activation scales (fp8_w8a8, int8_w8a8).")]
PerChannelOpt = Annotated[bool, typer.Option("--per-channel", help="Per-output-channel weight scales (fp8_w8a8, int8_w8a8).")]
EngineOpt = Annotated[Optional[str], typer.Option(
    "--engine", help="Engine profile whose fused-MoE kernel rules and table names apply (vllm-0.12, vllm-0.25, "
                     "vllm-0.33, sglang-0.4.10, sglang-0.5.23). Default: the profile of the installed vllm (read "
                     "from its package metadata), else of the installed sglang, else the newest vLLM one.")]


def engine_choice(engine: Optional[str]):
    """The engine profile for --engine (moeplan.engine.choose_profile); its warning, if any, as one stderr line."""
    from moeplan.engines.registry import choose_profile

    choice = choose_profile(engine)
    if choice.warning:
        typer.echo("moeplan: warning: " + " ".join(choice.warning.split()), err=True)
    return choice
