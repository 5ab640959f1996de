"""Measurement records, the in-memory result store, and the on-disk checkpoint.

A checkpoint is a folder `<out>/.moeplan-tune/<table stem>.<job hash>/` holding
  meta.json           the job's identity (atomically written once) and, when done, its result
  records.jsonl       one JSON line per measured (phase, M, config) point, appended and
                      fsync'ed as soon as the worker reports it; a torn last line (kill -9
                      during the write) is ignored on load, so each record is all-or-nothing
  routing.pt          the routing pools (topk ids) every worker measures with (torch.save)

Pure Python except for the routing file, which the caller writes/reads with torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.tables.table import atomic_write_text

PHASES = ("screen", "confirm", "check", "ab", "ab_more")
# GEMM2's own table (SGLang `_down`): its search's phases are these with this prefix (down_screen...)
DOWN_PREFIX = "down_"
OK = "ok"


@dataclass(frozen=True)
class Record:
    """One measured point. status: ok | compile_error | out_of_resources | oom | crash | timeout | error | wrong.

    An `ab` record's median/min/max are the candidate's over its rounds; `rounds` holds every
    round's pair of medians (the candidate's, the default's)."""

    phase: str
    M: int
    config: KernelConfig
    status: str
    median_us: Optional[float] = None
    min_us: Optional[float] = None
    max_us: Optional[float] = None
    n: int = 0
    error: str = ""
    gpu: Optional[int] = None
    first_ms: Optional[float] = None  # the config's first call at M (kernel compile/load when not compiled ahead)
    t_s: Optional[float] = None  # seconds since this run of the job started
    rss_mb: Optional[float] = None  # the worker's resident memory after this point
    rounds: Optional[tuple] = None  # phase ab: ((candidate_us, default_us), ...) per interleaved round

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def score(self) -> float:
        """Median time in us; infinity when the point failed."""
        return self.median_us if self.ok and self.median_us is not None else float("inf")

    def to_json(self) -> dict:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        d = dict(d)
        d["config"] = KernelConfig.from_dict(d["config"])
        if d.get("rounds") is not None:
            d["rounds"] = tuple((float(a), float(b)) for a, b in d["rounds"])
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


class ResultStore:
    """(phase, M, config) -> Record, in arrival order."""

    def __init__(self, records: Iterable[Record] = ()):
        self._by_key: dict[tuple[str, int, KernelConfig], Record] = {}
        for r in records:
            self.add(r)

    def add(self, r: Record) -> None:
        self._by_key[(r.phase, r.M, r.config)] = r

    def get(self, phase: str, M: int, cfg: KernelConfig) -> Optional[Record]:
        return self._by_key.get((phase, M, cfg))

    def has(self, phase: str, M: int, cfg: KernelConfig) -> bool:
        return (phase, M, cfg) in self._by_key

    def at(self, phase: str, M: int) -> list[Record]:
        return [r for (p, m, _), r in self._by_key.items() if p == phase and m == M]

    def ranked(self, phase: str, M: int) -> list[Record]:
        """Successful records of a phase at M, fastest first (ties by config order)."""
        return sorted((r for r in self.at(phase, M) if r.ok), key=lambda r: (r.score, r.config))

    def failed_configs(self) -> set[KernelConfig]:
        """Configs that crashed their worker or timed out anywhere: never retried."""
        return {r.config for r in self._by_key.values() if r.status in ("crash", "timeout")}

    def __iter__(self) -> Iterator[Record]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def job_hash(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Checkpoint:
    """The on-disk progress of one table's tuning job."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta_path = self.folder / "meta.json"
        self.records_path = self.folder / "records.jsonl"
        self.routing_path = self.folder / "routing.pt"
        self._fh = None
        self.made: list[Path] = []  # the folders this process created for it (moeplan.base.ledger), outermost first

    @classmethod
    def for_job(cls, out_dir: Path, table_file: str, identity: dict) -> "Checkpoint":
        stem = table_file[:-5] if table_file.endswith(".json") else table_file
        return cls(Path(out_dir) / ".moeplan-tune" / f"{stem}.{job_hash(identity)}")

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def reset(self) -> None:
        self.close()
        if self.folder.exists():
            shutil.rmtree(self.folder)

    def start(self, identity: dict) -> None:
        from moeplan.base.ledger import make_dirs

        self.made += make_dirs(self.folder)
        if not self.meta_path.is_file():
            atomic_write_text(self.meta_path, json.dumps({"identity": identity}, indent=2, sort_keys=True) + "\n")

    def meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def update_meta(self, **fields) -> None:
        m = self.meta()
        m.update(fields)
        atomic_write_text(self.meta_path, json.dumps(m, indent=2, sort_keys=True) + "\n")

    def load_records(self) -> list[Record]:
        out = []
        try:
            lines = self.records_path.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Record.from_json(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError, ValueError, Exception):
                continue  # a torn line from a killed run: that point is measured again
        return out

    def append(self, records: Iterable[Record]) -> None:
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # A torn last line (no newline) must not swallow the next record.
            needs_nl = False
            if self.records_path.is_file() and self.records_path.stat().st_size:
                with open(self.records_path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_nl = f.read(1) != b"\n"
            self._fh = open(self.records_path, "a")
            if needs_nl:
                self._fh.write("\n")
        for r in records:
            self._fh.write(json.dumps(r.to_json(), separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard_made(self) -> None:
        """A failed run's clean-up (its table's lock held): remove the checkpoint folder if this
        process created it, and the shared folders it created above it if they are empty."""
        from moeplan.base.ledger import remove_empty

        self.close()
        if self.folder in self.made:
            shutil.rmtree(self.folder, ignore_errors=True)
        remove_empty([d for d in self.made if d != self.folder])
        self.made = []


def config_key(cfg: KernelConfig) -> list[int]:
    return [getattr(cfg, k) for k in KNOBS]
