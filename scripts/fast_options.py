#!/usr/bin/env python3
"""A/B of the fast variant's options at fixed configs, one card, one run.

For each (shape, M) the configs come from a committed bench_kernel CSV (the faithful and
the fast winners), plus --extra-configs. Each config is timed with the fast variant's
heuristic FastPlan and alternatives of it, chosen by --set:
  sort    tile-ordered rows off, sort2 only (GEMM1's output and the activation in align's
          order), sort1 too (x gathered into that order);
  cap     the stage cap off, on, on keeping at least 2 stages;
  split2  GEMM2 split 2 to 4 ways into the fused top-k sum;
optionally the faithful kernel too (--faithful); both GEMMs alone and the whole layer, with
bench_kernel.py's timer (paced, L2 flushed, fresh routing per replay).

Usage: PYTHONPATH=. python3 scripts/fast_options.py --out $OUT [--set sort] [--ms 256,1024] [--shapes 0,1]
Writes fast_options_<gpu>.csv under --out.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench_kernel as bk  # noqa: E402


def parse_short(s: str) -> dict:
    """'M128/N256/K64/G16/w8/s4' -> the six knobs."""
    v = [int(p[1:]) for p in s.split("/")]
    return bk.cfg(*v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    ap.add_argument("--csv", default=os.path.join(os.path.dirname(HERE), "benchmarks",
                                                  "bench_kernel_NVIDIA_H100_80GB_HBM3.csv"))
    ap.add_argument("--shapes", default="")
    ap.add_argument("--ms", default="64,256,1024,4096")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--flush", choices=("write", "read"), default="read")
    ap.add_argument("--configs", choices=("fast", "both"), default="fast",
                    help="time the fast winner only, or the faithful winner too")
    ap.add_argument("--faithful", action="store_true", help="also time the faithful kernel")
    ap.add_argument("--set", choices=("sort", "cap", "split2"), default="sort",
                    help="sort: tile-ordered rows on / off; cap: the stage cap off / floor 1 / floor 2; "
                         "split2: GEMM2 split 2-4 ways along N into the fused top-k sum")
    ap.add_argument("--extra-configs", default="",
                    help="more configs to time at every point, e.g. M128/N128/K64/G1/w4/s5 (comma-separated)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import torch
    from moeplan.kernels import MoeRunner
    import moeplan.kernels.moe_gemm as mg
    from moeplan.kernels.inputs import make_routing

    known = {}
    with open(args.csv) as f:
        for r in csv.DictReader(f):
            cs = [parse_short(r["fast_best_config"])] if r.get("fast_best_config") else []
            if args.configs == "both" or not cs:
                cs.append(parse_short(r["best_config"]))
            known[(r["shape"], int(r["M"]))] = cs
    t0 = time.time()
    timer = bk.Timer(flush=args.flush)
    gpu = torch.cuda.get_device_name()
    tag = gpu.replace(" ", "_").replace("/", "_")
    out_csv = os.path.join(args.out, f"fast_options_{tag}.csv")
    fields = ["gpu", "shape", "M", "config", "option", "gemms_us", "layer_us"]
    f = open(out_csv, "w", newline="")
    wr = csv.DictWriter(f, fieldnames=fields)
    wr.writeheader()
    idx = [int(i) for i in args.shapes.split(",")] if args.shapes else range(len(bk.SPECS))
    ms = [int(m) for m in args.ms.split(",")]
    for si in idx:
        spec = bk.SPECS[si]
        full = bk.real_inputs(spec, max(ms), seed=si)
        for M in ms:
            gen = torch.Generator(device="cuda").manual_seed(1000 + M)
            routings = [make_routing(M, spec.E, spec.topk, "cuda", gen) for _ in range(8)]
            base = MoeRunner(full.x[:M], full.w1, full.w2, routings[0][0], routings[0][1], None, full.quant)
            cfgs = []
            extra = [parse_short(x) for x in args.extra_configs.split(",") if x]
            for c in known.get((spec.name, M), []) + extra:
                if c not in cfgs:
                    cfgs.append(c)
            for c in cfgs:
                heur = base.with_config(c, variant="fast").plan.fast
                options = [("faithful", "faithful", None, 1)] if args.faithful else []
                if args.set == "sort":
                    options += [("fast", "fast", heur, 2),
                                ("fast-nosort", "fast", dataclasses.replace(heur, sort1=False, sort2=False), 2),
                                ("fast+sort2", "fast", dataclasses.replace(heur, sort1=False, sort2=True), 2),
                                ("fast+sort12", "fast", dataclasses.replace(heur, sort1=True, sort2=True), 2)]
                elif args.set == "split2":  # GEMM2 split along its reduction (needs the fused sum)
                    options += [("fast", "fast", heur, 2)]
                    options += [(f"fast+split2={n}", "fast", dataclasses.replace(heur, split2=n, fuse_sum=True), 2)
                                for n in (2, 3, 4) if n != heur.split2]
                else:  # the stage cap: off, keeping >= 1 stage, keeping >= 2
                    options += [("cap-off", "fast", dataclasses.replace(heur, fit_stages=False), 1),
                                ("cap-floor1", "fast", dataclasses.replace(heur, fit_stages=True), 1),
                                ("cap-floor2", "fast", dataclasses.replace(heur, fit_stages=True), 2)]
                for name, variant, fp, floor in options:
                    mg.FAST_STAGE_FLOOR = floor  # read by the launcher at each launch
                    try:
                        r = base.with_config(c, variant=variant, fast=fp)
                        g = bk.time_runner(r, routings, timer, args.reps, gemms_only=True)
                        lay = bk.time_runner(r, routings, timer, args.reps)
                    except Exception as e:  # noqa: BLE001 - keep the other options
                        print(f"{spec.name[:28]} M={M} {bk.short(c)} {name}: {type(e).__name__}: {str(e)[:200]}",
                              flush=True)
                        continue
                    wr.writerow({"gpu": gpu, "shape": spec.name, "M": M, "config": bk.short(c), "option": name,
                                 "gemms_us": round(g, 1), "layer_us": round(lay, 1)})
                    f.flush()
                    print(f"[{time.time() - t0:6.1f}s] {spec.name[:28]:28s} M={M:5d} {bk.short(c):24s} "
                          f"{name:12s} gemms {g:8.1f} layer {lay:8.1f}", flush=True)
        del full
        torch.cuda.empty_cache()
    f.close()
    print(f"wrote {out_csv} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
