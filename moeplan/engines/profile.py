"""What an engine is: `EngineProfile`, the launch rules and tuning domains of one range of an
engine's releases, as a value every part of moeplan reads (kernel, align, search space, default
heuristic, `resolve`). Each engine's own rules (its profiles, file-name grammar, folders,
default heuristic) live in a module beside this one (`vllm.py`, `sglang.py`); `registry.py` collects them.

A table is only worth what it makes the engine's own kernel do, and that kernel changes
between releases (spec: engine_kernel_current.md; release history: docs/engine_profiles.md).

Letters: M tokens in the batch, E experts (E_g global), topk experts per token,
BM/BN the BLOCK_SIZE_M/N knobs.

Pure Python: no I/O at import, no torch/triton.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from moeplan.base.errors import MoeplanError
from moeplan.engines.knobs import KNOBS

EP_ALIGN_DROP = "drop"  # non-local (token, slot) pairs get no tile; GEMM2's output is zero-filled
EP_ALIGN_PAD = "pad"  # all pairs aligned over the global experts; non-local tiles marked -1 (zeros)
EP_ALIGN_BUCKET = "bucket"  # non-local pairs mapped to id -1: one extra align bucket, padded to BM (zero tiles)

class EngineError(MoeplanError):
    """An unknown engine profile name."""


@dataclass(frozen=True)
class EngineProfile:
    """The launch rules of one range of engine releases.

    swap_ab: fp8_w8a8 tiles with BM < 64 and BN >= 64 are computed transposed on compute
      capability exactly 9.0 (the token dimension becomes the matrix instruction's N side).
    naive_assignment: with no expert map and M * topk * 4 <= E_g, align is skipped and each
      (token, slot) pair is its own M tile (not for the grouped weight-only int4/int8 path).
    ep_align: EP_ALIGN_DROP, EP_ALIGN_PAD or EP_ALIGN_BUCKET (see the constants).
    block_m: the BLOCK_SIZE_M values the engine's tables use and its kernel runs.
    heuristic: which default-config rule the engine applies without a table.
    base_domains: the tuning script's domains of the other five knobs.
    block_tiles: which BLOCK_SIZE_N / BLOCK_SIZE_K the tuning space keeps under block
      quantization [bn, bk]: "multiple" (multiples of the block only) or "divides" (also
      tiles that divide the block, e.g. BN 32/64 with bn = 128: the engine's decode tiles).
    engine: which engine's grammar, folders and default rule apply ("vllm", "sglang";
      `registry.engine_of`).
    swap_rule: "sm90" (capability exactly 9.0, one decision for both GEMMs) or "sm9x" (any
      capability 9.x, decided per GEMM from that GEMM's own config: SGLang).
    bk_clamp: under block quantization the kernel runs BK as min(BK, bn, bk) (vLLM); False:
      BK runs as given, so a BK that does not divide bk is wrong, and the space refuses it.
    down_tables: GEMM2 may have its own `_down` table (BLOCK_SIZE_M tied to GEMM1's entry).
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
    base_domains: tuple[tuple[str, tuple[int, ...]], ...]  # (knob, values) of every knob but BLOCK_SIZE_M
    block_tiles: str = "multiple"
    engine: str = "vllm"
    swap_rule: str = "sm90"
    bk_clamp: bool = True
    down_tables: bool = False

    def block_tile_ok(self, tile: int, block: int) -> bool:
        """Whether a BLOCK_SIZE_N / BLOCK_SIZE_K of `tile` fits a quantization block of `block`."""
        if tile % block == 0:
            return True
        return self.block_tiles == "divides" and block % tile == 0

    def block_k_ok(self, block_k: int, block: int) -> bool:
        """Whether a BLOCK_SIZE_K computes right under a quantization block of `block` along K:
        with no clamp one scale is read per BK step, so BK must divide the block."""
        if self.bk_clamp:
            return self.block_tile_ok(block_k, block)
        return block % block_k == 0

    def domains(self) -> dict[str, tuple[int, ...]]:
        """The tuning domain of every knob, in the engine's file order."""
        d = {"BLOCK_SIZE_M": self.block_m, **dict(self.base_domains)}
        return {k: d[k] for k in KNOBS}

    def uses_swap(self, scheme: str, capability: Optional[tuple[int, int]], block_m: int, block_n: int) -> bool:
        """Whether a launch of a config with this (BM, BN) computes its tiles transposed: under
        "sm90" the one config's answer holds for both GEMMs; under "sm9x" each GEMM asks with its
        own config (`engines.launch.plan_launch`)."""
        if not (self.swap_ab and scheme == "fp8_w8a8" and capability is not None and block_m < 64
                and block_n >= 64):
            return False
        if self.swap_rule == "sm9x":
            return int(tuple(capability)[0]) == 9
        return tuple(capability) == (9, 0)

    def uses_naive(self, M: int, topk: int, num_experts_global: int, has_expert_map: bool,
                   grouped_weight_only: bool = False) -> bool:
        """Whether align is skipped for a batch of M tokens (each pair its own tile)."""
        return (self.naive_assignment and not has_expert_map and not grouped_weight_only
                and M * topk * 4 <= num_experts_global)

    def to_dict(self) -> dict:
        d = {"name": self.name, "releases": self.releases, "swap_ab": self.swap_ab,
                "naive_assignment": self.naive_assignment, "ep_align": self.ep_align,
                "block_m": list(self.block_m), "default_heuristic": self.heuristic, "block_tiles": self.block_tiles}
        if self.engine != "vllm":  # the vLLM profiles' dict is unchanged
            d.update({"engine": self.engine, "swap_rule": self.swap_rule, "bk_clamp": self.bk_clamp,
                      "down_tables": self.down_tables})
        return d


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a command uses and why (shown to the user)."""

    profile: EngineProfile
    reason: str
    warning: Optional[str] = None
    engine_version: Optional[str] = None  # the installed engine's version, if any


def parse_version(text: str) -> Optional[tuple[int, int]]:
    """'0.33.1' / '0.11.0rc2.dev3+gabc' -> (0, 33); None if it does not start with two numbers."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None
