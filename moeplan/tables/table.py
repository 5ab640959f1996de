"""Tuning tables: read, write (atomically, byte-compatible with the engine), merge, look up an entry.

File content: `{"triton_version": "3.6.0", "1": {six knobs}, "2": {...}, ...}`, written with
`json.dump(indent=4)` plus a trailing newline, batch keys in increasing order.
SGLang tables (`engine="sglang"`) never carry `triton_version` (SGLang `int()`s every key and
crashes on it; the Triton version is the folder's name) and may carry `USE_TMA` per entry.
Imports neither torch nor triton.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from moeplan.base import safeio
from moeplan.base.errors import TableError
from moeplan.engines.knobs import KernelConfig
from moeplan.engines.limits import entry_problems
from moeplan.engines.vllm import nearest_batch_key

MAX_TABLE_BYTES = safeio.MAX_JSON_BYTES  # 4 MiB, as every JSON input (an 18-entry table is about 4 KB)


@dataclass
class TuningTable:
    """Batch size M -> kernel config, plus the Triton version it was tuned with."""

    entries: dict[int, KernelConfig] = field(default_factory=dict)
    triton_version: Optional[str] = None
    engine: str = "vllm"  # "sglang": no triton_version key is ever written; entries may carry extras
    extras: dict[int, dict] = field(default_factory=dict)  # SGLang: USE_TMA (and launch options) per entry

    def batch_sizes(self) -> list[int]:
        return list(self.entries)

    def entry_for(self, M: int) -> tuple[int, KernelConfig]:
        """(key, config) the engine would use for a batch of M tokens."""
        key = nearest_batch_key(list(self.entries), M)
        return key, self.entries[key]

    def to_json(self) -> str:
        obj: dict = {}
        if self.triton_version is not None and self.engine != "sglang":
            obj["triton_version"] = self.triton_version
        for m in sorted(self.entries):
            obj[str(m)] = {**self.entries[m].to_dict(), **self.extras.get(m, {})}
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


# What an SGLang entry may hold beside the six knobs (popped before launch or passed to it).
SGLANG_EXTRAS = ("USE_TMA", "num_ctas")
SGLANG_LAUNCH_DEFAULTS = {"num_warps": 4, "num_stages": 3}  # Triton's, for entries that omit them


def parse_table(text: str, source: str = "<table>", engine: str = "vllm") -> TuningTable:
    """Parse table JSON the way the engine does, but strictly: TableError names the problem
    (duplicate keys, illegal knob values and an empty table included). `engine="sglang"`:
    SGLang's rules (`triton_version` refused, `USE_TMA` kept, omitted warps/stages defaulted)."""
    obj = safeio.parse_json(text, source, TableError, object_pairs_hook=_no_duplicates(source))
    if not isinstance(obj, dict):
        raise TableError(f"{source}: expected a JSON object of batch size -> config, got {type(obj).__name__}")
    if engine == "sglang" and "triton_version" in obj:
        raise TableError(f"{source}: has a triton_version key, which SGLang int()s and crashes on at the first MoE "
                         "call; remove it (SGLang reads the Triton version from the folder name)")
    extras: dict[int, dict] = {}
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
        if engine == "sglang":
            extra = {k: cfg[k] for k in SGLANG_EXTRAS if k in cfg}
            if "USE_TMA" in extra and not isinstance(extra["USE_TMA"], bool):
                raise TableError(f"{source}: entry {key!r}: USE_TMA={safeio.shown(extra['USE_TMA'])} is not true/false")
            cfg = {**SGLANG_LAUNCH_DEFAULTS, **{k: v for k, v in cfg.items() if k not in SGLANG_EXTRAS}}
            if extra:
                extras[m] = extra
        problems = entry_problems(cfg)
        if problems:
            raise TableError(f"{source}: entry {key!r}: {problems[0]}")
        entries[m] = KernelConfig.from_dict(cfg)
    if not entries:
        raise TableError(f"{source}: no batch-size entries")
    return TuningTable(entries, version, engine, extras)


def read_table_text(path: str | os.PathLike) -> str:
    """A table file's text: size-capped, regular file, UTF-8 (moeplan.safeio)."""
    return safeio.read_text(path, "tuning table", MAX_TABLE_BYTES, TableError)


def load_table(path: str | os.PathLike, engine: str = "vllm") -> TuningTable:
    return parse_table(read_table_text(path), safeio.shown(os.fspath(path)), engine)


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
    # an entry's extras (USE_TMA) belong to its config: a replaced entry takes the new ones only
    extras = {**{m: e for m, e in existing.extras.items() if m not in new.entries}, **new.extras}
    version = new.triton_version or existing.triton_version
    merged = TuningTable({m: entries[m] for m in sorted(entries)}, version, new.engine,
                         {m: extras[m] for m in sorted(extras) if m in entries})
    return MergeResult(merged, added, clash, same)
