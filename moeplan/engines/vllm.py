"""Tuning-file names and the engine's lookup rules (pure: no I/O, no torch).

Name: `E={E},N={N},device_name={DEVICE}[,dtype={X}][,block_shape=[bn,bk]].json`
  E  experts on the device, N intermediate size per TP shard (the last dim of w2).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional, Sequence

from moeplan.errors import TableError
from moeplan.safeio import MAX_DEVICE_NAME, check_device_name, shown

ENV_TUNED_FOLDER = "VLLM_TUNED_CONFIG_FOLDER"
UNKNOWN_DEVICE = "<unknown>"

_NAME_RE = re.compile(
    r"^E=(?P<E>[1-9]\d{0,8}),N=(?P<N>[1-9]\d{0,8}),device_name=(?P<device>[A-Za-z0-9][A-Za-z0-9_.()+\-]{0,%d})"
    % (MAX_DEVICE_NAME - 1) +
    r"(?:,dtype=(?P<dtype>[A-Za-z0-9_]+))?"
    r"(?:,block_shape=\[(?P<bn>[1-9]\d{0,8}),(?P<bk>[1-9]\d{0,8})\])?\.json$"
)
KNOWN_DTYPES = ("fp8_w8a8", "fp8_w8a16", "int8_w8a16", "int4_w4a16", "float32")


def normalize_device_name(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `NVIDIA_H100_80GB_HBM3`; any name with an `H200` token -> `NVIDIA_H200`.

    Names from users or GPUs pass `safeio.check_device_name` first (`tuning_file_name` checks),
    so nothing that changes the file-name grammar reaches a file name."""
    out = re.sub(r"[\s/]+", "_", name.strip())
    if any(tok == "H200" for tok in out.split("_")):
        return "NVIDIA_H200"
    return out


def block_selector(block_shape: Optional[Sequence[int]]) -> str:
    if block_shape is None or not all(block_shape):
        return ""
    return ",block_shape=" + str([int(v) for v in block_shape]).replace(" ", "")


def tuning_file_name(E: int, N: int, device_name: str, dtype: Optional[str] = None,
                     block_shape: Optional[Sequence[int]] = None) -> str:
    """The exact file name the engine looks up. `device_name` is checked against the device-name
    grammar (InputError naming it) and normalised here."""
    if device_name != UNKNOWN_DEVICE:
        check_device_name(device_name, "device name")
    dtype_sel = f",dtype={dtype}" if dtype else ""
    return f"E={E},N={N},device_name={normalize_device_name(device_name)}{dtype_sel}{block_selector(block_shape)}.json"


def parse_tuning_file_name(name: str) -> dict:
    """Split a file name into E, N, device, dtype, block_shape; TableError if it breaks the grammar."""
    m = _NAME_RE.match(name)
    if not m:
        raise TableError(
            f"file name {shown(name)} does not follow E=<int>,N=<int>,device_name=<NAME>[,dtype=<X>]"
            "[,block_shape=[bn,bk]].json (NAME: letters, digits and _ . ( ) + -)")
    dtype = m.group("dtype")
    if dtype is not None and dtype not in KNOWN_DTYPES:
        raise TableError(f"file name {shown(name)} has dtype {dtype!r}; valid: {', '.join(KNOWN_DTYPES)}")
    block = [int(m.group("bn")), int(m.group("bk"))] if m.group("bn") else None
    return {"E": int(m.group("E")), "N": int(m.group("N")), "device": m.group("device"),
            "dtype": dtype, "block_shape": block}


def lookup_candidates(file_name: str, tuned_dirs: Iterable[str] = (),
                      env: Optional[Mapping[str, str]] = None) -> list[str]:
    """Paths the lookup tries, in order: $VLLM_TUNED_CONFIG_FOLDER first, then each tuned dir.

    (The engine then tries its bundled configs folder; moeplan's `--tuned-dir`s stand in for it.)
    """
    dirs: list[str] = []
    if env and env.get(ENV_TUNED_FOLDER):
        dirs.append(env[ENV_TUNED_FOLDER])
    dirs.extend(tuned_dirs)
    seen, out = set(), []
    for d in dirs:
        p = d.rstrip("/") + "/" + file_name
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def nearest_batch_key(keys: Sequence[int], M: int) -> int:
    """The entry the engine uses for M tokens: nearest key, ties to the earlier key in file order."""
    if not keys:
        raise TableError("tuning table has no batch-size entries")
    return min(keys, key=lambda k: abs(k - M))
