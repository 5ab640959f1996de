"""moeplan's command line: the typer app, and the one place where errors become one line.

Every MoeplanError from the library (and every usage error, and an OSError the input layer did
not foresee) becomes one line on stderr (`moeplan: error: ...`) and exit code 2, never a
traceback; Ctrl-C anywhere prints `moeplan: interrupted` and exits 130. The command modules
beside this one only parse options, call the library and print; this module lists them.
Nothing on the `resolve`/`models`/`plan`/`matrix` paths imports torch or triton.
"""

from __future__ import annotations

import sys


def _interrupted(*_):
    """Ctrl-C anywhere, start-up included: one line and the shell's code for SIGINT."""
    sys.stderr.write("moeplan: interrupted\n")
    sys.stderr.flush()
    raise SystemExit(130)


try:  # start-up (typer, rich, click) takes most of a short run: Ctrl-C here is reported too
    import os

    import typer
    from typer.core import TyperGroup

    try:  # typer >= 0.20 vendors click; older typer uses the click package
        from typer._click import exceptions as cx
        from typer._click import echo
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import echo
        from click import exceptions as cx

    from moeplan.base.errors import MoeplanError
    from moeplan.base.safeio import printable, shown
except KeyboardInterrupt:
    _interrupted()

MAX_ERROR_CHARS = 2000


def error_line(message) -> str:
    """The one stderr line every bad input gets: whitespace runs become one space, and any
    other control character in it (from user data) is escaped, never written raw; a huge value
    is cut in the middle, keeping the start that names it and the end that says what is valid."""
    text = printable(" ".join(str(message).split()))
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS // 2] + " [...] " + text[-MAX_ERROR_CHARS // 4:]
    return "moeplan: error: " + text


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
        except OSError as e:  # a path the file system refuses, past the input layer's checks
            where = f"{shown(os.fsdecode(e.filename))}: " if e.filename is not None else ""
            _fail(f"{where}{e.strerror or e}")
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

try:  # every command, in the order `--help` lists them
    from moeplan.cli import export, fleet, plan, resolve, tables, tune

    app.command("resolve")(resolve.resolve)
    app.command("models")(resolve.models)
    app.command("tune")(tune.tune)
    app.command("show")(tables.show)
    app.command("verify")(tables.verify)
    app.command("matrix")(fleet.matrix)
    app.command("diff")(tables.diff)
    app.command("plan")(plan.plan)
    app.command("report")(plan.report_cmd)
    app.command("export")(export.export)
except KeyboardInterrupt:
    _interrupted()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _interrupted()


if __name__ == "__main__":
    main()
