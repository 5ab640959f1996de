#!/usr/bin/env python3
"""Run a few layer calls inside a CUDA profiler range, for Nsight Compute.

Each case is run once outside the range (compilation, warm-up) and once inside it, so
`ncu --profile-from-start off` sees exactly the two grouped GEMMs (and the small stages)
of one call per case. Usage on a GPU machine:

    ncu --profile-from-start off --clock-control none -k regex:_moe_gemm_kernel \\
        --section SpeedOfLight --section Occupancy --section LaunchStats \\
        python3 scripts/ncu_cases.py
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_kernel import SPECS, cfg, real_inputs  # noqa: E402

CASES = [  # (spec, M, config): the points furthest from the floor, with their best configs
    (SPECS[5], 4096, cfg(64, 128, 128, 16, 4, 3)),   # DeepSeek-V3 TP16 fp8 block: GEMM2 2x its bytes
    (SPECS[0], 1024, cfg(128, 256, 64, 16, 8, 4)),   # Mixtral TP1 bf16: bytes ~ flops
    (SPECS[2], 1, cfg(16, 128, 128, 1, 4, 4)),       # Qwen3 decode: 1.9 TB/s streams
]


def main():
    import torch
    from moeplan.kernels import MoeRunner
    runners = []
    for spec, M, c in CASES:
        r = MoeRunner.from_inputs(real_inputs(spec, M), c)
        r.run()
        runners.append(r)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for r in runners:
        r.run()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print("cases:", ", ".join(f"{s.name.split(' (')[0]} M={M}" for s, M, _ in CASES))


if __name__ == "__main__":
    main()
