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
                                                        "missing and stale tables (one line, for $GITHUB_OUTPUT)."),
    missing_only: bool = typer.Option(False, "--missing-only", help="With --github: leave the stale tables out."),
    wide: bool = typer.Option(False, "--wide", help="One table with every column, whatever the terminal's width."),
    gpus: int = typer.Option(8, "--gpus", min=1, max=4096, help="GPUs the tuning-time estimate divides the work over."),
):
    """Expand a matrix file to the distinct tables it needs: present, stale or missing, and who uses each."""
    if as_json and github:
        raise MoeplanError("--json and --github both given; pick one output")
    from moeplan.fleet.status import github_include, matrix_rows, tuning_estimate
    from moeplan.tables.lookup import check_tuned_dirs

    check_tuned_dirs(tuned_dir)
    data = matrix_rows(file, tuned_dir, shard)
    est = tuning_estimate(data, gpus)
    if github:
        typer.echo(json.dumps({"include": github_include(data, stale=not missing_only)}))
        return
    if as_json:
        tables = [{"file_name": r["job"].file_name, "device": r["job"].device, "status": r["status"].status,
                   "found": r["status"].found,
                   "used_by": [{"model": c.model, "layout": c.layout.to_dict(), "dtype": c.dtype}
                               for c in r["job"].used_by],
                   "command": r["command"]} for r in data["rows"]]
        typer.echo(json.dumps({"tables": tables, "invalid": [i.to_dict() for i in data["invalid"]],
                               "estimate": est.to_dict() if est else None}, indent=2))
        return
    _print_matrix(data, wide, est)


def _print_matrix(data: dict, wide: bool = False, est=None) -> None:
    """Compact: one line per table (tag, status, who uses it), then each file name whole on its own
    line with where it was found or why it is stale. --wide: the table with every column."""
    from moeplan.cli.render import console, fit_table, indented, user_text

    con = console(wide)
    rows = data["rows"]
    counts = {s: sum(1 for r in rows if r["status"].status == s) for s in ("present", "stale", "missing")}
    title = (f"{user_text(data['matrix'].source)}: {len(rows)} table(s) ({counts['present']} present, "
             f"{counts['stale']} stale, {counts['missing']} missing)")
    style = {"present": "green", "stale": "yellow", "missing": "red"}

    def users(r, sep):
        return sep.join(user_text(f"{c.model} {c.layout.label()} {c.dtype}") for c in r["job"].used_by)

    if wide:
        cols = [{"header": h} for h in ("table", "status", "where / why", "used by")]
        body = [[user_text(r["job"].file_name), f"[{style[r['status'].status]}]{r['status'].status}[/]",
                 user_text((r["status"].found or "-") + "".join(f"\n{x}" for x in r["status"].reasons)),
                 users(r, "\n")] for r in rows]
        t, _ = fit_table(con, title, cols, body, wide=True)
        con.print(t)
    else:
        con.print(title, soft_wrap=True)
        cols = [{"header": "#", "justify": "right"}, {"header": "status"}, {"header": "used by", "wrap": True}]
        body = [[f"T{k}", f"[{style[r['status'].status]}]{r['status'].status}[/]", users(r, ", ")]
                for k, r in enumerate(rows, 1)]
        t, _ = fit_table(con, None, cols, body)
        con.print(t)
        for k, r in enumerate(rows, 1):
            st = r["status"]
            con.print(f"T{k} {user_text(r['job'].file_name)}", soft_wrap=True)
            if st.found:
                con.print(f"   found {user_text(st.found)}", soft_wrap=True)
            for x in st.reasons:
                indented(con, user_text(x))
            if st.status != "present":
                con.print(f"   make it: {user_text(r['command'])}", soft_wrap=True)
    if est is not None:
        from moeplan.fleet.estimate import HOW, fmt_duration

        con.print(f"estimate: {est.tables} table(s) to tune (missing + stale): {fmt_duration(est.gpu_s)} GPU time, "
                  f"{fmt_duration(est.wall_s)} on {est.gpus} GPU(s); from {est.samples} measured table(s): {HOW}")
    for i in data["invalid"]:
        c = i.combination
        con.print(user_text(f"invalid: {c.model} {c.layout.label()} {c.dtype} on {c.device}: {i.reason}"),
                  soft_wrap=True)
