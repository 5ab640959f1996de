"""The GPU time to tune a matrix's tables still to make (missing + stale), from moeplan's own
measured tuning times.

Model: a table's measured wall time is the largest `t_s` (seconds since the tuning job started)
in its CSV. Tables are grouped by scheme family (16-bit: bf16/fp16/fp32; 8-bit block: fp8/int8
with block scales; 8-bit: per-channel/tensor 8-bit; other). Each table to make costs the median
measured wall time of its family on the same device, else on any device, else the median of all
measurements; the total is divided over `gpus` GPUs (tables are tuned one per GPU at a time).

Pure: reads CSVs only when called; no torch/triton.
"""

from __future__ import annotations

import csv
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

FAMILIES = ("16-bit", "8-bit block", "8-bit", "other")
HOW = ("median measured wall time (last t_s of each tuned CSV) of the table's scheme family on the same device "
       "(else any device), times the tables, over the GPUs")


def family(scheme: str, block: bool) -> str:
    if scheme in ("bf16", "fp16", "fp32"):
        return "16-bit"
    if scheme in ("fp8_w8a8", "int8_w8a8", "fp8_w8a16", "int8_w8a16"):
        return "8-bit block" if block else "8-bit"
    return "other"


def _from_name(name: str) -> tuple[str, str]:
    """(device, family) of a table file name (`E=..,N=..,device_name=D[,dtype=S][,block_shape=[..]]`)."""
    dev = re.search(r"device_name=([^,]+?)(?:,|\.(?:json|csv)$|$)", name)
    dt = re.search(r"dtype=([^,.]+)", name)
    return (dev.group(1) if dev else "?"), family(dt.group(1) if dt else "bf16", "block_shape=" in name)


def measured(folders: Iterable[str]) -> list[tuple[str, str, float]]:
    """(device, family, wall seconds) of every tuned CSV directly in `folders` (unreadable ones skipped)."""
    out, seen = [], set()
    for d in folders:
        p = Path(d)
        if not p.is_dir():
            continue
        for f in sorted(p.glob("*.csv")):
            if f.name in seen:
                continue
            try:
                with f.open(newline="") as fh:
                    ts = [float(r["t_s"]) for r in csv.DictReader(fh) if r.get("t_s")]
            except (OSError, ValueError, KeyError, csv.Error, UnicodeDecodeError):
                continue
            if ts:
                seen.add(f.name)
                out.append((*_from_name(f.name), max(ts)))
    return out


@dataclass(frozen=True)
class Estimate:
    tables: int
    gpu_s: float  # total GPU seconds
    gpus: int
    samples: int  # measured tables behind it

    @property
    def wall_s(self) -> float:
        return self.gpu_s / self.gpus if self.tables else 0.0

    def to_dict(self) -> dict:
        return {"tables": self.tables, "gpu_seconds": round(self.gpu_s), "gpus": self.gpus,
                "wall_seconds": round(self.wall_s), "measured_tables": self.samples, "model": HOW}


def estimate(todo: Iterable[tuple[str, str]], samples: list[tuple[str, str, float]], gpus: int = 8) -> Optional[Estimate]:
    """`todo`: (normalized device, family) per table to make. None when nothing was ever measured."""
    todo = list(todo)
    if not samples:
        return None
    everything = statistics.median(s for _, _, s in samples)
    total = 0.0
    for dev, fam in todo:
        same = [s for d, f, s in samples if d == dev and f == fam]
        anyd = [s for _, f, s in samples if f == fam]
        total += statistics.median(same) if same else statistics.median(anyd) if anyd else everything
    return Estimate(len(todo), total, max(1, gpus), len(samples))


def fmt_duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
