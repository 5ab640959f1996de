"""The measurements CSV beside a tuning table (what `moeplan tune` writes; `plan`, `report` and
`verify --stale` read it): per batch size, the winner's and the default heuristic's time in the
`confirm` phase, and the roofline floor.

Columns read: batch_size, phase, median_us, is_winner, is_default, floor_us (and engine_profile
for staleness). `parse_tuning_csv` parses text; `read_tuning_csv` reads the file through the input
layer (`moeplan.base.safeio`): a regular file of at most 64 MiB, UTF-8, every field at most 4096
characters, batch sizes 1..1048576, times 0..1e12 µs; anything else is one PlanError naming the
file and line.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from typing import Optional

from moeplan.base import safeio
from moeplan.base.errors import PlanError
from moeplan.base.safeio import MAX_BATCH, MAX_CSV_BYTES, MAX_CSV_FIELD, printable, shown


@dataclass(frozen=True)
class CsvPoint:
    """One batch size of a tuning run: the winner's and the default heuristic's time, and the floor."""

    winner_us: Optional[float]
    default_us: Optional[float]
    floor_us: Optional[float]


MAX_US = 1e12  # a time in µs (11 days): anything larger is a corrupt file, and would overflow the ratios
_INT_RE = re.compile(r"[0-9]{1,8}")  # ASCII digits only: str.isdigit() also takes '²'


def _flag(v: Optional[str]) -> bool:
    return str(v).strip().lower() in ("true", "1")


def _fail(source: str, line: int, what: str) -> PlanError:
    return PlanError(f"measurements CSV {source} line {line}: {what}")


def _num(v: Optional[str], column: str, source: str, line: int) -> Optional[float]:
    """A time or floor in µs: empty (or nan: a failed point) is none, else a number in 0..MAX_US
    (0 counts as none)."""
    text = (v or "").strip()
    if not text or text.lower() == "nan":
        return None
    try:
        x = float(text)
    except ValueError:
        x = None
    if x is None or not math.isfinite(x) or not 0 <= x <= MAX_US:
        raise _fail(source, line, f"{column} {shown(text)} is not a time; valid: a number of µs in 0..{MAX_US:g}")
    return x if x > 0 else None


def _header(text: str, source: str) -> list[str]:
    """The column names (line 1), each at most MAX_CSV_FIELD characters."""
    try:
        fields = next(csv.reader(io.StringIO(text, newline="")), None) if text else None
    except csv.Error as e:
        raise _fail(source, 1, f"not valid CSV ({printable(e)})") from None
    long = next((f for f in fields or [] if len(f) > MAX_CSV_FIELD), None)
    if long is not None:
        raise _fail(source, 1, f"a column name of {len(long):,} characters; the limit is {MAX_CSV_FIELD:,}")
    return fields or []


def _rows(text: str, source: str, columns: tuple[str, ...]):
    """(line number, the row's values of `columns`, '' where the row lacks one) of a CSV whose
    every field is at most MAX_CSV_FIELD characters. A csv.reader and column indexes, not a dict
    per row: `plan` reads every tuning CSV of the lookup folders (thousands of rows each)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    # no line longer than the cap holds no field longer than it (the exact check is for the rest)
    check_fields = bool(text) and max(map(len, text.splitlines())) > MAX_CSV_FIELD
    try:
        fields = next(reader, None) or []
        index = [fields.index(c) if c in fields else None for c in columns]
        for row in reader:
            if check_fields:
                long = next((v for v in row if len(v) > MAX_CSV_FIELD), None)
                if long is not None:
                    raise _fail(source, reader.line_num,
                                f"a field of {len(long):,} characters; the limit is {MAX_CSV_FIELD:,}")
            if len(row) > len(fields):
                raise _fail(source, reader.line_num, f"more fields than the {len(fields)} columns")
            if not row:
                continue
            yield reader.line_num, [row[i] if i is not None and i < len(row) else "" for i in index]
    except csv.Error as e:
        raise _fail(source, reader.line_num, f"not valid CSV ({printable(e)})") from None


def parse_tuning_csv(text: str, source: str = "<csv>") -> dict[int, CsvPoint]:
    """Per batch size: the winner's and the default's median time (the `confirm` phase, which
    re-measures the finalists, over `screen`), and `floor_us`. Rows without a time are skipped;
    a batch size outside 1..MAX_BATCH or a time that is not a bounded number is a PlanError
    naming `source` and the line."""
    rank = {"confirm": 2, "screen": 1}
    best: dict[tuple[int, str], tuple[int, float]] = {}
    floors: dict[int, float] = {}
    need = {"batch_size", "phase", "median_us", "is_winner"}
    fieldnames = _header(text, source)
    if not need <= set(fieldnames):
        has = printable(", ".join(fieldnames or []))
        raise PlanError(f"measurements CSV {source} lacks the columns {', '.join(sorted(need))} (has: "
                        f"{has[:200] + '...' if len(has) > 200 else has})")
    cols = ("batch_size", "floor_us", "median_us", "phase", "is_winner", "is_default")
    for line, (m_text, floor, median, phase, winner, default) in _rows(text, source, cols):
        m_text = m_text.strip()
        if not _INT_RE.fullmatch(m_text) or not 1 <= int(m_text) <= MAX_BATCH:
            raise _fail(source, line, f"batch_size {shown(m_text)} is not a batch size; valid: an integer in "
                                      f"1..{MAX_BATCH}")
        M = int(m_text)
        f = _num(floor, "floor_us", source, line)
        if f is not None:
            floors[M] = f
        us, r = _num(median, "median_us", source, line), rank.get(phase, 0)
        if us is None or r == 0:
            continue
        for kind, flag in (("winner", winner), ("default", default)):
            if _flag(flag) and r >= best.get((M, kind), (0, 0.0))[0]:
                best[(M, kind)] = (r, us)
    Ms = sorted({M for M, _ in best} | set(floors))
    return {M: CsvPoint(best.get((M, "winner"), (0, None))[1], best.get((M, "default"), (0, None))[1],
                        floors.get(M)) for M in Ms}


def read_tuning_csv(path) -> Optional[dict[int, CsvPoint]]:
    """The measurements CSV at `path` through the input layer (a regular file of at most
    MAX_CSV_BYTES, UTF-8, fields capped, numbers bounded); None when there is no such file
    (nothing measured). PlanError (one line naming the file and line) otherwise."""
    import os

    p = os.fspath(path)
    if not os.path.lexists(p):
        return None
    text = safeio.read_text(p, "measurements CSV", MAX_CSV_BYTES, PlanError)
    return parse_tuning_csv(text, shown(p))


def engine_profiles(path) -> Optional[set[str]]:
    """The engine profiles named in the `engine_profile` column of the measurements CSV at
    `path` (read as `read_tuning_csv` reads it); None when it has no such column."""
    import os

    p = os.fspath(path)
    text = safeio.read_text(p, "measurements CSV", MAX_CSV_BYTES, PlanError)
    if "engine_profile" not in _header(text, shown(p)):
        return None
    return {v for _, (v,) in _rows(text, shown(p), ("engine_profile",)) if v}
