"""moeplan's command line: a thin typer shell over the planning library.

Every MoeplanError (and every usage error) becomes one line on stderr and exit code 2.
Nothing on the `resolve`/`models` path imports torch or triton.
"""

from __future__ import annotations

import sys


def _interrupted(*_):
    """Ctrl-C anywhere, start-up included: one line and the shell's code for SIGINT."""
    sys.stderr.write("moeplan: interrupted\n")
    sys.stderr.flush()
    raise SystemExit(130)


try:  # start-up (typer, rich, click) takes most of a short run: Ctrl-C here is reported too
    import json
    import os
    from typing import List, Optional

    import typer
    from typer.core import TyperGroup

    try:  # typer >= 0.20 vendors click; older typer uses the click package
        from typer._click import exceptions as cx
        from typer._click import echo
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import echo
        from click import exceptions as cx

    from moeplan.cli_common import (All2AllOpt, BlockOpt, DpOpt, DtypeOpt, EngineOpt, EpOpt, ModelArg, PerChannelOpt,
                                     PerTokenOpt, PlacementOpt, TpOpt, engine_choice, error_line, one_line_errors)
    from moeplan.errors import MoeplanError
    from moeplan.safeio import MAX_BATCH, check_int, check_path, shown
except KeyboardInterrupt:
    _interrupted()


class _OneLineErrors(TyperGroup):
    """Report usage and domain errors as one stderr line with exit code 2, never a traceback."""

    def invoke(self, ctx):
        # typer turns Ctrl-C into a silent exit 130; say so, as start-up does
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted()

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args=args, prog_name=prog_name or "moeplan", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except KeyboardInterrupt:
            _interrupted()
        except MoeplanError as e:
            _fail(str(e), e.exit_code)
        except cx.NoArgsIsHelpError as e:
            echo(e.ctx.get_help())
            sys.exit(0)
        except cx.BadParameter as e:
            _fail(_with_value(e, argv))
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


def _with_value(e, argv: list) -> str:
    """A bad option value's message with the value itself (`--tp abc`): click names only the option."""
    message = e.format_message()
    opts = getattr(e.param, "opts", None) or []
    value = None
    for i, a in enumerate(argv):
        for o in opts:
            if a == o and i + 1 < len(argv):
                value = argv[i + 1]
            elif o.startswith("--") and a.startswith(o + "="):
                value = a[len(o) + 1:]
    if value is not None and repr(value) not in message:
        message = f"{message} (got {shown(value)})"
    return message


def _fail(message: str, code: int = 2):
    echo(error_line(message), err=True)
    sys.exit(code)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Plan and autotune fused-MoE inference: per-device layouts, quant configs and tuning tables.",
)

@app.command()
@one_line_errors
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
    engine_configs: Optional[str] = typer.Option(None, "--engine-configs", help="The engine's folder of shipped tuning tables (default: found from the installed vllm's package files, never by importing it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
):
    """What every device of a TP/DP/EP layout gets: ranks, experts, N, quant config and tuning file."""
    from moeplan.cli_common import resolution_from_options
    from moeplan import report

    if batch_size is not None:
        check_int("--batch-size", batch_size, 1, MAX_BATCH)
    for d in tuned_dir:
        check_path("--tuned-dir", d, "a folder of tuning tables")
    res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                  device_name, all2all_backend)
    choice = engine_choice(engine)
    if engine_configs is not None:
        check_path("--engine-configs", engine_configs, "the engine's configs folder")
        if not os.path.isdir(engine_configs):
            raise MoeplanError(f"--engine-configs {engine_configs!r} is not a folder; pass the engine's configs folder "
                               "(.../vllm/model_executor/layers/fused_moe/configs)")
        engine_dir, why = engine_configs, "--engine-configs"
    else:
        from moeplan.engine import engine_config_dir
        engine_dir = engine_config_dir()
        why = "the installed vllm's package" if engine_dir else "vllm not installed; --engine-configs DIR names one"
    dirs = list(tuned_dir) or report.default_tuned_dirs()
    data = report.resolution_dict(res, dirs, dict(os.environ), batch_size,
                                  report.engine_dict(choice, engine_dir, why))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        report.print_resolution(data)


@app.command()
@one_line_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print the presets as a JSON list.")):
    """List the model presets (usable as MODEL by resolve and tune)."""
    from moeplan.models import list_presets, preset_rows

    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in list_presets()], indent=2))
        return
    rows = preset_rows()
    from moeplan import report
    report.print_models(rows)


def _register_tuner() -> None:
    import importlib.util

    if importlib.util.find_spec("moeplan.cli_tune") is None:  # tuner not in this checkout
        return
    from moeplan import cli_tune

    cli_tune.register(app)


try:
    _register_tuner()
    __import__("moeplan.cli_tables").cli_tables.register(app)  # show, verify
    __import__("moeplan.cli_fleet").cli_fleet.register(app)  # matrix, diff
    __import__("moeplan.cli_plan").cli_plan.register(app)  # plan, report
except KeyboardInterrupt:
    _interrupted()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _interrupted()


if __name__ == "__main__":
    main()
