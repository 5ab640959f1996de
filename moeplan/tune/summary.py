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


def kept_default_line(rows) -> str:
    """How many entries are the default config and why; which were replaced; where a search space
    without the default is slower than it."""
    decs = [r.decision for r in rows if r.decision is not None]
    kept = [d for d in decs if d.kind == "default"]
    why: dict[str, int] = {}
    for d in kept:
        reason = d.text.split(": ", 1)[-1]
        if reason.startswith("margin "):
            reason = "margin below the threshold"
        why[reason] = why.get(reason, 0) + 1
    line = f"{len(kept)} of {len(decs)} entries kept the default config"
    if why:
        line += " (" + "; ".join(f"{n} {w}" for w, n in sorted(why.items())) + ")"
    replaced = [r.M for r in rows if r.decision is not None and r.decision.replaced]
    if replaced:
        line += f"; replaced by the default at M={','.join(map(str, replaced))} (tuned pick not ahead on evidence)"
    won = sum(d.kind == "winner" for d in decs)
    line += f"; {won} tuned entries beat the default in the A/B"
    slower = [r.M for r in rows if r.decision is not None and r.decision.slower]
    if slower:
        line += (f"; the search space excludes the default and is SLOWER than it at "
                 f"M={','.join(map(str, slower))}")
    return line


def down_line(rows) -> str:
    """How many `_down` entries repeat the up entry (GEMM2 runs it unless a config beat it in the A/B)."""
    downs = [r for r in rows if r.down is not None]
    own = sum(r.down != r.winner for r in downs)
    return (f"{len(downs) - own} of {len(downs)} down entries repeat the up entry, {own} beat it in the A/B "
            "(GEMM2 with GEMM1 on the up entry)")


def rich_summary(outcome: TableOutcome):
    """A rich Table: per batch size the winner, its time, the default's, speed-up, roofline fraction
    and why the entry is what it is (the evidence rule)."""
    from rich.table import Table

    t = Table(title=f"{outcome.path.name}  ({outcome.message})", title_justify="left")
    pair = any(r.down is not None for r in outcome.rows)  # SGLang: GEMM2's own `_down` entry
    cols = [("M", "right"), ("winner BM/BN/BK/G/warps/stages", "left"), ("time us", "right"),
            ("default us", "right"), ("speed-up", "right"), ("floor us", "right"), ("of roofline", "right"),
            ("decision", "left")]
    if pair:
        cols[2:2] = [("down (GEMM2)", "left"), ("pair us", "right")]
        cols.append(("down decision", "left"))
    for col, j in cols:
        t.add_column(col, justify=j)
    for r in outcome.rows:
        cfg = r.winner.short() if r.winner else f"[red]{r.status}[/red]"
        cells = [str(r.M), cfg, _fmt(r.time_us), _fmt(r.default_us), _fmt(r.speedup, ".2f", "x"),
                 _fmt(r.floor_us), _fmt(None if r.roofline is None else 100 * r.roofline, ".0f", "%"),
                 r.decision.text if r.decision else "-"]
        if pair:
            same = r.down is None or r.down == r.winner
            cells[2:2] = ["= up" if same else r.down.short(), _fmt(r.down_us if not same else None)]
            cells.append(r.down_decision.text if r.down_decision else "-")
        t.add_row(*cells)
    g = geomean(r.speedup for r in outcome.rows)
    gr = geomean(r.roofline for r in outcome.rows)
    t.caption = (f"geomean speed-up over the default heuristic {_fmt(g, '.2f', 'x')}, "
                 f"geomean roofline fraction {_fmt(None if gr is None else 100 * gr, '.0f', '%')}; "
                 f"{outcome.points} points, {outcome.configs} configs, {outcome.failed} failed, "
                 f"{outcome.wall_s:.0f} s; engine profile {outcome.engine}; "
                 f"floor = max(bytes/bandwidth, flops/peak), {outcome.ceilings_source}; "
                 f"{kept_default_line(outcome.rows)}" + (f"; {down_line(outcome.rows)}" if pair else ""))
    t.caption_justify = "left"
    return t
