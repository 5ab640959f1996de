"""SGLang: its fused-MoE engine profiles, tuning-file names, folder layout and lookup order
across Triton-version folders, its default-config heuristic and which models it runs with the
shared expert merged into the routed ones (spec: sglang_engine.md).

Name: `E={E},N={N},device_name={DEVICE}[,dtype={X}][,block_shape=[bn, bk]][,per_channel_quant=True][_down].json`
  E  experts on the device, merged shared experts included; N the last dim of w2 (packed: half
  the true N for int4_w4a16); DEVICE the CUDA name with each space made `_` (nothing else).
Folder: `<root>/configs/triton_<X_Y_Z>/<name>`, root = $SGLANG_MOE_CONFIG_DIR (replaces the
  bundled root) or the package's `srt/layers/moe/moe_runner/triton_utils` (0.5) /
  `srt/layers/moe/fused_moe_triton` (0.4).
Letters: M tokens in the batch, K hidden size, topk experts per token.

Pure: no I/O at import, no torch. Finding the installed SGLang reads package metadata only
(never `import sglang`); listing folders happens in `moeplan.tables.sglang_lookup`.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

from moeplan.base.errors import TableError
from moeplan.base.safeio import MAX_DEVICE_NAME, check_device_name, shown
from moeplan.engines.knobs import KernelConfig
from moeplan.engines.profile import EP_ALIGN_BUCKET, EngineProfile
from moeplan.engines.vllm import _BASE_DOMAINS, ENGINE_BATCH_SIZES, nearest_batch_key  # noqa: F401 (SGLang's too)

ENGINE = "sglang"
ENGINE_DISTRIBUTION = "sglang"
ENV_CONFIG_DIR = "SGLANG_MOE_CONFIG_DIR"
UNKNOWN_DEVICE = "<unknown>"
DOWN_SUFFIX = "_down"
TMA_KEY = "USE_TMA"  # the one non-launch key an SGLang entry may carry (removed before launch)

# SGLang's tuners keep vLLM's 18 batch sizes (ENGINE_BATCH_SIZES) and domains (spec §4), BLOCK_SIZE_M from 16.
_BLOCK_M = (16, 32, 64, 128, 256)

HEURISTICS = ("sglang",)

# Per-profile folder facts (not launch rules, so not EngineProfile fields).
PACKAGE_SUBDIR = {
    "sglang-0.4.10": ("sglang", "srt", "layers", "moe", "fused_moe_triton"),
    "sglang-0.5.23": ("sglang", "srt", "layers", "moe", "moe_runner", "triton_utils"),
}
# The Triton the release's pinned torch resolves to (names the folder when none is installed).
PINNED_TRITON = {"sglang-0.4.10": "3.3.1", "sglang-0.5.23": "3.8.0"}
# 0.4.x tried a fixed list after the installed version's folder; 0.5 discovers folders on disk.
FIXED_FALLBACK = {"sglang-0.4.10": ("3.3.1", "3.2.0", "3.1.0")}
HAS_ENV_DIR = {"sglang-0.4.10": False, "sglang-0.5.23": True}
HAS_PER_CHANNEL_NAME = {"sglang-0.4.10": False, "sglang-0.5.23": True}

PROFILES: dict[str, EngineProfile] = {
    p.name: p for p in (
        EngineProfile(
            name="sglang-0.4.10",
            releases="SGLang 0.4.x (0.4.10 read): align always runs (one -1 bucket for other ranks' EP pairs), no operand swap, "
                     "no _down tables, no BLOCK_SIZE_K clamp, fixed Triton fallback list 3.3.1, 3.2.0, 3.1.0",
            first=(0, 4), last=(0, 4),
            swap_ab=False, naive_assignment=False, ep_align=EP_ALIGN_BUCKET, block_m=_BLOCK_M,
            heuristic="sglang", base_domains=_BASE_DOMAINS, block_tiles="divides", engine=ENGINE,
            swap_rule="sm9x", bk_clamp=False, down_tables=False),
        EngineProfile(
            name="sglang-0.5.23",
            releases="SGLang 0.5.x (0.5.23 read): operand swap per GEMM on SM 9.x, align always runs, one padded -1 "
                     "bucket for other ranks' EP pairs, no BLOCK_SIZE_K clamp, _down tables (BLOCK_SIZE_M tied), "
                     "Triton folders discovered newest first, $SGLANG_MOE_CONFIG_DIR",
            first=(0, 5), last=None,
            swap_ab=True, naive_assignment=False, ep_align=EP_ALIGN_BUCKET, block_m=_BLOCK_M,
            heuristic="sglang", base_domains=_BASE_DOMAINS, block_tiles="divides", engine=ENGINE,
            swap_rule="sm9x", bk_clamp=False, down_tables=True),
    )
}
def installed_engine_version(find: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
    """The installed `sglang` distribution's version from its metadata (never imports it)."""
    if find is not None:
        return find(ENGINE_DISTRIBUTION)
    from importlib import metadata
    try:
        return metadata.version(ENGINE_DISTRIBUTION)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata
        return None


def engine_config_dir(profile_name: str = "sglang-0.5.23") -> Optional[str]:
    """The installed SGLang's bundled root (the folder holding `configs/triton_*`), from its
    distribution's files (never by importing it); None when absent."""
    import os
    from importlib import metadata
    try:
        dist = metadata.distribution(ENGINE_DISTRIBUTION)
        path = str(dist.locate_file(os.path.join(*PACKAGE_SUBDIR[profile_name])))
    except Exception:  # noqa: BLE001
        return None
    return path if os.path.isdir(os.path.join(path, "configs")) else None


# ---- names -----------------------------------------------------------------------

def normalize_device_name(name: str) -> str:
    """SGLang's rule: each space becomes `_`, nothing else changes (no H200 collapse:
    `NVIDIA H200 NVL` -> `NVIDIA_H200_NVL`)."""
    return name.strip().replace(" ", "_")


def config_dtype(scheme: str, act_dtype: str = "bfloat16") -> Optional[str]:
    """The `,dtype=` string SGLang names a scheme by (None: bf16/fp16, no selector)."""
    if scheme in ("fp8_w8a8", "int8_w8a8", "int4_w4a16", "int8_w8a16"):
        return scheme
    if scheme == "fp32" or act_dtype == "float32":
        return "float32"
    return None


def named_N(N: int, scheme: str) -> int:
    """The N in the name: w2's last dim, which int4_w4a16 packs two per byte."""
    return N // 2 if scheme == "int4_w4a16" else N


def name_per_channel(dtype: Optional[str], block_shape: Optional[Sequence[int]], per_channel: bool,
                     profile_name: str = "sglang-0.5.23") -> bool:
    """Whether the name carries `,per_channel_quant=True`: fp8 per-channel, and every non-block int8_w8a8."""
    if not HAS_PER_CHANNEL_NAME.get(profile_name, True):
        return False
    blocked = block_shape is not None and all(block_shape)
    if dtype == "int8_w8a8" and not blocked:
        return True
    return bool(per_channel) and dtype == "fp8_w8a8" and not blocked


def block_selector(block_shape: Optional[Sequence[int]]) -> str:
    """`,block_shape=[128, 128]` (a Python list's repr: with the space) when both entries are non-zero."""
    if block_shape is None or not all(block_shape):
        return ""
    return ",block_shape=" + str([int(v) for v in block_shape])


def tuning_file_name(E: int, N: int, device_name: str, dtype: Optional[str] = None,
                     block_shape: Optional[Sequence[int]] = None, per_channel_quant: bool = False,
                     down: bool = False) -> str:
    """The exact file name SGLang looks up. `N` is the named N (`named_N`); `device_name` is
    checked against the device-name grammar (a `/` would be a path separator: refused)."""
    if device_name != UNKNOWN_DEVICE:
        check_device_name(device_name, "device name")
    dt = f",dtype={dtype}" if dtype else ""
    pc = ",per_channel_quant=True" if per_channel_quant else ""
    return (f"E={E},N={N},device_name={normalize_device_name(device_name)}{dt}{block_selector(block_shape)}"
            f"{pc}{DOWN_SUFFIX if down else ''}.json")


KNOWN_DTYPES = ("fp8_w8a8", "int8_w8a8", "int4_w4a16", "int8_w8a16", "float32")
_NAME_RE = re.compile(
    r"^E=(?P<E>[1-9]\d{0,8}),N=(?P<N>[1-9]\d{0,8}),device_name=(?P<device>[A-Za-z0-9][A-Za-z0-9_.()+\-]{0,%d}?)"
    % (MAX_DEVICE_NAME - 1) +
    r"(?:,dtype=(?P<dtype>[A-Za-z0-9_]+?))?"
    r"(?:,block_shape=\[(?P<bn>[1-9]\d{0,8}), (?P<bk>[1-9]\d{0,8})\])?"
    r"(?P<pc>,per_channel_quant=True)?(?P<down>_down)?\.json$"
)


def is_sglang_name(name: str) -> bool:
    """Whether a file name can only be SGLang's (a spaced block shape, per_channel_quant, `_down`,
    or an int8_w8a8 dtype)."""
    return bool(re.search(r"block_shape=\[\d+, \d+\]|,per_channel_quant=True|_down\.json$|dtype=int8_w8a8", name))


def parse_tuning_file_name(name: str) -> dict:
    """Split an SGLang file name into E, N, device, dtype, block_shape, per_channel_quant, down;
    TableError if it breaks the grammar."""
    m = _NAME_RE.match(name)
    if not m:
        raise TableError(
            f"file name {shown(name)} does not follow SGLang's E=<int>,N=<int>,device_name=<NAME>[,dtype=<X>]"
            "[,block_shape=[bn, bk]][,per_channel_quant=True][_down].json")
    dtype = m.group("dtype")
    if dtype is not None and dtype not in KNOWN_DTYPES:
        raise TableError(f"file name {shown(name)} has dtype {dtype!r}; valid for SGLang: {', '.join(KNOWN_DTYPES)}")
    block = [int(m.group("bn")), int(m.group("bk"))] if m.group("bn") else None
    return {"E": int(m.group("E")), "N": int(m.group("N")), "device": m.group("device"), "dtype": dtype,
            "block_shape": block, "per_channel_quant": bool(m.group("pc")), "down": bool(m.group("down"))}


def up_name(down_name: str) -> str:
    """`..._down.json` -> `....json` (the table GEMM2 reuses when its own is missing)."""
    return down_name[: -len(DOWN_SUFFIX + ".json")] + ".json" if down_name.endswith(DOWN_SUFFIX + ".json") \
        else down_name


# ---- folders and lookup order -------------------------------------------------------

def version_folder(version: str) -> str:
    """`3.8.0` -> `triton_3_8_0` (the full version string: a local suffix names a folder that never exists)."""
    return "triton_" + version.replace(".", "_")


def folder_version(folder: str) -> Optional[tuple[int, ...]]:
    """`triton_3_6_0` -> (3, 6, 0); None when a part is not an integer (SGLang's sort then raises)."""
    parts = folder[len("triton_"):].split("_")
    if not folder.startswith("triton_") or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def folder_order(installed: str, folders: Sequence[str], profile_name: str = "sglang-0.5.23") -> tuple[list[str], Optional[str]]:
    """(Triton folders in the order SGLang tries them, a problem line or None).

    The installed version's folder first (present or not), then, for 0.5, every other
    `triton_*` folder on disk, newest first (newer than installed too); for 0.4 a fixed list.
    A folder whose parts are not all integers makes SGLang's sort raise: the problem line says so.
    """
    first = version_folder(installed)
    fixed = FIXED_FALLBACK.get(profile_name)
    if fixed is not None:
        rest = [version_folder(v) for v in fixed if version_folder(v) != first]
        return [first] + rest, None
    tri = [f for f in folders if f.startswith("triton_")]
    bad = [f for f in tri if folder_version(f) is None]
    if bad:
        return [first], (f"folder {shown(bad[0])} is not triton_<int>_<int>_...: SGLang's fallback sort raises "
                         "ValueError on a miss in its own folder")
    # SGLang skips the folder whose dotted version equals the installed version string
    rest = sorted((f for f in tri if f != first), key=lambda f: folder_version(f), reverse=True)
    return [first] + rest, None


# ---- default config ------------------------------------------------------------------

def default_config(M: int, E: int, N: int, K: int, topk: int, dtype: Optional[str] = None,
                   block_shape: Optional[Sequence[int]] = None, heuristic: str = "sglang",
                   low_smem: bool = False) -> KernelConfig:
    """SGLang's default config on CUDA with no table (E = experts on the device, merged ones
    included). `low_smem`: a GPU with under 128 KiB opt-in shared memory (SM 12.x class).
    Rules without warps/stages run Triton's defaults, 4 and 3."""
    if heuristic not in HEURISTICS:
        raise ValueError(f"unknown default-config heuristic {heuristic!r}; valid: {', '.join(HEURISTICS)}")
    if dtype == "fp8_w8a8":
        if block_shape is not None and all(block_shape):
            return KernelConfig(64, int(block_shape[0]), int(block_shape[1]), 32, 4, 3)
        if low_smem:
            return KernelConfig(32, 64, 256, 1, 4, 4) if M <= E else KernelConfig(64, 128, 256, 64, 4, 2)
        return KernelConfig(64, 128, 128, 1, 4, 4) if M <= E else KernelConfig(128, 256, 128, 32, 8, 4)
    if M <= E:
        return KernelConfig(16, 32, 64, 1, 4, 3)
    return KernelConfig(64, 64, 32, 8, 4, 3)


# ---- the merged shared expert ----------------------------------------------------------

def merged_shared_experts(architecture: str, num_experts: int, num_shared: int, use_ep: bool,
                          scheme: str) -> tuple[int, Optional[str]]:
    """(shared experts SGLang merges into the routed ones, why none) for a model on CUDA (SM 8.0+).

    DeepSeek-V3/R1 (`DeepseekV3ForCausalLM`, 256 routed, 1 shared; 384 only for a Quark
    checkpoint), GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`) and GLM-4.7-Flash
    (`Glm4MoeLiteForCausalLM`, 1 shared) merge, each under TP only: EP turns the merge off.
    """
    if num_shared <= 0:
        return 0, "no shared expert"
    if architecture == "DeepseekV3ForCausalLM":
        if num_experts != 256 or num_shared != 1:
            return 0, "SGLang merges DeepSeek-V3-architecture shared experts only at 256 routed + 1 shared"
        if scheme in ("int4_w4a16",):
            return 0, "W4A16 checkpoints keep the shared expert apart"
    elif architecture == "Glm4MoeLiteForCausalLM":
        if num_shared != 1:
            return 0, "GLM-4.7-Flash merges only one shared expert"
    elif architecture != "Glm4MoeForCausalLM":
        return 0, f"SGLang does not merge {architecture}'s shared experts"
    if use_ep:
        return 0, "EP turns the shared-expert merge off"
    return num_shared, None


def serving_triton(profile_name: str, explicit: Optional[str] = None,
                   find: Optional[Callable[[str], Optional[str]]] = None) -> tuple[str, str]:
    """(the Triton version whose folder SGLang reads first, why): `explicit`, else the installed
    triton's when SGLang is installed beside it (package metadata), else the release's pin."""
    if explicit is not None:
        return explicit.strip(), "--triton-version"
    if installed_engine_version(find) is not None:
        v = find("triton") if find is not None else _dist_version("triton")
        if v:
            return v, "the installed triton"
    return PINNED_TRITON[profile_name], f"{profile_name} pins Triton {PINNED_TRITON[profile_name]} (through torch)"


def _dist_version(dist: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001
        return None
