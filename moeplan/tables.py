"""Tuning tables: read, write (atomically, byte-compatible with the engine), look up.

File content: `{"triton_version": "3.6.0", "1": {six knobs}, "2": {...}, ...}`, written with
`json.dump(indent=4)` plus a trailing newline, batch keys in increasing order.
Imports neither torch nor triton.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from moeplan.errors import TableError
from moeplan.kernel_config import KernelConfig
from moeplan.naming import nearest_batch_key


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


def parse_table(text: str, source: str = "<table>") -> TuningTable:
    """Parse table JSON the way the engine does, but strictly: TableError names the problem."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TableError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise TableError(f"{source}: expected a JSON object of batch size -> config, got {type(obj).__name__}")
    version = obj.pop("triton_version", None)
    if version is not None and not isinstance(version, str):
        raise TableError(f"{source}: triton_version {version!r} is not a string")
    entries: dict[int, KernelConfig] = {}
    for key, cfg in obj.items():
        try:
            m = int(key)
        except ValueError:
            raise TableError(f"{source}: key {key!r} is not a batch size (an integer)") from None
        if m < 1 or str(m) != key.strip():
            raise TableError(f"{source}: key {key!r} is not a positive integer batch size")
        if m in entries:
            raise TableError(f"{source}: batch size {m} appears twice")
        if not isinstance(cfg, dict):
            raise TableError(f"{source}: entry {key!r} is not an object of the six kernel knobs")
        try:
            entries[m] = KernelConfig.from_dict(cfg)
        except TableError as e:
            raise TableError(f"{source}: entry {key!r}: {e}") from None
    return TuningTable(entries, version)


def load_table(path: str | os.PathLike) -> TuningTable:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TableError(f"cannot read tuning table {str(p)!r}: {e.strerror or e}") from None
    return parse_table(text, str(p))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent))
    try:
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
