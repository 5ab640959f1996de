"""moeplan's command line: a thin typer shell over the planning library.

Every MoeplanError (and every usage error) becomes one line on stderr and exit code 2.
Nothing on the `resolve`/`models` path imports torch or triton.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click; older typer uses the click package
    from typer._click import exceptions as cx
    from typer._click import echo
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import echo
    from click import exceptions as cx

from moeplan.errors import MoeplanError


class _OneLineErrors(TyperGroup):
    """Report usage and domain errors as one stderr line with exit code 2, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "moeplan", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except MoeplanError as e:
            _fail(str(e), e.exit_code)
        except cx.NoArgsIsHelpError as e:
            echo(e.ctx.get_help())
            sys.exit(0)
        except cx.UsageError as e:
            _fail(e.format_message())
        except cx.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except typer.Abort:
            echo("moeplan: interrupted", err=True)
            sys.exit(130)
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


def _fail(message: str, code: int = 2):
    line = " ".join(message.split())  # one line, whatever the message held
    echo(f"moeplan: error: {line}", err=True)
    sys.exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Plan and autotune fused-MoE inference: per-device layouts, quant configs and tuning tables.",
)

DTYPE_HELP = "auto (the checkpoint's quantization, else bf16) | bf16 | fp16 | fp32 | fp8_w8a8 | fp8_w8a16 | int8_w8a8 | int8_w8a16 | int4_w4a16 | mxfp4 | nvfp4"
BLOCK_HELP = ("Quantization block as BN,BK (e.g. 128,128); weight-only int4/int8 take 0,G for group size G. "
              "A zero entry keeps the block selector out of the file name. With --dtype equal to the "
              "checkpoint's scheme, the checkpoint's block shape is the default.")


@app.command()
def resolve(
    model: str = typer.Argument(..., help="Preset alias or HF repo id (see `moeplan models`), or a path to a config.json or a folder holding one."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel size."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel size."),
    ep: bool = typer.Option(False, "--ep/--no-ep", help="Expert parallelism over the tp*dp devices."),
    placement: str = typer.Option("linear", "--placement", help="Expert placement under EP: linear | round_robin."),
    all2all_backend: str = typer.Option("allgather_reducescatter", "--all2all-backend",
                                        help="All-to-all backend used when dp > 1 with EP (naive, allgather_reducescatter, pplx, deepep_high_throughput, deepep_low_latency, flashinfer_all2allv)."),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    block_shape: Optional[str] = typer.Option(None, "--block-shape", help=BLOCK_HELP),
    per_token: bool = typer.Option(False, "--per-token", help="Per-token activation scales (fp8_w8a8, int8_w8a8)."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Per-output-channel weight scales (fp8_w8a8, int8_w8a8)."),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="GPU name, e.g. 'NVIDIA H100 80GB HBM3' (default: the local GPU's, read with nvidia-smi; unknown without a GPU)."),
    tuned_dir: List[str] = typer.Option([], "--tuned-dir", help="Folder of tuning tables to look in (repeatable; $VLLM_TUNED_CONFIG_FOLDER is tried first, as the engine does). Default: moeplan's tuned/."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Show the table entry (or default config) a batch of M tokens would use."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
):
    """What every device of a TP/DP/EP layout gets: ranks, experts, N, quant config and tuning file."""
    from moeplan.cli_common import resolution_from_options
    from moeplan import report

    if batch_size is not None and batch_size < 1:
        raise MoeplanError(f"--batch-size {batch_size} is invalid; expected an integer >= 1")
    res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                  device_name, all2all_backend)
    dirs = list(tuned_dir) or report.default_tuned_dirs()
    data = report.resolution_dict(res, dirs, dict(os.environ), batch_size)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        report.print_resolution(data)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print the presets as a JSON list.")):
    """List the model presets (usable as MODEL by resolve and tune)."""
    from moeplan.models import preset_rows

    rows = preset_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from moeplan import report
    report.print_models(rows)


def _register_tuner() -> None:
    import importlib.util

    if importlib.util.find_spec("moeplan.cli_tune") is None:  # tuner not in this checkout
        return
    from moeplan import cli_tune

    cli_tune.register(app)


_register_tuner()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
