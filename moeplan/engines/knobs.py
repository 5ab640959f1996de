"""The six knobs of the Triton fused-MoE kernel (`KernelConfig`): what one table entry holds.

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

from moeplan.base.errors import TableError

VALID_WARPS = (1, 2, 4, 8, 16, 32)  # num_warps Triton accepts
KNOBS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")


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
