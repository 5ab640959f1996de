"""Tuning tables: read, write (atomically, byte-compatible with the engine), look up.

File content: `{"triton_version": "3.6.0", "1": {six knobs}, "2": {...}, ...}`, written with
`json.dump(indent=4)` plus a trailing newline, batch keys in increasing order.
Imports neither torch nor triton.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from moeplan import safeio
from moeplan.errors import TableError
from moeplan.kernel_config import KNOBS, KernelConfig, knob_problems
from moeplan.naming import nearest_batch_key
from moeplan.tune.space import VALID_WARPS  # pure Python, like this module

MAX_TABLE_BYTES = 1 << 20  # an 18-entry table is about 4 KB


@dataclass
class TuningTable:
    """Batch size M -> kernel config, plus the Triton version it was tuned with."""

    entries: dict[int, KernelConfig] = field(default_factory=dict)
    triton_version: Optional[str] = None

    def batch_sizes(self) -> list[int]:
        return list(self.entries)

    def entry_for(self, M: int) -> tuple[int, KernelConfig]:
        """(key, config) the engine would use for a batch of M tokens."""
        key = nearest_batch_key(list(self.entries), M)
        return key, self.entries[key]

    def to_json(self) -> str:
        obj: dict = {}
        if self.triton_version is not None:
            obj["triton_version"] = self.triton_version
        for m in sorted(self.entries):
            obj[str(m)] = self.entries[m].to_dict()
        return json.dumps(obj, indent=4) + "\n"


def _no_duplicates(source: str):
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise TableError(f"{source}: key {safeio.shown(k)} appears more than once")
            seen.add(k)
        return dict(pairs)
    return hook


def parse_table(text: str, source: str = "<table>") -> TuningTable:
    """Parse table JSON the way the engine does, but strictly: TableError names the problem
    (duplicate keys, illegal knob values and an empty table included)."""
    obj = safeio.parse_json(text, source, TableError, object_pairs_hook=_no_duplicates(source))
    if not isinstance(obj, dict):
        raise TableError(f"{source}: expected a JSON object of batch size -> config, got {type(obj).__name__}")
    version = obj.pop("triton_version", None)
    if version is not None and not isinstance(version, str):
        raise TableError(f"{source}: triton_version {safeio.shown(version)} is not a string")
    entries: dict[int, KernelConfig] = {}
    for key, cfg in obj.items():
        try:
            m = int(key)
        except ValueError:
            raise TableError(f"{source}: key {safeio.shown(key)} is not a batch size (an integer)") from None
        if m < 1 or str(m) != key.strip() or m > safeio.MAX_BATCH:
            raise TableError(f"{source}: key {safeio.shown(key)} is not a positive integer batch size (valid: 1..{safeio.MAX_BATCH})")
        if m in entries:
            raise TableError(f"{source}: batch size {m} appears twice")
        if not isinstance(cfg, dict):
            raise TableError(f"{source}: entry {key!r} is not an object of the six kernel knobs")
        problems = entry_problems(cfg)
        if problems:
            raise TableError(f"{source}: entry {key!r}: {problems[0]}")
        entries[m] = KernelConfig.from_dict(cfg)
    if not entries:
        raise TableError(f"{source}: no batch-size entries")
    return TuningTable(entries, version)


def read_table_text(path: str | os.PathLike) -> str:
    """A table file's text: size-capped, regular file, UTF-8 (moeplan.safeio)."""
    return safeio.read_text(path, "tuning table", MAX_TABLE_BYTES, TableError)


def load_table(path: str | os.PathLike) -> TuningTable:
    return parse_table(read_table_text(path), safeio.shown(os.fspath(path)))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a table must be readable like any file
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_table(path: str | os.PathLike, table: TuningTable) -> None:
    atomic_write_text(path, table.to_json())


# ---- merging ---------------------------------------------------------------------

@dataclass
class MergeResult:
    table: TuningTable
    added: list[int]
    replaced: list[int]  # batch sizes whose config changed
    unchanged: list[int]  # batch sizes present in both with the same config


def merge_tables(existing: TuningTable, new: TuningTable, replace: bool = False) -> MergeResult:
    """Merge `new` entries into `existing`.

    Without `replace`, a batch size present in both with a different config is refused
    (TableError naming them); with it, `new` wins. The merged table takes `new`'s Triton version.
    """
    added = sorted(m for m in new.entries if m not in existing.entries)
    same = sorted(m for m in new.entries if m in existing.entries and existing.entries[m] == new.entries[m])
    clash = sorted(m for m in new.entries if m in existing.entries and existing.entries[m] != new.entries[m])
    if clash and not replace:
        raise TableError(f"the existing table already has different configs for batch sizes "
                         f"{', '.join(map(str, clash))}; pass --force to replace it")
    if (existing.triton_version and new.triton_version and existing.triton_version != new.triton_version
            and not replace):
        raise TableError(f"the existing table was tuned with Triton {existing.triton_version}, this run with "
                         f"{new.triton_version}; pass --force to replace it rather than mix versions")
    entries = dict(existing.entries)
    entries.update(new.entries)
    version = new.triton_version or existing.triton_version
    return MergeResult(TuningTable({m: entries[m] for m in sorted(entries)}, version), added, clash, same)


# ---- verification (for CI) -----------------------------------------------------------

def _pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


@functools.lru_cache(maxsize=1)
def engine_limits() -> dict[str, tuple[int, int]]:
    """(lowest, highest) value of each knob the engine's kernel runs, over every engine profile.

    Block sizes are powers of two: BLOCK_SIZE_M from the smallest any profile tunes (8),
    BLOCK_SIZE_N/K from 16 (tl.dot's minimum), each up to the largest any profile tunes.
    GROUP_SIZE_M and num_stages go up to the largest tuned value; num_warps is one of
    VALID_WARPS (tune/space.py).
    """
    from moeplan.engine import PROFILES

    union = {k: sorted({v for p in PROFILES.values() for v in p.domains()[k]}) for k in KNOBS}
    return {
        "BLOCK_SIZE_M": (union["BLOCK_SIZE_M"][0], union["BLOCK_SIZE_M"][-1]),
        "BLOCK_SIZE_N": (16, union["BLOCK_SIZE_N"][-1]),
        "BLOCK_SIZE_K": (16, union["BLOCK_SIZE_K"][-1]),
        "GROUP_SIZE_M": (1, union["GROUP_SIZE_M"][-1]),
        "num_warps": (min(VALID_WARPS), max(VALID_WARPS)),
        "num_stages": (1, union["num_stages"][-1]),
    }


def entry_problems(cfg, strict: bool = False) -> list[str]:
    """Why one table entry is not a config the kernel runs (empty: it is one). Always: the six
    knobs as positive integers, block sizes powers of two, num_warps one of VALID_WARPS;
    `strict` also: every knob within `engine_limits()`."""
    if not isinstance(cfg, dict):
        return ["is not an object of the six kernel knobs"]
    problems = knob_problems(cfg)
    for k in KNOBS:
        v = cfg.get(k)
        if k not in cfg or isinstance(v, bool) or not isinstance(v, int) or v < 1:
            continue  # reported above
        if k.startswith("BLOCK_SIZE") and not _pow2(v):
            problems.append(f"{k}={safeio.shown(v)} is not a power of two")
        elif k == "num_warps" and v not in VALID_WARPS:
            problems.append(f"num_warps={safeio.shown(v)} is not one of {', '.join(map(str, VALID_WARPS))}")
        elif strict:
            lo, hi = engine_limits()[k]
            if not lo <= v <= hi:
                what = "a power of two in" if k.startswith("BLOCK_SIZE") else "in"
                problems.append(f"{k}={safeio.shown(v)} is outside what the engine's kernel runs "
                                f"(valid: {what} {lo}..{hi})")
    return problems


def verify_table_text(name: str, text: str, strict_format: bool = False, check_name: bool = True,
                      within_engine: Optional[bool] = None) -> list[str]:
    """Every problem of one table file (empty list = fine): name grammar, JSON, keys, values,
    duplicates and key order. `strict_format` also requires every knob within the engine's
    limits (`engine_limits`; `within_engine` asks for that alone) and the exact bytes moeplan
    writes."""
    within = strict_format if within_engine is None else within_engine
    from moeplan.naming import parse_tuning_file_name

    problems: list[str] = []
    if check_name:
        try:
            parse_tuning_file_name(name)
        except TableError as e:
            problems.append(str(e))
    dupes: list[str] = []

    def pairs_hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                dupes.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        obj = safeio.parse_json(text, "table", TableError, object_pairs_hook=pairs_hook)
    except TableError as e:
        return problems + [str(e).removeprefix("table: ")]
    for k in dupes:
        problems.append(f"key {safeio.shown(k)} appears more than once")
    if not isinstance(obj, dict):
        return problems + [f"expected a JSON object of batch size -> config, got {type(obj).__name__}"]
    version = obj.get("triton_version")
    if "triton_version" in obj and not isinstance(version, str):
        problems.append(f"triton_version {safeio.shown(version)} is not a string")
    batch_keys: list[int] = []
    for key, cfg in obj.items():
        if key == "triton_version":
            continue
        try:
            m = int(key)
            if m < 1 or str(m) != key or m > safeio.MAX_BATCH:
                raise ValueError
        except ValueError:
            problems.append(f"key {safeio.shown(key)} is not a positive integer batch size (valid: 1..{safeio.MAX_BATCH})")
            continue
        batch_keys.append(m)
        problems.extend(f"entry {key!r}: {p}" for p in entry_problems(cfg, within))
        if isinstance(cfg, dict) and set(cfg) == set(KNOBS) and list(cfg) != list(KNOBS):
            problems.append(f"entry {key!r}: knobs are not in the order {', '.join(KNOBS)}")
    if not batch_keys:
        problems.append("no batch-size entries")
    if batch_keys != sorted(batch_keys):
        problems.append(f"batch sizes are not in increasing order ({', '.join(map(str, batch_keys))})")
    if strict_format and not problems:
        canon = parse_table(text, name).to_json()
        if "triton_version" in obj and list(obj)[0] != "triton_version":
            problems.append("triton_version is not the first key")
        elif canon != text:
            problems.append("not in the canonical format (json.dump indent=4 plus a trailing newline)")
    return problems


def verify_folder(folder: str | os.PathLike, strict_format: bool = False) -> dict[str, list[str]]:
    """Problems of every `*.json` table in a folder (not recursive), by file name.

    Raises TableError when the folder does not exist or holds no tables.
    """
    safeio.check_path("folder", os.fspath(folder), "a folder of tuning tables", TableError)
    d = Path(folder)
    if not d.is_dir():
        raise TableError(f"{safeio.shown(os.fspath(folder))} is not a folder; pass a folder of tuning tables")
    try:
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".json")
    except OSError as e:
        raise TableError(f"cannot list {safeio.shown(os.fspath(folder))}: {e.strerror or e}") from None
    if not files:
        raise TableError(f"{safeio.shown(os.fspath(folder))} holds no .json tuning tables")
    out: dict[str, list[str]] = {}
    for p in files:
        try:
            text = read_table_text(p)
        except TableError as e:
            out[p.name] = [str(e)]
            continue
        out[p.name] = verify_table_text(p.name, text, strict_format)
    return out
