"""`moeplan matrix`: the tables a whole fleet needs. A thin shell over `moeplan.fleet`; nothing
here imports torch or triton.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from moeplan.base.errors import MoeplanError

TunedDirOpt = typer.Option([], "--tuned-dir", help="Folder of tables to look in (repeatable; $VLLM_TUNED_CONFIG_FOLDER "
                                                   "first, the installed engine's own tables last). Default: ./tuned, "
                                                   "then moeplan's shipped tables.")


def matrix(
    file: str = typer.Argument(..., help="Matrix file (.toml, or .json with the same keys)."),
    tuned_dir: List[str] = TunedDirOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: keep the I-th of N disjoint parts of the tables "
                                                              "(1-based; the same for every run of the same file)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {tables, invalid}."),
    github: bool = typer.Option(False, "--github", help="Print a GitHub Actions strategy.matrix {include: [...]} of the "
                                                        "missing tables (one line, for $GITHUB_OUTPUT)."),
):
    """Expand a matrix file to the distinct tables it needs: present, stale or missing, and who uses each."""
    if as_json and github:
        raise MoeplanError("--json and --github both given; pick one output")
    from moeplan.fleet.status import matrix_rows

    data = matrix_rows(file, tuned_dir, shard)
    if github:
        include = [{"table": r["job"].file_name, "device": r["job"].device, "shard": r["shard"]}
                   for r in data["rows"] if r["status"].status == "missing"]
        typer.echo(json.dumps({"include": include}))
        return
    if as_json:
        tables = [{"file_name": r["job"].file_name, "device": r["job"].device, "status": r["status"].status,
                   "found": r["status"].found,
                   "used_by": [{"model": c.model, "layout": c.layout.to_dict(), "dtype": c.dtype}
                               for c in r["job"].used_by],
                   "command": r["command"]} for r in data["rows"]]
        typer.echo(json.dumps({"tables": tables, "invalid": [i.to_dict() for i in data["invalid"]]}, indent=2))
        return
    _print_matrix(data)


def _print_matrix(data: dict) -> None:
    from rich.table import Table

    from moeplan.cli.render import console, user_text

    con = console()
    rows = data["rows"]
    counts = {s: sum(1 for r in rows if r["status"].status == s) for s in ("present", "stale", "missing")}
    t = Table(title=f"{user_text(data['matrix'].source)}: {len(rows)} table(s) ({counts['present']} present, "
                    f"{counts['stale']} stale, {counts['missing']} missing)", title_justify="left")
    for col in ("table", "status", "where / why", "used by"):
        t.add_column(col, overflow="fold")
    style = {"present": "green", "stale": "yellow", "missing": "red"}
    for r in rows:
        st = r["status"]
        where = user_text(st.found or "-") + "".join(f"\n{user_text(x)}" for x in st.reasons)
        users = "\n".join(user_text(f"{c.model} {c.layout.label()} {c.dtype}") for c in r["job"].used_by)
        t.add_row(user_text(r["job"].file_name), f"[{style[st.status]}]{st.status}[/]", where, users)
    con.print(t)
    for i in data["invalid"]:
        c = i.combination
        con.print(user_text(f"invalid: {c.model} {c.layout.label()} {c.dtype} on {c.device}: {i.reason}"), soft_wrap=True)
