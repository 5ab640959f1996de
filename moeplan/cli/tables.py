"""`moeplan show` and `moeplan verify`: reading tuning tables. `register(app)` adds them.

Thin shells over `moeplan.tables` (and `moeplan.staleness` for `verify --stale`); nothing
here imports torch or triton.
"""

from __future__ import annotations

from pathlib import Path

import typer

from moeplan.cli_common import one_line_errors


@one_line_errors
def show(path: str = typer.Argument(..., help="A tuning-table JSON file.")):
    """Print a tuning table as a rich table."""
    from rich.console import Console
    from rich.table import Table

    from moeplan.errors import TableError
    from moeplan.kernel_config import KNOBS
    from moeplan.naming import parse_tuning_file_name
    from moeplan.report import user_text
    from moeplan.safeio import check_path, shown
    from moeplan.tables import parse_table, read_table_text, verify_table_text

    check_path("FILE", path, "a tuning-table file")
    p = Path(path)
    if p.is_dir():
        raise TableError(f"{shown(path)} is a folder; pass a tuning-table file (or use `moeplan verify` on a folder)")
    text = read_table_text(p)
    # The same checks as `verify --strict` (its byte format and file-name grammar apart): a table the
    # engine's kernel cannot run is reported, never printed as if it were one.
    problems = verify_table_text(p.name, text, check_name=False, within_engine=True)
    if problems:
        more = f" (and {len(problems) - 1} more; `moeplan verify` lists them all)" if len(problems) > 1 else ""
        raise TableError(f"{shown(path)}: {problems[0]}{more}")
    table = parse_table(text, shown(path))
    try:
        info = parse_tuning_file_name(p.name)
        title = (f"{user_text(p.name)}\nE={info['E']} N={info['N']} device={info['device']} "
                 f"dtype={info['dtype'] or '-'} block_shape={info['block_shape'] or '-'} "
                 f"triton={user_text(table.triton_version or '-')}")
    except TableError:
        title = f"{user_text(p.name)} (not an engine file name) triton={user_text(table.triton_version or '-')}"
    t = Table(title=title, title_justify="left")
    t.add_column("batch", justify="right")
    for k in KNOBS:
        t.add_column(k, justify="right")
    for m, cfg in sorted(table.entries.items()):
        t.add_row(str(m), *(str(v) for v in cfg.to_dict().values()))
    con = Console()
    if not con.is_terminal:
        con = Console(width=160)  # keep the knob names whole in pipes and logs
    con.print(t)


@one_line_errors
def verify(
    folder: str = typer.Argument(..., help="A folder of tuning tables (*.json)."),
    strict: bool = typer.Option(False, "--strict", help="Also require every knob within what the engine's kernel "
                                                        "runs, and moeplan's exact byte format."),
    stale: bool = typer.Option(False, "--stale", help="Also flag stale tables: another Triton than the installed one, "
                                                      "another engine profile than the current one, or no measurements "
                                                      "CSV beside them."),
):
    """Check every table in a folder (name, keys, legal values, duplicates, order); non-zero exit on a problem."""
    from moeplan.safeio import printable
    from moeplan.tables import verify_folder

    results = verify_folder(folder, strict)
    if stale:  # staleness counts as a problem, so CI fails on it (moeplan.staleness says what it means)
        from moeplan.staleness import current_installation, stale_reasons
        inst = current_installation()
        for name, problems in results.items():
            problems.extend(f"stale: {r}" for r in stale_reasons(Path(folder) / name, inst))
    bad = 0
    for name, problems in results.items():
        if problems:
            bad += 1
            for pr in problems:
                typer.echo(printable(f"FAIL {name}: {pr}"))
        else:
            typer.echo(printable(f"ok   {name}"))
    typer.echo(f"{len(results)} table(s), {bad} with problems")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `show` and `verify` to a typer app."""
    app.command("show")(show)
    app.command("verify")(verify)
