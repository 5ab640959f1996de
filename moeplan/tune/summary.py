"""Summaries of a tuning run: the rich table printed after each table is tuned."""

from __future__ import annotations

import math
from typing import Iterable, Optional

from moeplan.tune.job import TableOutcome


def _fmt(v: Optional[float], spec: str = ".1f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def geomean(vals: Iterable[Optional[float]]) -> Optional[float]:
    xs = [v for v in vals if v]
    if not xs:
        return None
    return math.exp(sum(math.log(v) for v in xs) / len(xs))


def rich_summary(outcome: TableOutcome):
    """A rich Table: per batch size the winner, its time, the default's, speed-up and roofline fraction."""
    from rich.table import Table

    t = Table(title=f"{outcome.path.name}  ({outcome.message})", title_justify="left")
    for col, j in (("M", "right"), ("winner BM/BN/BK/G/warps/stages", "left"), ("time us", "right"),
                   ("default us", "right"), ("speed-up", "right"), ("floor us", "right"), ("of roofline", "right")):
        t.add_column(col, justify=j)
    for r in outcome.rows:
        cfg = r.winner.short() if r.winner else f"[red]{r.status}[/red]"
        t.add_row(str(r.M), cfg, _fmt(r.time_us), _fmt(r.default_us), _fmt(r.speedup, ".2f", "x"),
                  _fmt(r.floor_us), _fmt(None if r.roofline is None else 100 * r.roofline, ".0f", "%"))
    g = geomean(r.speedup for r in outcome.rows)
    gr = geomean(r.roofline for r in outcome.rows)
    t.caption = (f"geomean speed-up over the default heuristic {_fmt(g, '.2f', 'x')}, "
                 f"geomean roofline fraction {_fmt(None if gr is None else 100 * gr, '.0f', '%')}; "
                 f"{outcome.points} points, {outcome.configs} configs, {outcome.failed} failed, "
                 f"{outcome.wall_s:.0f} s; engine profile {outcome.engine}; "
                 f"floor = max(bytes/bandwidth, flops/peak), {outcome.ceilings_source}")
    t.caption_justify = "left"
    return t
