"""What the engine's kernels run, over every engine profile: the knob limits `verify --strict`,
`show` and `--search-space` hold every table entry to, so moeplan never writes a table the
engine's kernel would refuse. Pure: no I/O, no torch.
"""

from __future__ import annotations

import functools

from moeplan.base import safeio
from moeplan.engines.knobs import KNOBS, VALID_WARPS, knob_problems
from moeplan.engines.registry import PROFILES


def _pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


@functools.lru_cache(maxsize=1)
def engine_limits() -> dict[str, tuple[int, int]]:
    """(lowest, highest) value of each knob the engine's kernel runs, over every engine profile.

    Block sizes are powers of two: BLOCK_SIZE_M from the smallest any profile tunes (8),
    BLOCK_SIZE_N/K from 16 (tl.dot's minimum), each up to the largest any profile tunes.
    GROUP_SIZE_M and num_stages go up to the largest tuned value; num_warps is one of
    VALID_WARPS (engines/knobs.py).
    """
    union = {k: sorted({v for p in PROFILES.values() for v in p.domains()[k]}) for k in KNOBS}
    return {
        "BLOCK_SIZE_M": (union["BLOCK_SIZE_M"][0], union["BLOCK_SIZE_M"][-1]),
        "BLOCK_SIZE_N": (16, union["BLOCK_SIZE_N"][-1]),
        "BLOCK_SIZE_K": (16, union["BLOCK_SIZE_K"][-1]),
        "GROUP_SIZE_M": (1, union["GROUP_SIZE_M"][-1]),
        "num_warps": (min(VALID_WARPS), max(VALID_WARPS)),
        "num_stages": (1, union["num_stages"][-1]),
    }


def entry_problems(cfg, strict: bool = False) -> list[str]:
    """Why one table entry is not a config the kernel runs (empty: it is one). Always: the six
    knobs as positive integers, block sizes powers of two, num_warps one of VALID_WARPS;
    `strict` also: every knob within `engine_limits()`."""
    if not isinstance(cfg, dict):
        return ["is not an object of the six kernel knobs"]
    problems = knob_problems(cfg)
    for k in KNOBS:
        v = cfg.get(k)
        if k not in cfg or isinstance(v, bool) or not isinstance(v, int) or v < 1:
            continue  # reported above
        if k.startswith("BLOCK_SIZE") and not _pow2(v):
            problems.append(f"{k}={safeio.shown(v)} is not a power of two")
        elif k == "num_warps" and v not in VALID_WARPS:
            problems.append(f"num_warps={safeio.shown(v)} is not one of {', '.join(map(str, VALID_WARPS))}")
        elif strict:
            lo, hi = engine_limits()[k]
            if not lo <= v <= hi:
                what = "a power of two in" if k.startswith("BLOCK_SIZE") else "in"
                problems.append(f"{k}={safeio.shown(v)} is outside what the engine's kernel runs "
                                f"(valid: {what} {lo}..{hi})")
    return problems
