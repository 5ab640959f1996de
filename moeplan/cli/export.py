"""`moeplan export`: the tables the engine will look up, copied into one folder. A thin shell over
`moeplan.fleet.export`; nothing here imports torch or triton."""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer

from moeplan.base.errors import MoeplanError
from moeplan.cli.options import BlockOpt, DpOpt, DtypeOpt, EngineOpt, EpOpt, PerChannelOpt, PerTokenOpt, PlacementOpt, TpOpt


def export(
    model: Optional[str] = typer.Argument(None, help="Preset alias, HF repo id or config.json path (or use --matrix)."),
    to: str = typer.Option(..., "--to", help="Folder to copy the tables into (created if missing)."),
    matrix: Optional[str] = typer.Option(None, "--matrix", help="A matrix file: export every table it needs."),
    tp: TpOpt = 1,
    dp: DpOpt = 1,
    ep: EpOpt = False,
    placement: PlacementOpt = "linear",
    dtype: DtypeOpt = "auto",
    block_shape: BlockOpt = None,
    per_token: PerTokenOpt = False,
    per_channel: PerChannelOpt = False,
    device_name: Optional[str] = typer.Option(None, "--device-name", help="GPU name the tables are for (default: the "
                                              "local GPU's, read with nvidia-smi)."),
    tuned_dir: List[str] = typer.Option([], "--tuned-dir", help="Folder of tables to copy from (repeatable; "
                                        "$VLLM_TUNED_CONFIG_FOLDER first). Default: ./tuned, then moeplan's shipped "
                                        "tables."),
    engine: EngineOpt = None,
    force: bool = typer.Option(False, "--force", help="Replace a file of the same name in --to that differs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {to, copied, missing, env, serve}."),
):
    """Copy exactly the tables the engine will look up into one folder; name the missing ones and how to make
    them, and print the VLLM_TUNED_CONFIG_FOLDER line and a `vllm serve` example. Exit 1 if a table is missing."""
    from moeplan.fleet.export import export_layout, export_matrix

    if (model is None) == (matrix is None):
        raise MoeplanError("pass MODEL (with its layout options) or --matrix FILE, not " +
                           ("both" if model is not None else "neither"))
    if matrix is not None:
        result = export_matrix(matrix, to, tuned_dir, dict(os.environ), force)
    else:
        from moeplan.cli.options import engine_choice

        profile = engine_choice(engine).profile.name
        result = export_layout(model, to, tp=tp, dp=dp, ep=ep, placement=placement, dtype=dtype,
                               block_shape=block_shape, per_token=per_token, per_channel=per_channel,
                               device_name=device_name, tuned_dirs=tuned_dir, engine_profile=profile,
                               env=dict(os.environ), force=force)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_export(result)
    raise typer.Exit(1 if result.missing else 0)


def print_export(result) -> None:
    from moeplan.cli.render import console, user_text

    con = console()
    n = len(result.copied) + len(result.missing)
    con.print(f"{len(result.copied)} of {n} table(s) in {user_text(result.to)}", soft_wrap=True)
    for c in result.copied:
        con.print(f"  {c['action']} {user_text(c['file_name'])}", soft_wrap=True)
        con.print(f"    from {user_text(c['source'])}", soft_wrap=True)
    for m in result.missing:
        con.print(f"  [red]missing[/red] {user_text(m['file_name'])}", soft_wrap=True)
        for u in m["used_by"]:
            con.print(f"    used by {user_text(u)}", soft_wrap=True)
        con.print(f"    make it: {user_text(m['command'])}", soft_wrap=True)
    if result.copied:
        con.print("point the engine at the folder:")
        con.print(f"  {user_text(result.env_line)}", soft_wrap=True)
        for s in result.serve:
            con.print(f"  {user_text(s)}", soft_wrap=True)
