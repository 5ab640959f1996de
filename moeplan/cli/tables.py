"""`moeplan show`, `moeplan verify` and `moeplan diff`: reading and comparing tuning tables.

Thin shells over `moeplan.tables` (`diff --measure` calls `moeplan.tune.api.measure_diff`);
nothing here imports torch or triton unless `--measure` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from moeplan.base.errors import MoeplanError
from moeplan.cli.options import BlockOpt, DpOpt, DtypeOpt, EpOpt, PerChannelOpt, PerTokenOpt, PlacementOpt, TpOpt


def show(path: str = typer.Argument(..., help="A tuning-table JSON file."),
         wide: bool = typer.Option(False, "--wide", help="Full knob names in full boxes, whatever the width.")):
    """Print a tuning table as a rich table."""

    from moeplan.base.errors import TableError
    from moeplan.engines.knobs import KNOBS
    from moeplan.cli.render import console, fit_table, table_width, user_text
    from moeplan.base.safeio import check_path, shown
    from moeplan.engines.registry import ENGINES
    from moeplan.tables.table import parse_table, read_table_text
    from moeplan.tables.verify import table_engine, verify_table_text

    check_path("FILE", path, "a tuning-table file")
    p = Path(path)
    if p.is_dir():
        raise TableError(f"{shown(path)} is a folder; pass a tuning-table file (or use `moeplan verify` on a folder)")
    text = read_table_text(p)
    # The same checks as `verify --strict` (its byte format and file-name grammar apart): a table the
    # engine's kernel cannot run is reported, never printed as if it were one.
    engine = table_engine(p)
    parse_tuning_file_name = ENGINES[engine].parse_tuning_file_name
    problems = verify_table_text(p.name, text, check_name=False, within_engine=True, engine=engine)
    if problems:
        more = f" (and {len(problems) - 1} more; `moeplan verify` lists them all)" if len(problems) > 1 else ""
        raise TableError(f"{shown(path)}: {problems[0]}{more}")
    table = parse_table(text, shown(path), engine)
    triton = table.triton_version or (p.parent.name[len("triton_"):].replace("_", ".")
                                      if engine == "sglang" and p.parent.name.startswith("triton_") else "-")
    try:
        info = parse_tuning_file_name(p.name)
        title = (f"E={info['E']} N={info['N']} device={info['device']} "
                 f"dtype={info['dtype'] or '-'} block_shape={info['block_shape'] or '-'} "
                 f"triton={user_text(triton)}")
        if engine == "sglang":
            title += f" engine=sglang{' GEMM2' if info['down'] else ''}"
    except TableError:
        title = f"{user_text(p.name)} (not an engine file name) triton={user_text(triton)}"
    tma = any("USE_TMA" in e for e in table.extras.values())
    rows = [[str(m), *(str(v) for v in cfg.to_dict().values()),
             *([str(table.extras.get(m, {}).get("USE_TMA", False)).lower()] if tma else [])]
            for m, cfg in sorted(table.entries.items())]
    con = console(wide)
    con.print(user_text(p.name), soft_wrap=True)
    con.print(title)
    for headers in (KNOBS, tuple(SHORT_KNOBS[k] for k in KNOBS)):
        cols = [{"header": "batch", "justify": "right"}, *({"header": h, "justify": "right"} for h in headers),
                *([{"header": "USE_TMA", "justify": "right"}] if tma else [])]
        t, _ = fit_table(con, None, cols, rows, wide)
        if wide or table_width(con, t) <= con.width:
            break
    con.print(t)
    if headers is not KNOBS:
        con.print(", ".join(f"{SHORT_KNOBS[k]} = {k}" for k in KNOBS))


#: Knob names short enough for an 80-column `show` (a legend under the table spells them out).
SHORT_KNOBS = {"BLOCK_SIZE_M": "BM", "BLOCK_SIZE_N": "BN", "BLOCK_SIZE_K": "BK", "GROUP_SIZE_M": "GM",
               "num_warps": "warps", "num_stages": "stages"}


def verify(
    folder: str = typer.Argument(..., help="A folder of tuning tables (*.json)."),
    strict: bool = typer.Option(False, "--strict", help="Also require every knob within what the engine's kernel "
                                                        "runs, and moeplan's exact byte format."),
    stale: bool = typer.Option(False, "--stale", help="Also flag stale tables: another Triton than the installed one, "
                                                      "another engine profile than the current one, or no measurements "
                                                      "CSV beside them."),
):
    """Check every table in a folder (name, keys, legal values, duplicates, order); non-zero exit on a problem."""
    from moeplan.base.safeio import printable
    from moeplan.tables.verify import verify_folder

    results = verify_folder(folder, strict)
    if stale:  # staleness counts as a problem, so CI fails on it (moeplan.staleness says what it means)
        from moeplan.tables.staleness import current_installation, stale_reasons
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


def diff(
    a: str = typer.Argument(..., help="A tuning table, or a folder of them."),
    b: str = typer.Argument(..., help="Another table, or another folder (tables matched by file name)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    measure: bool = typer.Option(False, "--measure", help="Also time, at every batch size where they differ, the config "
                                                          "each side's engine would run (the tuner's timing, one GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="With --measure: the model whose tables these are (preset, "
                                                              "repo id or config.json), for K, top-k and the experts."),
    tp: TpOpt = 1,
    dp: DpOpt = 1,
    ep: EpOpt = False,
    placement: PlacementOpt = "linear",
    dtype: DtypeOpt = "auto",
    block_shape: BlockOpt = None,
    per_token: PerTokenOpt = False,
    per_channel: PerChannelOpt = False,
    gpu: int = typer.Option(0, "--gpu", help="With --measure: the GPU index to time on."),
    interpret: bool = typer.Option(False, "--interpret", help="With --measure: Triton's CPU interpreter (tests only)."),
    wide: bool = typer.Option(False, "--wide", help="One line per table and per batch size, whatever the width."),
):
    """Per batch size: which configs changed (and which knobs), which keys only one side has. Exit 1 if they differ."""
    from moeplan.tables.diff import describe, diff_paths
    from moeplan.tune.api import measure_diff

    if measure and model is None:
        raise MoeplanError("--measure needs --model MODEL (with the --tp/--dp/--ep/--dtype of the layout that loads "
                           "the tables): the file names lack K, top-k and the expert placement")
    d = diff_paths(a, b)
    timed = measure_diff(d, model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel, gpu, interpret) \
        if measure else None
    if as_json:
        obj = d.to_dict()
        if timed is not None:
            obj["measured_on"] = timed["device"]
            for t in obj["tables"]:
                t["measured"] = timed["tables"].get(t["file_name"], [])
        typer.echo(json.dumps(obj, indent=2))
    else:
        from moeplan.cli.render import terminal_width, wrapped

        for line in describe(d, wide):
            typer.echo(line if wide else wrapped(line, terminal_width()))
        if timed is not None:
            typer.echo(f"measured on {timed['device']} (the tuner's timing, median of the routing draws):")
            for name, rows in timed["tables"].items():
                typer.echo(name if rows else f"{name}: both sides run the same config at every batch size")
                for r in rows:
                    if r["speedup"] is None:
                        typer.echo(f"  M={r['M']}: A {r['a_status']}, B {r['b_status']}")
                    else:
                        typer.echo(f"  M={r['M']}: A {r['a_us']:.1f} us, B {r['b_us']:.1f} us, B/A speed-up "
                                   f"{r['speedup']:.3f}x")
    raise typer.Exit(0 if d.identical else 1)
