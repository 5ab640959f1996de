"""Engine profiles: what one range of the serving engine's releases does in its fused-MoE
Triton path, as a value every part of moeplan reads (kernel, align, search space, default
heuristic, `resolve`).

A table is only worth what it makes the engine's own kernel do, and that kernel changes
between releases (spec: engine_kernel_current.md; release history: docs/engine_profiles.md).

Letters: M tokens in the batch, E experts (E_g global), topk experts per token,
BM/BN the BLOCK_SIZE_M/N knobs.

Pure Python: no I/O at import, no torch/triton. Finding the installed engine reads package
metadata only (never `import vllm`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from moeplan.errors import MoeplanError
from moeplan.kernel_config import HEURISTICS, KNOBS

# The batch sizes of the engine's tuning script and shipped tables (spec: search_space.md).
ENGINE_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)

# The engine's tuning-script domains (spec: search_space.md), BLOCK_SIZE_M apart.
_BASE_DOMAINS = {
    "BLOCK_SIZE_N": (32, 64, 128, 256),
    "BLOCK_SIZE_K": (64, 128, 256),
    "GROUP_SIZE_M": (1, 16, 32, 64),
    "num_warps": (4, 8),
    "num_stages": (2, 3, 4, 5),
}

EP_ALIGN_DROP = "drop"  # non-local (token, slot) pairs get no tile; GEMM2's output is zero-filled
EP_ALIGN_PAD = "pad"  # all pairs aligned over the global experts; non-local tiles marked -1 (zeros)

ENGINE_DISTRIBUTION = "vllm"
ENGINE_CONFIG_SUBDIR = ("vllm", "model_executor", "layers", "fused_moe", "configs")


class EngineError(MoeplanError):
    """An unknown engine profile name."""


@dataclass(frozen=True)
class EngineProfile:
    """The launch rules of one range of engine releases.

    swap_ab: fp8_w8a8 tiles with BM < 64 and BN >= 64 are computed transposed on compute
      capability exactly 9.0 (the token dimension becomes the matrix instruction's N side).
    naive_assignment: with no expert map and M * topk * 4 <= E_g, align is skipped and each
      (token, slot) pair is its own M tile (not for the grouped weight-only int4/int8 path).
    ep_align: EP_ALIGN_DROP or EP_ALIGN_PAD (see the constants).
    block_m: the BLOCK_SIZE_M values the engine's tables use and its kernel runs.
    heuristic: which default-config rule the engine applies without a table.
    block_tiles: which BLOCK_SIZE_N / BLOCK_SIZE_K the tuning space keeps under block
      quantization [bn, bk]: "multiple" (multiples of the block only) or "divides" (also
      tiles that divide the block, e.g. BN 32/64 with bn = 128: the engine's decode tiles).
    """

    name: str
    releases: str  # human text: the releases this profile stands for
    first: tuple[int, int]  # first (major, minor) release with this behaviour
    last: Optional[tuple[int, int]]  # last (major, minor) release with it; None: up to the newest known
    swap_ab: bool
    naive_assignment: bool
    ep_align: str
    block_m: tuple[int, ...]
    heuristic: str
    block_tiles: str = "multiple"

    def block_tile_ok(self, tile: int, block: int) -> bool:
        """Whether a BLOCK_SIZE_N / BLOCK_SIZE_K of `tile` fits a quantization block of `block`."""
        if tile % block == 0:
            return True
        return self.block_tiles == "divides" and block % tile == 0

    def domains(self) -> dict[str, tuple[int, ...]]:
        """The tuning domain of every knob, in the engine's file order."""
        d = {"BLOCK_SIZE_M": self.block_m, **_BASE_DOMAINS}
        return {k: d[k] for k in KNOBS}

    def uses_swap(self, scheme: str, capability: Optional[tuple[int, int]], block_m: int, block_n: int) -> bool:
        """Whether a launch of this config computes its tiles transposed (both GEMMs alike)."""
        return (self.swap_ab and scheme == "fp8_w8a8" and capability is not None
                and tuple(capability) == (9, 0) and block_m < 64 and block_n >= 64)

    def uses_naive(self, M: int, topk: int, num_experts_global: int, has_expert_map: bool,
                   grouped_weight_only: bool = False) -> bool:
        """Whether align is skipped for a batch of M tokens (each pair its own tile)."""
        return (self.naive_assignment and not has_expert_map and not grouped_weight_only
                and M * topk * 4 <= num_experts_global)

    def to_dict(self) -> dict:
        return {"name": self.name, "releases": self.releases, "swap_ab": self.swap_ab,
                "naive_assignment": self.naive_assignment, "ep_align": self.ep_align,
                "block_m": list(self.block_m), "default_heuristic": self.heuristic, "block_tiles": self.block_tiles}


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
            block_m=(16, 32, 64, 128, 256), heuristic="2025"),
        EngineProfile(
            name="vllm-0.25",
            releases="vLLM 0.25.0 - 0.28.x: operand swap, naive assignment, BLOCK_SIZE_M from 8, EP pairs "
                     "still padded into -1 tiles",
            first=(0, 25), last=(0, 28),
            swap_ab=True, naive_assignment=True, ep_align=EP_ALIGN_PAD,
            block_m=(8, 16, 32, 64, 128, 256), heuristic="2026", block_tiles="divides"),
        EngineProfile(
            name="vllm-0.33",
            releases="vLLM 0.33.x: operand swap, naive assignment, EP pairs dropped, BLOCK_SIZE_M from 8 "
                     "(spec: engine_kernel_current.md)",
            first=(0, 33), last=None,
            swap_ab=True, naive_assignment=True, ep_align=EP_ALIGN_DROP,
            block_m=(8, 16, 32, 64, 128, 256), heuristic="2026", block_tiles="divides"),
    )
}
assert all(p.heuristic in HEURISTICS for p in PROFILES.values())
NEWEST = max(PROFILES.values(), key=lambda p: p.first).name


def get_profile(name: str) -> EngineProfile:
    """The profile called `name`; EngineError (one line) naming the valid ones otherwise."""
    p = PROFILES.get(name.strip().lower()) if isinstance(name, str) else None
    if p is None:
        raise EngineError(f"--engine {name!r} is not a known engine profile; valid: {', '.join(PROFILES)}")
    return p


def parse_version(text: str) -> Optional[tuple[int, int]]:
    """'0.33.1' / '0.11.0rc2.dev3+gabc' -> (0, 33); None if it does not start with two numbers."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def profile_for_version(version: str) -> tuple[EngineProfile, Optional[str]]:
    """The profile of an engine release, and a warning line when it is only the nearest one."""
    v = parse_version(version)
    newest = PROFILES[NEWEST]
    if v is None:
        return newest, f"the installed vllm version {version!r} cannot be read; using the newest profile {newest.name}"
    for p in sorted(PROFILES.values(), key=lambda p: p.first, reverse=True):
        if v >= p.first:
            if p.last is None and v > p.first and p is newest:
                return p, (f"vllm {version} is newer than the newest profile {p.name}; using {p.name}")
            if p.last is not None and v > p.last:
                # between two profiles' ranges: the older release's behaviour is the nearer guess
                return p, (f"vllm {version} lies between the profiles' release ranges; using {p.name} "
                           f"({p.releases.split(':')[0]})")
            return p, None
    oldest = min(PROFILES.values(), key=lambda p: p.first)
    return oldest, f"vllm {version} is older than the oldest profile {oldest.name}; using {oldest.name}"


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a command uses and why (shown to the user)."""

    profile: EngineProfile
    reason: str
    warning: Optional[str] = None
    engine_version: Optional[str] = None  # the installed engine's version, if any


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


def choose_profile(explicit: Optional[str] = None,
                   version_of: Optional[Callable[[str], Optional[str]]] = None) -> ProfileChoice:
    """--engine NAME if given; else the installed engine's profile; else the newest."""
    if explicit is not None:
        if not explicit.strip():
            raise EngineError(f"--engine '' is empty; valid: {', '.join(PROFILES)}")
        p = get_profile(explicit)
        return ProfileChoice(p, f"--engine {p.name}")
    version = installed_engine_version(version_of)
    if version is not None:
        p, warning = profile_for_version(version)
        return ProfileChoice(p, f"installed vllm {version}", warning, version)
    return ProfileChoice(PROFILES[NEWEST], "no vllm installed: the newest profile")


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
