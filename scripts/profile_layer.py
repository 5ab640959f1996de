#!/usr/bin/env python3
"""Per-kernel device times of the fused-MoE layer (torch.profiler, CUDA activity), with the
bytes each grouped GEMM must move and the bandwidth that implies.

Each case runs the whole layer eagerly (warm-up first, fresh routing per call, L2 flushed
between calls); kernel durations come from the profiler's device timestamps, so launch
gaps are not in them. Prints one table per case and writes profile_layer.csv.

Usage: PYTHONPATH=. python3 scripts/profile_layer.py --out $OUT [--calls 20]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_kernel import SPECS, Spec, cfg, real_inputs, short, weight_bytes_per_expert  # noqa: E402

GPT_OSS = Spec("gpt-oss-20b mxfp4 (E=32,K=2880,N=2880,top4)", 32, 2880, 2880, 4, "mxfp4", {"bias": True})

# (spec, M, config, variant)
CASES = [
    (SPECS[2], 1, cfg(16, 128, 128, 1, 4, 4), "faithful"),
    (SPECS[2], 1, cfg(16, 64, 128, 1, 4, 3), "fast"),
    (SPECS[3], 1, cfg(16, 64, 128, 1, 4, 5), "faithful"),
    (SPECS[3], 1, cfg(16, 128, 128, 1, 4, 3), "fast"),
    (SPECS[5], 1, cfg(16, 32, 128, 1, 4, 5), "faithful"),
    (SPECS[5], 1, cfg(16, 128, 128, 1, 4, 4), "fast"),
    (SPECS[5], 4096, cfg(64, 128, 128, 16, 4, 3), "faithful"),
    (SPECS[3], 4096, cfg(64, 256, 128, 16, 8, 3), "faithful"),
    (SPECS[2], 4096, cfg(128, 256, 64, 16, 8, 4), "faithful"),
    (SPECS[0], 1024, cfg(128, 256, 64, 16, 8, 4), "faithful"),
    (GPT_OSS, 1, cfg(16, 32, 64, 16, 4, 3), "faithful"),
    (GPT_OSS, 1, cfg(16, 64, 32, 1, 4, 4), "faithful"),
    (GPT_OSS, 1, cfg(16, 64, 128, 1, 4, 4), "faithful"),
    (GPT_OSS, 1, cfg(16, 128, 128, 1, 4, 3), "faithful"),
    (GPT_OSS, 1, cfg(16, 64, 128, 1, 4, 4), "fast"),
    (GPT_OSS, 64, cfg(16, 32, 64, 16, 4, 3), "faithful"),
    (GPT_OSS, 64, cfg(16, 64, 128, 1, 4, 4), "faithful"),
    (GPT_OSS, 4096, cfg(64, 128, 64, 16, 4, 3), "faithful"),
    (GPT_OSS, 4096, cfg(128, 128, 64, 16, 8, 3), "faithful"),
    (GPT_OSS, 4096, cfg(128, 256, 64, 16, 8, 3), "faithful"),
]


def kernel_times(fn, calls, flush):
    import torch
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn(0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            flush()
            fn(i)
        torch.cuda.synchronize()
    evs = sorted((ev for ev in prof.events() if ev.device_type.name == "CUDA"), key=lambda ev: ev.time_range.start)
    total = defaultdict(float)
    count = defaultdict(int)
    seen = defaultdict(int)  # occurrences of a kernel name within the current call
    for ev in evs:
        name = ev.name
        if "FillFunctor<unsigned char>" in name:  # the L2 flush starts a new call
            seen.clear()
            continue
        seen[name] += 1
        key = f"{name[:90]} #{seen[name]}"
        total[key] += ev.time_range.elapsed_us()
        count[key] += 1
    return {k: (total[k] / calls, count[k] / calls) for k in total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--match", default="", help="only cases whose shape name contains this")
    args = ap.parse_args()
    import torch
    from moeplan.kernels import MoeRunner
    from moeplan.kernels.inputs import make_routing
    flush_buf = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    rows = []
    for spec, M, c, variant in CASES:
        if args.match and args.match not in spec.name:
            continue
        try:
            if spec is GPT_OSS:
                from moeplan.kernels import make_moe_inputs
                inp = make_moe_inputs(M, spec.E, spec.N, spec.K, spec.topk, "bf16", "mxfp4", device="cuda", bias=True)
                r = MoeRunner.from_inputs(inp, c, activation="swigluoai", variant=variant)
            else:
                inp = real_inputs(spec, M)
                r = MoeRunner.from_inputs(inp, c, variant=variant)
            wpe = weight_bytes_per_expert(spec, inp)
            gen = torch.Generator(device="cuda").manual_seed(7)
            routings = [make_routing(M, spec.E, spec.topk, "cuda", gen) for _ in range(8)]
            hit = sum(int(ids.unique().numel()) for _, ids in routings) / len(routings)

            def call(i):
                w, ids = routings[i % len(routings)]
                r.set_routing(ids, w)
                r.run()
            times = kernel_times(call, args.calls, flush_buf.zero_)
        except Exception as e:  # noqa: BLE001
            print(f"{spec.name} M={M} {variant}: FAILED {type(e).__name__}: {str(e)[:200]}")
            continue
        w1b = wpe * 2 / 3  # gate_up (2N x K) holds 2/3 of an expert's weight bytes, down (K x N) 1/3
        w2b = wpe - w1b
        print(f"\n{spec.name} M={M} {variant} {short(c)} plan={getattr(r.plan, 'fast', None)} experts hit {hit:.1f}")
        for name, (us, n) in sorted(times.items(), key=lambda kv: -kv[1][0]):
            print(f"  {us:9.1f} us  x{n:.0f}  {name[:110]}")
            rows.append({"case": spec.name, "M": M, "variant": variant, "config": short(c), "kernel": name[:200],
                         "us": round(us, 2), "per_call": n, "experts_hit": hit,
                         "w1_MB_hit": round(hit * w1b / 1e6, 2), "w2_MB_hit": round(hit * w2b / 1e6, 2)})
        print(f"  weights hit: gate_up {hit * w1b / 1e6:.1f} MB ({hit * w1b / 3.0e6:.1f} us at 3 TB/s), "
              f"down {hit * w2b / 1e6:.1f} MB ({hit * w2b / 3.0e6:.1f} us)")
        del r, inp
        torch.cuda.empty_cache()
    path = os.path.join(args.out, "profile_layer.csv")
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["case"])
        wr.writeheader()
        wr.writerows(rows)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
