"""vLLM: its fused-MoE engine profiles (which releases do what), its default-config heuristic,
its tuning-file names and lookup rules, and where an installed vLLM keeps its shipped tables.

Name: `E={E},N={N},device_name={DEVICE}[,dtype={X}][,block_shape=[bn,bk]].json`
  E  experts on the device, N intermediate size per TP shard (the last dim of w2).
Letters: M tokens in the batch, K hidden size, topk experts per token.

Pure: no I/O at import, no torch. Finding the installed vLLM reads package metadata only
(never `import vllm`).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping, Optional, Sequence

from moeplan.base.errors import TableError
from moeplan.base.safeio import MAX_DEVICE_NAME, check_device_name, shown
from moeplan.engines.knobs import KernelConfig
from moeplan.engines.profile import EP_ALIGN_DROP, EP_ALIGN_PAD, EngineProfile

# The batch sizes of the engine's tuning script and shipped tables (spec: search_space.md).
ENGINE_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)

# The engine's tuning-script domains (spec: search_space.md), BLOCK_SIZE_M apart.
_BASE_DOMAINS = tuple({
    "BLOCK_SIZE_N": (32, 64, 128, 256),
    "BLOCK_SIZE_K": (64, 128, 256),
    "GROUP_SIZE_M": (1, 16, 32, 64),
    "num_warps": (4, 8),
    "num_stages": (2, 3, 4, 5),
}.items())

ENGINE_DISTRIBUTION = "vllm"
ENGINE_CONFIG_SUBDIR = ("vllm", "model_executor", "layers", "fused_moe", "configs")


HEURISTICS = ("2025", "2026")  # the default-config rules (`default_config`); a profile names one


# Release ranges from the engine's public history (docs/engine_profiles.md has the pull
# requests): the EP drop came with 0.13 (direct path only), naive assignment with 0.14/0.20,
# the 2026 default rule with 0.17, the swap and BLOCK_SIZE_M = 8 tables with 0.25; the
# modular path the engine runs still padded EP pairs through 0.28, and 0.33 drops them.
# Releases between two ranges (0.13 - 0.24, 0.29 - 0.32) get the older profile and a warning.
PROFILES: dict[str, EngineProfile] = {
    p.name: p for p in (
        EngineProfile(
            name="vllm-0.12",
            releases="vLLM 0.10.0 - 0.12.x: align always runs, EP pairs padded into -1 tiles, no operand swap, "
                     "BLOCK_SIZE_M from 16, the 2025 default rule",
            first=(0, 10), last=(0, 12),
            swap_ab=False, naive_assignment=False, ep_align=EP_ALIGN_PAD,
            block_m=(16, 32, 64, 128, 256), heuristic="2025", base_domains=_BASE_DOMAINS),
        EngineProfile(
            name="vllm-0.25",
            releases="vLLM 0.25.0 - 0.28.x: operand swap, naive assignment, BLOCK_SIZE_M from 8, EP pairs "
                     "still padded into -1 tiles",
            first=(0, 25), last=(0, 28),
            swap_ab=True, naive_assignment=True, ep_align=EP_ALIGN_PAD,
            block_m=(8, 16, 32, 64, 128, 256), heuristic="2026", block_tiles="divides", base_domains=_BASE_DOMAINS),
        EngineProfile(
            name="vllm-0.33",
            releases="vLLM 0.33.x: operand swap, naive assignment, EP pairs dropped, BLOCK_SIZE_M from 8 "
                     "(spec: engine_kernel_current.md)",
            first=(0, 33), last=None,
            swap_ab=True, naive_assignment=True, ep_align=EP_ALIGN_DROP,
            block_m=(8, 16, 32, 64, 128, 256), heuristic="2026", block_tiles="divides", base_domains=_BASE_DOMAINS),
    )
}
assert all(p.heuristic in HEURISTICS for p in PROFILES.values())


def installed_engine_version(find: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
    """The installed `vllm` distribution's version from its metadata (never imports it)."""
    if find is not None:
        return find(ENGINE_DISTRIBUTION)
    from importlib import metadata
    try:
        return metadata.version(ENGINE_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - broken metadata counts as not installed
        return None


def engine_config_dir() -> Optional[str]:
    """The installed engine's folder of shipped tuning tables, found from its distribution's
    files (never by importing it); None when the engine is not installed or has no such folder."""
    import os
    from importlib import metadata
    try:
        dist = metadata.distribution(ENGINE_DISTRIBUTION)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None
    try:
        path = str(dist.locate_file(os.path.join(*ENGINE_CONFIG_SUBDIR)))
    except Exception:  # noqa: BLE001
        return None
    return path if os.path.isdir(path) else None


def default_config(
    M: int,
    E: int,
    N: int,
    K: int,
    topk: int,
    dtype: Optional[str] = None,
    block_shape: Optional[Sequence[int]] = None,
    heuristic: str = "2026",
) -> KernelConfig:
    """The engine's default-config heuristic on CUDA: what a user gets with no table.

    `dtype` is the config-name string (`fp8_w8a8`, `int8_w8a16`, `int4_w4a16`, `float32` or None).
    `heuristic` names the rule (an engine profile's `heuristic`): "2026" is vLLM 0.33's; "2025"
    the older one (one tile for M <= E, another above; block fp8 a fixed 64-row tile), whose
    configs carry no launch options, so Triton's defaults (4 warps, 3 stages) apply.
    """
    if heuristic == "2025":
        if dtype == "fp8_w8a8" and block_shape is not None and all(block_shape):
            return KernelConfig(64, int(block_shape[0]), int(block_shape[1]), 32, 4, 3)
        if M <= E:
            return KernelConfig(16, 32, 64, 1, 4, 3)
        return KernelConfig(64, 64, 32, 8, 4, 3)
    if heuristic not in HEURISTICS:
        raise ValueError(f"unknown default-config heuristic {heuristic!r}; valid: {', '.join(HEURISTICS)}")
    if dtype == "fp8_w8a8" and block_shape is not None and all(block_shape):
        bn, bk = int(block_shape[0]), int(block_shape[1])
        if M <= 8 and bn % 64 == 0:
            block_n, stages = 64, (4 if M <= 4 else 3)
        else:
            block_n, stages = bn, 3
        return KernelConfig(16 if M <= 64 else 64, block_n, bk, 1 if M <= 16 else 32, 4, stages)

    block_m = 16 if M <= 32 else 32 if M <= 96 else 64 if M <= 512 else 128
    block_n = 64 if M <= 64 else 128
    block_k = 128 if (dtype == "fp8_w8a8" or M <= 64) else 64
    group_m = 16 if M // max(E, 1) > 128 else 1
    warps = 4 if M <= 128 else 8
    stages = 4 if M <= 32 else 3
    if dtype in ("int8_w8a16", "int4_w4a16") and block_shape is not None and block_shape[1]:
        block_m = 16 if M <= 20 else 32 if M <= 40 else 64
        group_m = 1
    return KernelConfig(block_m, block_n, block_k, group_m, warps, stages)


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
