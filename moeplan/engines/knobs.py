"""The six knobs of the Triton fused-MoE kernel and the engine's default heuristic.

Dimension letters used here and across moeplan:
  M     tokens in the batch (not tokens x topk)
  E     experts held by one device
  K     hidden size (GEMM1 reduction dim, GEMM2 output dim)
  N     intermediate size of one expert per TP shard (w2 is (E, K, N); w1 is (E, 2N, K))
  topk  experts each token is routed to

Pure Python: no torch/triton import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from moeplan.errors import TableError

KNOBS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
HEURISTICS = ("2025", "2026")  # the engine's default-config rules (`default_config`); a profile names one


@dataclass(frozen=True, order=True)
class KernelConfig:
    """One tuning entry. Hashable, so it can key caches, checkpoints and result sets."""

    BLOCK_SIZE_M: int
    BLOCK_SIZE_N: int
    BLOCK_SIZE_K: int
    GROUP_SIZE_M: int
    num_warps: int
    num_stages: int

    def to_dict(self) -> dict[str, int]:
        # Field order is the engine's file order (BLOCK_SIZE_M ... num_stages).
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KernelConfig":
        problems = knob_problems(d)
        if problems:
            raise TableError(f"config {d!r}: {'; '.join(problems)}")
        return cls(**{k: d[k] for k in KNOBS})

    def short(self) -> str:
        return (f"M{self.BLOCK_SIZE_M}/N{self.BLOCK_SIZE_N}/K{self.BLOCK_SIZE_K}"
                f"/G{self.GROUP_SIZE_M}/w{self.num_warps}/s{self.num_stages}")


def knob_problems(d: dict) -> list[str]:
    """Every reason `d` is not one entry of six positive-integer knobs (empty: it is one)."""
    problems = []
    missing = [k for k in KNOBS if k not in d]
    if missing:
        problems.append(f"lacks {', '.join(missing)} (needs all of {', '.join(KNOBS)})")
    extra = [str(k) for k in d if k not in KNOBS]
    if extra:
        problems.append(f"has unknown key(s) {', '.join(extra)} (valid: {', '.join(KNOBS)})")
    for k in KNOBS:
        v = d.get(k)
        if k in d and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"{k}={v!r} is not a positive integer")
    return problems


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
