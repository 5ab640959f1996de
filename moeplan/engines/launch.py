"""Launch geometry: what one config of the fused-MoE kernel launches, under an engine profile.

The tuner's pruning and the kernel's launcher both ask these questions (the effective
BLOCK_SIZE_K, shared memory, how many M tiles the grid has, whether each GEMM's tile is
computed transposed, whether align runs and how it treats EP pairs); both answer them here,
so they cannot disagree.

Align modes (`Launch.ep_align`, the profile's EP_ALIGN_* rule):
  None      plain align over the E experts (no expert map, "drop"/"pad" profile), or none at
            all (naive assignment: each pair its own tile)
  "drop"    with an expert map: non-local pairs get no row; align sorts into the E local experts
  "pad"     with an expert map: align over the E_g global experts, non-local tiles marked -1
  "bucket"  (SGLang, with or without a map) align over E + 1 buckets: bucket 0 holds every
            pair whose expert is not local (id -1), placed first and padded to BM, its tiles
            marked -1; local expert e is bucket e + 1. Without a map bucket 0 is empty, but the
            padded-row bound still counts E + 1 buckets, as the engine sizes its buffers.
Tiles marked -1 write zeros (GEMM1's output rows, GEMM2's rows) and compute nothing.
Operand swap: under the "sm90" rule one decision from the one config drives both GEMMs;
under "sm9x" each GEMM decides from its own config's BLOCK_SIZE_N (GEMM2 may have a
`_down` config), so `Launch.swap` (GEMM1) and `Launch.swap2` (GEMM2) may differ.
BLOCK_SIZE_K under block quantization: clamped to min(BK, bn, bk) where the profile clamps
(vLLM), run as given where it does not (SGLang: one scale per BK step).

Letters: M tokens, E experts on the device (E_g global ids, the values in topk_ids), K hidden
size, N intermediate size per TP shard, topk experts per token, T = M * topk (token, slot)
pairs, P padded rows after align, BM/BN/BK/G the BLOCK_SIZE_M/N/K and GROUP_SIZE_M knobs.

Pure Python (no torch, no triton).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from moeplan.engines.profile import EP_ALIGN_BUCKET, EP_ALIGN_DROP, EngineProfile

SM90_SMEM_BYTES = 232448  # 227 KiB: the opt-in shared memory per block on sm_90 (H100, H200)

# Bytes per element of the GEMM operands, per --dtype scheme: (activation tile A, weight tile B).
# Weight-only schemes dequantize in registers; their B tile is loaded packed.
OPERAND_BYTES: dict[str, tuple[float, float]] = {
    "bf16": (2, 2), "fp16": (2, 2), "fp32": (4, 4),
    "fp8_w8a8": (1, 1), "int8_w8a8": (1, 1),
    "fp8_w8a16": (2, 1), "int8_w8a16": (2, 1),
    "int4_w4a16": (2, 0.5), "mxfp4": (2, 0.5), "nvfp4": (2, 0.5),
}


@dataclass(frozen=True)
class ShapeInfo:
    """The layer a table is tuned for, as launch geometry needs it."""

    E: int  # experts on the device
    N: int
    K: int
    topk: int
    scheme: str = "bf16"
    block_shape: Optional[tuple[int, int]] = None
    E_global: Optional[int] = None  # experts in topk_ids (EP); None = E (no expert map)

    @property
    def num_experts_routed(self) -> int:
        return self.E_global or self.E

    @property
    def has_expert_map(self) -> bool:
        return self.E_global is not None

    @property
    def operand_bytes(self) -> tuple[float, float]:
        return OPERAND_BYTES.get(self.scheme, (2, 2))

    @property
    def w8a8_block(self) -> Optional[tuple[int, int]]:
        """[bn, bk] when both activations and weights are block-quantized (BN/BK divisibility, BK clamp)."""
        if self.block_shape and self.scheme in ("fp8_w8a8", "int8_w8a8") and all(self.block_shape):
            return (int(self.block_shape[0]), int(self.block_shape[1]))
        return None

    @property
    def group_size(self) -> Optional[int]:
        """Weight-only quantization group along K (int4/int8/fp8 weight-only with [0, G] or [bn, G])."""
        if self.scheme in ("int8_w8a16", "int4_w4a16", "fp8_w8a16") and self.block_shape and self.block_shape[1]:
            return int(self.block_shape[1])
        return None

    @property
    def grouped_weight_only(self) -> bool:
        """The engine's grouped weight-only int4/int8 path (no naive assignment there)."""
        return self.scheme in ("int8_w8a16", "int4_w4a16") and self.group_size is not None


def effective_block_k(block_k: int, w8a8_block: Optional[tuple[int, int]], clamp: bool = True) -> int:
    """BLOCK_SIZE_K as the kernel runs it: with block quantization [bn, bk] and `clamp` (the
    profile's `bk_clamp`: vLLM), min(BK, bn, bk); without the clamp (SGLang) BK as given."""
    if w8a8_block is not None and clamp:
        return min(int(block_k), min(w8a8_block))
    return int(block_k)


def smem_bytes(block_m: int, block_n: int, block_k: int, num_stages: int, shape: ShapeInfo,
               profile: Optional[EngineProfile] = None) -> int:
    """Estimated shared memory of one program: num_stages buffers of one A and one B tile
    (the same bytes whether or not the tile is computed transposed). `profile` decides the
    BLOCK_SIZE_K clamp (None: clamp, the vLLM rule)."""
    a, b = shape.operand_bytes
    bk = effective_block_k(block_k, shape.w8a8_block, profile.bk_clamp if profile is not None else True)
    per_stage = block_m * bk * a + bk * block_n * b
    return int(math.ceil(max(num_stages, 1) * per_stage))


def max_padded_rows(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on align's padded rows: T + min(E, T) * (BM - 1), rounded up to BM.

    At most min(E, T) experts are hit and each wastes at most BM - 1 rows. E counts the
    buckets align sorts into: the global experts when EP pairs are padded, the local ones when
    they are dropped, the local ones + 1 in bucket mode (`Launch.align_buckets`).
    """
    rows = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return -(-max(rows, 1) // block_m) * block_m


@dataclass(frozen=True)
class Launch:
    """The facts of one config's launches at batch M: the row plan (shared by both GEMMs:
    one BM, one align) and each GEMM's tile orientation."""

    block_m: int
    naive: bool  # align skipped: each pair its own M tile
    swap: bool  # GEMM1's tiles computed transposed
    ep_drop: bool  # non-local pairs dropped by align (an expert map and a "drop" profile)
    padded_rows: int  # P: rows of sorted_token_ids (the grid's M extent is P // BM)
    align_experts: int  # experts align sorts into (local when dropping or bucketing, global when padding)
    ep_align: Optional[str] = None  # the align mode (module doc): None, "drop", "pad" or "bucket"
    swap2: Optional[bool] = None  # GEMM2's tiles computed transposed (None: as GEMM1)
    bk_clamp: bool = True  # BLOCK_SIZE_K clamped to min(BK, bn, bk) under block quantization

    def __post_init__(self):
        if self.swap2 is None:
            object.__setattr__(self, "swap2", self.swap)

    @property
    def m_tiles(self) -> int:
        return self.padded_rows // self.block_m

    @property
    def ep_bucket(self) -> bool:
        """Align over E + 1 buckets, bucket 0 holding the non-local pairs in -1 tiles."""
        return self.ep_align == EP_ALIGN_BUCKET

    @property
    def align_buckets(self) -> int:
        """Counters align sorts into: align_experts, + 1 for the -1 bucket in bucket mode."""
        return self.align_experts + (1 if self.ep_bucket else 0)

    def swap_of(self, gemm: int) -> bool:
        """Whether GEMM `gemm` (1: gate_up, 2: down) computes its tiles transposed."""
        if gemm not in (1, 2):
            raise ValueError(f"gemm must be 1 or 2, got {gemm!r}")
        return bool(self.swap if gemm == 1 else self.swap2)


def plan_launch(profile: EngineProfile, shape: ShapeInfo, M: int, block_m: int, block_n: int,
                capability: Optional[tuple[int, int]] = None,
                swap: Optional[bool] = None, naive: Optional[bool] = None,
                down_block_n: Optional[int] = None, bk_clamp: Optional[bool] = None) -> Launch:
    """The row plan and tile orientations of a (BM, BN) launch at batch M under `profile` on a
    device of `capability` (the effective BLOCK_SIZE_K and shared memory: the functions above).

    `down_block_n`: GEMM2's BLOCK_SIZE_N when it runs its own config (SGLang `_down`; None:
    GEMM2 runs block_n). Under the "sm9x" swap rule GEMM2's swap is decided from it; under
    "sm90" the one decision of the one config holds for both GEMMs.
    `swap` forces the operand swap of both GEMMs on or off (tests, and the CPU interpreter,
    which has no compute capability); `naive` likewise the naive assignment; `bk_clamp` the
    BLOCK_SIZE_K clamp (moeplan's fast variant always clamps); None applies the profile's rule.
    """
    T = M * shape.topk
    if naive is None:
        naive = profile.uses_naive(M, shape.topk, shape.num_experts_routed, shape.has_expert_map,
                                   shape.grouped_weight_only)
    if swap is None:
        swap = profile.uses_swap(shape.scheme, capability, block_m, block_n)
        if profile.swap_rule == "sm9x" and down_block_n is not None:
            swap2 = profile.uses_swap(shape.scheme, capability, block_m, int(down_block_n))
        else:
            swap2 = swap
    else:
        swap2 = swap
    if bk_clamp is None:
        bk_clamp = profile.bk_clamp
    drop = shape.has_expert_map and profile.ep_align == EP_ALIGN_DROP
    if naive:
        mode = None  # no align at all
    elif profile.ep_align == EP_ALIGN_BUCKET:
        mode = EP_ALIGN_BUCKET  # the engine aligns over E + 1 buckets with or without a map
    else:
        mode = profile.ep_align if shape.has_expert_map else None
    align_experts = shape.E if (drop or mode == EP_ALIGN_BUCKET) else shape.num_experts_routed
    if naive:
        P = T * block_m
    else:
        P = max_padded_rows(T, align_experts + (1 if mode == EP_ALIGN_BUCKET else 0), block_m)
    return Launch(block_m, bool(naive), bool(swap), drop, P, align_experts, mode, bool(swap2), bool(bk_clamp))


def max_m_tiles(M: int, shape: ShapeInfo, block_m: int, profile: EngineProfile) -> int:
    """Upper bound on the M tiles the kernel's grid has for M tokens under `profile`."""
    return plan_launch(profile, shape, M, block_m, 64).m_tiles
