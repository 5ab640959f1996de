"""The measurements CSV beside a tuning table (what `moeplan tune` writes; `plan`, `report` and
`verify --stale` read it): per batch size, the winner's and the default heuristic's time in the
`confirm` phase, and the roofline floor.

Columns read: batch_size, phase, median_us, is_winner, is_default, floor_us. Pure: parses text.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Optional

from moeplan.base.errors import PlanError


@dataclass(frozen=True)
class CsvPoint:
    """One batch size of a tuning run: the winner's and the default heuristic's time, and the floor."""

    winner_us: Optional[float]
    default_us: Optional[float]
    floor_us: Optional[float]


def _flag(v: str) -> bool:
    return str(v).strip().lower() in ("true", "1")


def _num(v: str) -> Optional[float]:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def parse_tuning_csv(text: str) -> dict[int, CsvPoint]:
    """Per batch size: the winner's and the default's median time (the `confirm` phase, which
    re-measures the finalists, over `screen`), and `floor_us`. Rows without a time are skipped."""
    rank = {"confirm": 2, "screen": 1}
    best: dict[tuple[int, str], tuple[int, float]] = {}
    floors: dict[int, float] = {}
    reader = csv.DictReader(io.StringIO(text))
    need = {"batch_size", "phase", "median_us", "is_winner"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise PlanError(f"tuning CSV lacks the columns {', '.join(sorted(need))} (has: "
                        f"{', '.join(reader.fieldnames or [])})")
    for row in reader:
        try:
            M = int(row["batch_size"])
        except (TypeError, ValueError):
            continue
        f = _num(row.get("floor_us", ""))
        if f is not None:
            floors[M] = f
        us, r = _num(row["median_us"]), rank.get(row["phase"], 0)
        if us is None or r == 0:
            continue
        for kind, col in (("winner", "is_winner"), ("default", "is_default")):
            if _flag(row.get(col, "")) and r >= best.get((M, kind), (0, 0.0))[0]:
                best[(M, kind)] = (r, us)
    Ms = sorted({M for M, _ in best} | set(floors))
    return {M: CsvPoint(best.get((M, "winner"), (0, None))[1], best.get((M, "default"), (0, None))[1],
                        floors.get(M)) for M in Ms}
