"""What changed between two tuning tables, or two folders of them matched by file name.

Per batch size M: the entry changed (and which knobs), is only on one side, or is the same.
Pure: `diff_tables` compares parsed tables; `diff_paths` reads the files it is given.
No torch/triton.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from moeplan.base.errors import TableError
from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.tables.table import TuningTable, load_table
from moeplan.tables.verify import table_engine

SAME, CHANGED, ONLY_A, ONLY_B = "same", "changed", "only_a", "only_b"


@dataclass(frozen=True)
class EntryChange:
    M: int
    change: str  # same | changed | only_a | only_b
    a: Optional[KernelConfig]
    b: Optional[KernelConfig]
    extra_a: tuple = ()  # SGLang entries' other keys (USE_TMA...) as sorted (key, value) pairs
    extra_b: tuple = ()

    @property
    def knobs(self) -> dict[str, tuple]:
        """Knob -> (A's value, B's value), for the knobs that differ; an SGLang entry's other keys
        (USE_TMA) count too, a missing one shown as None."""
        if self.a is None or self.b is None:
            return {}
        da, db = self.a.to_dict(), self.b.to_dict()
        out = {k: (da[k], db[k]) for k in KNOBS if da[k] != db[k]}
        ea, eb = dict(self.extra_a), dict(self.extra_b)
        out.update({k: (ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)})
        return out

    def to_dict(self) -> dict:
        return {"M": self.M, "change": self.change, "a": self.a.to_dict() if self.a else None,
                "b": self.b.to_dict() if self.b else None, "knobs": {k: list(v) for k, v in self.knobs.items()}}


@dataclass(frozen=True)
class TableDiff:
    file_name: str
    a_path: str
    b_path: str
    triton_a: Optional[str]
    triton_b: Optional[str]
    entries: tuple[EntryChange, ...]

    @property
    def identical(self) -> bool:
        return self.triton_a == self.triton_b and all(e.change == SAME for e in self.entries)

    def count(self, change: str) -> int:
        return sum(1 for e in self.entries if e.change == change)

    def to_dict(self) -> dict:
        return {"file_name": self.file_name, "a": self.a_path, "b": self.b_path,
                "triton_version": {"a": self.triton_a, "b": self.triton_b}, "identical": self.identical,
                "batch_sizes": [e.to_dict() for e in self.entries]}


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    tables: tuple[TableDiff, ...]
    only_a: tuple[str, ...] = ()  # file names only in folder A
    only_b: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return not self.only_a and not self.only_b and all(t.identical for t in self.tables)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "identical": self.identical, "tables": [t.to_dict() for t in self.tables],
                "only_a": list(self.only_a), "only_b": list(self.only_b)}


def diff_entries(a: TuningTable, b: TuningTable) -> tuple[EntryChange, ...]:
    out = []
    for M in sorted(set(a.entries) | set(b.entries)):
        ca, cb = a.entries.get(M), b.entries.get(M)
        xa, xb = tuple(sorted(a.extras.get(M, {}).items())), tuple(sorted(b.extras.get(M, {}).items()))
        change = ONLY_B if ca is None else ONLY_A if cb is None else SAME if (ca, xa) == (cb, xb) else CHANGED
        out.append(EntryChange(M, change, ca, cb, xa, xb))
    return tuple(out)


def diff_tables(name: str, a_path: str, a: TuningTable, b_path: str, b: TuningTable) -> TableDiff:
    return TableDiff(name, a_path, b_path, a.triton_version, b.triton_version, diff_entries(a, b))


def engine_choices(t: TableDiff) -> dict[int, tuple[KernelConfig, KernelConfig]]:
    """For every batch size either side names: the config each side's engine would run at that M
    (its own entry, or its nearest key's), where the two differ. What `diff --measure` times."""
    from moeplan.engines.vllm import nearest_batch_key

    a = {e.M: e.a for e in t.entries if e.a is not None}
    b = {e.M: e.b for e in t.entries if e.b is not None}
    out = {}
    for e in t.entries:
        ca, cb = a[nearest_batch_key(list(a), e.M)], b[nearest_batch_key(list(b), e.M)]
        if ca != cb:
            out[e.M] = (ca, cb)
    return out


def _tables_in(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix == ".json"}


def diff_paths(a: str | os.PathLike, b: str | os.PathLike) -> Diff:
    """Two table files, or two folders (tables matched by file name). TableError on bad input."""
    pa, pb = Path(a), Path(b)
    for p, side in ((pa, "A"), (pb, "B")):
        if not p.exists():
            raise TableError(f"{side} {str(p)!r} does not exist; pass two tuning tables or two folders of them")
    if pa.is_dir() != pb.is_dir():
        raise TableError(f"{str(pa)!r} and {str(pb)!r} are not both files or both folders; pass two tuning "
                         "tables or two folders of them")
    if not pa.is_dir():
        return Diff(str(pa), str(pb), (diff_tables(pa.name if pa.name == pb.name else f"{pa.name} | {pb.name}",
                                                   str(pa), load_table(pa, table_engine(pa)), str(pb), load_table(pb, table_engine(pb))),))
    ta, tb = _tables_in(pa), _tables_in(pb)
    if not ta and not tb:
        raise TableError(f"neither {str(pa)!r} nor {str(pb)!r} holds .json tuning tables")
    both = sorted(set(ta) & set(tb))
    tables = tuple(diff_tables(n, str(ta[n]), load_table(ta[n], table_engine(ta[n])), str(tb[n]),
                                 load_table(tb[n], table_engine(tb[n]))) for n in both)
    return Diff(str(pa), str(pb), tables, tuple(sorted(set(ta) - set(tb))), tuple(sorted(set(tb) - set(ta))))


def describe(d: Diff, wide: bool = True) -> list[str]:
    """The human report, one line per fact; `wide` False: a table's file name on a line of its own
    and its summary under it (for a narrow terminal)."""
    lines = []
    for t in d.tables:
        n = len(t.entries)
        head = (f"{t.count(CHANGED)} of {n} batch size(s) changed, {t.count(ONLY_A)} only in A, "
                f"{t.count(ONLY_B)} only in B")
        if t.triton_a != t.triton_b:
            head += f"; triton_version {t.triton_a} -> {t.triton_b}"
        lines.extend([f"{t.file_name}: {head}"] if wide else [t.file_name, f"  {head}"])
        for e in t.entries:
            if e.change == CHANGED:
                knobs = ", ".join(f"{k} {va} -> {vb}" for k, (va, vb) in e.knobs.items())
                lines.append(f"  M={e.M}: {knobs}")
            elif e.change == ONLY_A:
                lines.append(f"  M={e.M}: only in A ({e.a.short()})")
            elif e.change == ONLY_B:
                lines.append(f"  M={e.M}: only in B ({e.b.short()})")
    for name in d.only_a:
        lines.extend([f"{name}: only in A"] if wide else [name, "  only in A"])
    for name in d.only_b:
        lines.extend([f"{name}: only in B"] if wide else [name, "  only in B"])
    lines.append("identical" if d.identical else
                 f"{sum(1 for t in d.tables if not t.identical) + len(d.only_a) + len(d.only_b)} table(s) differ")
    return lines
