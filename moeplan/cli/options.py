"""Option handling shared by the commands that take a model + layout + quantization."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Annotated, Optional

import typer

from moeplan.errors import MoeplanError
from moeplan.models import load_model
from moeplan.parallel import Layout
from moeplan.plan import QuantRequest, Resolution, resolve
from moeplan.quant import parse_block_shape
from moeplan.safeio import check_device_name, printable, shown


MAX_ERROR_CHARS = 2000


def error_line(message) -> str:
    """The one stderr line every bad input gets: whitespace runs become one space, and any
    other control character in it (from user data) is escaped, never written raw; a huge value
    is cut in the middle, keeping the start that names it and the end that says what is valid."""
    text = printable(" ".join(str(message).split()))
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS // 2] + " [...] " + text[-MAX_ERROR_CHARS // 4:]
    return "moeplan: error: " + text


def one_line_errors(fn):
    """Turn a command's MoeplanError into `error_line` on stderr and its exit code (2). An OSError
    the input layer did not foresee (a path the file system refuses) is one line too, never a
    traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except MoeplanError as e:
            typer.echo(error_line(e), err=True)
            raise typer.Exit(e.exit_code)
        except OSError as e:
            where = f"{shown(os.fsdecode(e.filename))}: " if e.filename is not None else ""
            typer.echo(error_line(f"{where}{e.strerror or e}"), err=True)
            raise typer.Exit(2)

    return wrapper


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
    "--engine", help="Engine profile whose fused-MoE kernel rules apply (vllm-0.12, vllm-0.25, vllm-0.33). Default: the "
                     "profile of the installed vllm (read from its package metadata), else the newest.")]


def engine_choice(engine: Optional[str]):
    """The engine profile for --engine (moeplan.engine.choose_profile); its warning, if any, as one stderr line."""
    from moeplan.engine import choose_profile

    choice = choose_profile(engine)
    if choice.warning:
        typer.echo("moeplan: warning: " + " ".join(choice.warning.split()), err=True)
    return choice


def local_device_name() -> Optional[str]:
    """Name of the first visible CUDA GPU via nvidia-smi (no torch import), or None."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not names:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    index = int(visible) if visible.isascii() and visible.isdigit() and len(visible) < 5 else None
    name = names[index] if index is not None and index < len(names) else names[0]
    # the GPU's own name passes the same grammar as --device-name
    return check_device_name(name, "the local GPU's name (from nvidia-smi; pass --device-name)")


def resolution_from_options(
    model: str,
    tp: int = 1,
    dp: int = 1,
    ep: bool = False,
    placement: str = "linear",
    dtype: str = "auto",
    block_shape: Optional[str] = None,
    per_token: bool = False,
    per_channel: bool = False,
    device_name: Optional[str] = None,
    all2all_backend: str = "allgather_reducescatter",
    detect_device: bool = True,
) -> Resolution:
    """Build a Resolution from CLI option values; raises MoeplanError on bad input."""
    if device_name is not None:
        check_device_name(device_name)
    spec = load_model(model)
    layout = Layout(tp=tp, dp=dp, ep=ep, placement=placement, all2all_backend=all2all_backend)
    block = tuple(parse_block_shape(block_shape)) if block_shape is not None else None
    req = QuantRequest(dtype=dtype, block_shape=block, per_token=per_token, per_channel=per_channel)
    if device_name is None and detect_device:
        device_name = local_device_name()
    return resolve(spec, layout, req, device_name)
