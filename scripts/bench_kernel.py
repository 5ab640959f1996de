#!/usr/bin/env python3
"""Benchmark the faithful Triton fused-MoE kernel on a GPU against its roofline floor.

One run measures (all on the same card):
  * copy bandwidth: a large device-to-device copy, bytes read + written;
  * matmul peak: bf16 torch.matmul 8192^3, fp8 torch._scaled_mm 8192^3 (if available);
  * for each shape and M in {1, 8, 64, 256, 1024, 4096}:
      gemms_us  both grouped GEMMs (CUDA-graph replay, median), best config of a small
                sweep around the default / known-good configs;
      layer_us  the whole layer (align, activation quant, GEMM1, activation, GEMM2,
                topk sum) with that config;
      default_* the same with the engine's default heuristic config;
      floor_us  max(bytes / bw, flops / peak): bytes = weights (+ scales) of the distinct
                experts hit + bf16 input + bf16 output; flops = 2 * M * topk * 3 * N * K.
Timing: every replay gets a fresh routing (8 pre-generated sets, copied in place before
the replay, with align/quant of that routing done before the timed region for the
GEMM-only graph), then the L2 cache is flushed, then CUDA events bracket one graph
replay; the median over replays is reported.

Kernels are compiled ahead in a pool of processes (Triton's disk cache), so the sweep
costs little compile time in the timing process.

Usage: PYTHONPATH=. python3 scripts/bench_kernel.py --out $OUT [--quick] [--budget-s 400]
Writes bench_kernel_<gpu>.csv, bench_kernel_summary.md and bench_log.txt under --out.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MS = (1, 8, 64, 256, 1024, 4096)
VARIANTS = ("faithful", "fast")
ENGINE_CSV = os.path.join(os.path.dirname(HERE), "..", "shared", "reference", "engine_kernel_h100.csv")
# the engine's figures travel with the repo (benchmarks/engine_kernel_h100.csv, a copy of
# shared/reference/engine_kernel_h100.csv) because the GPU machine only gets the checkout
ENGINE_CSV_CANDIDATES = [
    os.path.join(os.path.dirname(HERE), "benchmarks", "engine_kernel_h100.csv"),
    os.path.join(os.path.dirname(HERE), "shared", "reference", "engine_kernel_h100.csv"),
    "/work/shared/reference/engine_kernel_h100.csv",
]


@dataclass
class Spec:
    name: str  # the engine CSV's shape label
    E: int
    N: int
    K: int
    topk: int
    scheme: Optional[str] = None  # None = bf16
    kw: dict = field(default_factory=dict)

    @property
    def block_shape(self):
        return self.kw.get("block_shape")


SPECS = [
    Spec("Mixtral-8x7B TP1 bf16 (E=8,K=4096,N=14336,top2)", 8, 14336, 4096, 2),
    Spec("Mixtral-8x7B TP2 bf16 (E=8,K=4096,N=7168,top2)", 8, 7168, 4096, 2),
    Spec("Qwen3-30B-A3B TP1 bf16 (E=128,K=2048,N=768,top8)", 128, 768, 2048, 8),
    Spec("DeepSeek-V3 TP4 fp8 block128 (E=256,K=7168,N=512,top8)", 256, 512, 7168, 8, "fp8_w8a8",
         {"block_shape": [128, 128]}),
    Spec("Mixtral-8x7B TP2 fp8 per-tensor (E=8,K=4096,N=7168,top2)", 8, 7168, 4096, 2, "fp8_w8a8",
         {"static_act_scales": True}),
    Spec("DeepSeek-V3 TP16 fp8 block128 (E=256,K=7168,N=128,top8)", 256, 128, 7168, 8, "fp8_w8a8",
         {"block_shape": [128, 128]}),
]


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------

def cfg(bm, bn, bk, gm, w, s):
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": gm,
            "num_warps": w, "num_stages": s}


def key_of(c: dict) -> tuple:
    return (c["BLOCK_SIZE_M"], c["BLOCK_SIZE_N"], c["BLOCK_SIZE_K"], c["GROUP_SIZE_M"], c["num_warps"], c["num_stages"])


def short(c: dict) -> str:
    return "M{}/N{}/K{}/G{}/w{}/s{}".format(*key_of(c))


def default_cfg(spec: Spec, M: int) -> dict:
    from moeplan.engines.vllm import default_config
    dtype = "fp8_w8a8" if spec.scheme == "fp8_w8a8" else None
    return default_config(M, spec.E, spec.N, spec.K, spec.topk, dtype=dtype, block_shape=spec.block_shape).to_dict()


SMEM_LIMIT = 232448  # H100 bytes per block


def smem_bytes(c: dict, elt: int) -> int:
    """Shared memory the pipelined A and B tiles take (Triton's main use of it here)."""
    bm = max(16, c["BLOCK_SIZE_M"])
    return (bm * c["BLOCK_SIZE_K"] + c["BLOCK_SIZE_K"] * c["BLOCK_SIZE_N"]) * elt * c["num_stages"]


def sweep(spec: Spec, M: int, quick: bool = False) -> list[dict]:
    """A small sweep (two to three dozen) around the default and known-good H100 configs.

    The families follow the average rows per expert r = M * topk / E: weight streaming
    with BLOCK_SIZE_M = 16 for decode, larger M tiles (and wgmma-sized 64/128 rows) as r
    grows, grouped ordering and 8 warps for the compute-bound end. Configs whose
    pipelined tiles cannot fit in shared memory are left out.
    """
    r = M * spec.topk / spec.E
    block = spec.block_shape is not None
    fp8 = spec.scheme == "fp8_w8a8"
    elt = 1 if fp8 else 2
    bks = (128,) if block else ((128, 256) if fp8 else (64, 128, 256))
    out: list[dict] = [default_cfg(spec, M)]
    if r <= 4:  # decode: weight streaming
        for bn in (32, 64, 128):
            for bk in bks[-2:] if not block else bks:
                for st in (3, 4, 5):
                    out.append(cfg(16, bn, bk, 1, 4, st))
        out += [cfg(16, 256, 128, 1, 8, 3), cfg(16, 128, 128, 1, 8, 4), cfg(16, 64, 64 if not block else 128, 1, 4, 5),
                cfg(16, 32, 128, 1, 2, 4), cfg(32, 64, 128, 1, 4, 4), cfg(64, 64, 128, 16, 4, 5)]
    elif r <= 32:
        for bm in (16, 32, 64):
            for bn in (64, 128):
                for bk in bks[-2:] if not block else bks:
                    out.append(cfg(bm, bn, bk, 1, 4, 3 if bm > 16 else 4))
        out += [cfg(16, 256, 128, 16, 8, 3), cfg(32, 128, 128, 1, 4, 4), cfg(64, 128, 128, 1, 4, 4),
                cfg(64, 128, 64 if not block else 128, 1, 4, 5), cfg(64, 128, 128, 64, 8, 3), cfg(16, 32, 256 if not block else 128, 16, 4, 3),
                cfg(32, 64, 128, 1, 4, 5), cfg(16, 128, 128, 1, 4, 5)]
    elif r <= 160:
        for bm in (32, 64, 128):
            for bn in (128, 256):
                for bk in ((64, 128) if not block else (128,)):
                    out.append(cfg(bm, bn, bk, 1 if bm == 32 else 16, 8 if bm == 128 or bn == 256 else 4, 3))
        out += [cfg(64, 128, 64 if not block else 128, 1, 4, 5), cfg(64, 128, 128, 1, 4, 4), cfg(128, 128, 64 if not block else 128, 1, 8, 5),
                cfg(128, 256, 64 if not block else 128, 64, 8, 4), cfg(64, 64, 128, 1, 4, 4), cfg(16, 128, 128, 1, 4, 3),
                cfg(128, 128, 128, 16, 8, 3), cfg(64, 256, 128, 32, 8, 3)]
        # deeper pipelines for the 8-warp tiles, and fp8's 128-byte K tiles (session 3)
        bkc = 128 if fp8 else 64
        out += [cfg(128, 256, bkc, 16, 8, 4), cfg(128, 128, bkc, 16, 8, 4), cfg(64, 256, bkc, 16, 8, 4),
                cfg(64, 128, bkc, 16, 4, 4)]
        if fp8 and not block:
            out += [cfg(64, 128, 256, 16, 4, 3), cfg(128, 128, 256, 16, 8, 3)]
        # one warpgroup on a 128-row tile (session 4): at 64-100 pairs per expert each
        # expert fits one 128-row tile, so B is streamed once, with half the registers of 8 warps
        out += [cfg(128, 128, bkc, 1, 4, 5), cfg(128, 128, bkc, 1, 4, 4)]
    else:  # compute-bound end
        for bm in (64, 128):
            for bn in (128, 256):
                for bk in ((64, 128) if not block else (128,)):
                    for gm in ((16, 64) if bm == 128 else (1, 32)):
                        out.append(cfg(bm, bn, bk, gm, 8 if (bm == 128 or bn == 256) else 4, 3 if bk == 128 else 4))
        out += [cfg(128, 256, 64 if not block else 128, 32, 8, 4), cfg(128, 128, 64 if not block else 128, 1, 8, 5),
                cfg(256, 128, 64 if not block else 128, 16, 8, 3), cfg(128, 256, 128, 16, 8, 3), cfg(64, 128, 64 if not block else 128, 1, 4, 5)]
        if fp8:  # 128-byte K tiles with deeper pipelines (session 3)
            out += [cfg(128, 256, 128, 16, 8, 4), cfg(128, 256, 128, 64, 8, 4), cfg(128, 128, 128, 16, 8, 4),
                    cfg(64, 256, 128, 16, 8, 4)]
    seen, uniq = set(), []
    for i, c in enumerate(out):
        if block:
            c = dict(c, BLOCK_SIZE_K=min(c["BLOCK_SIZE_K"], 128))
        if i > 0 and smem_bytes(c, elt) > SMEM_LIMIT:
            continue
        if key_of(c) not in seen:
            seen.add(key_of(c))
            uniq.append(c)
    if quick:
        uniq = uniq[:5]
    return uniq


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def real_inputs(spec: Spec, M: int, seed: int = 0):
    from moeplan.kernels import make_moe_inputs
    return make_moe_inputs(M, spec.E, spec.N, spec.K, spec.topk, "bf16", spec.scheme, device="cuda",
                           seed=seed, **spec.kw)


def fake_inputs(spec: Spec, M: int):
    """Right shapes/dtypes with cheap contents: enough to compile every kernel variant."""
    import torch
    from moeplan.kernels.inputs import MoeInputs, make_routing
    from moeplan.layout.quant import quant_for_scheme
    E, N, K = spec.E, spec.N, spec.K
    d = "cuda"
    x = torch.randn((M, K), device=d, dtype=torch.bfloat16)
    w, ids = make_routing(M, E, spec.topk, d)
    if spec.scheme is None:
        return MoeInputs(x, torch.empty((E, 2 * N, K), device=d, dtype=torch.bfloat16).normal_(0, 0.02),
                         torch.empty((E, K, N), device=d, dtype=torch.bfloat16).normal_(0, 0.02), w, ids, None)
    w1 = torch.empty((E, 2 * N, K), device=d, dtype=torch.float8_e4m3fn)
    w2 = torch.empty((E, K, N), device=d, dtype=torch.float8_e4m3fn)
    w1.view(torch.uint8).fill_(0x30)
    w2.view(torch.uint8).fill_(0x30)
    bs = spec.block_shape
    if bs:
        s1 = torch.ones((E, -(-2 * N // bs[0]), -(-K // bs[1])), device=d)
        s2 = torch.ones((E, -(-K // bs[0]), -(-N // bs[1])), device=d)
    else:
        s1, s2 = torch.ones(E, device=d), torch.ones(E, device=d)
    a = {}
    if spec.kw.get("static_act_scales"):
        a = dict(a1_scale=torch.ones(1, device=d), a2_scale=torch.ones(1, device=d))
    q = quant_for_scheme("fp8_w8a8", block_shape=bs, w1_scale=s1, w2_scale=s2, **a)
    return MoeInputs(x, w1, w2, w, ids, q)


def _compile_task(args):
    """Worker: run every (M, config) of one spec once, to fill Triton's disk cache."""
    spec_idx, cfgs_by_m = args
    import torch
    from moeplan.kernels import MoeRunner
    spec = SPECS[spec_idx]
    done = failed = 0
    t0 = time.time()
    for M, cfgs in cfgs_by_m:
        inp = fake_inputs(spec, M)
        for c in cfgs:
            for variant in VARIANTS:
                try:
                    MoeRunner.from_inputs(inp, c, variant=variant).run()
                    done += 1
                except Exception:  # noqa: BLE001 - resource errors etc. are reported by the timer
                    failed += 1
        torch.cuda.synchronize()
        del inp
    torch.cuda.empty_cache()
    return spec_idx, done, failed, time.time() - t0


def precompile(plan: list[tuple[int, int, list[dict]]], jobs: int, log) -> None:
    """plan: (spec index, M, configs). Split by config across `jobs` spawned processes."""
    # group tasks of the same spec with the same config chunk so each variant compiles once
    by_cfg: dict = {}
    for si, M, cfgs in plan:
        for c in cfgs:
            by_cfg.setdefault((si, key_of(c)), []).append((M, c))
    tasks = []
    for (si, _), items in by_cfg.items():
        tasks.append((si, [(M, [c]) for M, c in items]))
    tasks.sort(key=lambda t: t[0])
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs) as pool:
        n_ok = n_bad = 0
        for si, ok, bad, dt in pool.imap_unordered(_compile_task, tasks, chunksize=2):
            n_ok += ok
            n_bad += bad
    log(f"precompile: {len(tasks)} tasks, {n_ok} runs ok, {n_bad} failed, {time.time() - t0:.1f}s with {jobs} processes")


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------

class Timer:
    """CUDA-event timing of single calls with an L2 flush before each.

    Pacing (on by default): an H100 under a sustained matrix load hits its power cap
    within a fraction of a second and lowers its SM clock (measured here: 100 back-to-back
    replays of Mixtral's two GEMMs, first 10 at 5.08 ms, last 10 at 6.39 ms; nvidia-smi
    showed 1400-1500 MHz instead of 1980 with the SW power-cap reason). So each batch is
    preceded by an idle gap as long as the previous busy time (at most `max_idle_s`) and
    long calls get fewer reps (about `budget_s` of timed work, at least 5): every number,
    the matmul peaks included, is then taken in the same, unthrottled state.
    """

    def __init__(self, flush_mb: int = 256, pace: bool = True, budget_s: float = 0.06, max_idle_s: float = 0.4,
                 flush: str = "write"):
        import torch
        self.torch = torch
        self.flush_buf = torch.zeros(flush_mb << 20, dtype=torch.uint8, device="cuda")
        self.flush_sum = torch.zeros((), dtype=torch.int64, device="cuda")
        self.pace, self.budget_s, self.max_idle_s = pace, budget_s, max_idle_s
        self.flush_mode = flush
        self.last_busy_s = 0.0

    def flush(self):
        """Evict the L2 before a timed call. "write" (what the engine's figures used, triton's
        do_bench) zeroes 256 MB, which leaves the L2 full of dirty lines the timed kernel's
        reads must first write back; "read" sums 256 MB, leaving clean lines (a cold cache)."""
        if self.flush_mode == "read":
            torch = self.torch
            torch.sum(self.flush_buf.view(torch.int64), dim=0, out=self.flush_sum)
        else:
            self.flush_buf.zero_()

    def median_us(self, run, before=None, reps: int = 20) -> float:
        """Median of timed calls of run(); before(i) runs untimed first (then L2 flush)."""
        torch = self.torch
        if self.pace:
            torch.cuda.synchronize()
            time.sleep(min(self.max_idle_s, self.last_busy_s))
            t0 = time.perf_counter()
            if before is not None:
                before(0)
            run()  # one untimed call: how long is a call?
            torch.cuda.synchronize()
            one = time.perf_counter() - t0
            reps = max(5, min(reps, int(self.budget_s / max(one, 1e-6))))
            time.sleep(min(self.max_idle_s, one))
        t_start = time.perf_counter()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            if before is not None:
                before(i)
            self.flush()  # also keeps the GPU busy while the timed launch is enqueued
            starts[i].record()
            run()
            ends[i].record()
        torch.cuda.synchronize()
        self.last_busy_s = time.perf_counter() - t_start
        return 1000.0 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def measure_bandwidth(timer: Timer) -> float:
    torch = timer.torch
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    us = timer.median_us(lambda: b.copy_(a), reps=20)
    del a, b
    return 2 * n / (us * 1e-6)  # bytes read + written per second


def measure_peaks(timer: Timer) -> dict:
    """Matmul peaks (best of two paced measurements each): bf16 torch.matmul and fp8
    torch._scaled_mm 8192^3; then, for reference only, bf16 after ~1 s of back-to-back
    products (the power-capped state). That sustained run comes last: measured before
    the fp8 peak (as in session 2's runs) it left the card throttled for it (1379 vs
    1494 TFLOP/s at the end of the same run)."""
    torch = timer.torch
    n = 8192
    out = {}
    a = torch.randn((n, n), device="cuda", dtype=torch.bfloat16)
    b = torch.randn((n, n), device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    us = min(timer.median_us(lambda: a @ b, reps=20) for _ in range(2))
    out["bf16"] = 2 * n ** 3 / (us * 1e-6)
    try:
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.to(torch.float8_e4m3fn).t().contiguous().t()  # column-major second operand
        one = torch.ones((), device="cuda")
        f = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,  # noqa: E731
                                     use_fast_accum=True)
        for _ in range(3):
            f()
        us = min(timer.median_us(f, reps=20) for _ in range(2))
        out["fp8"] = 2 * n ** 3 / (us * 1e-6)
    except Exception as e:  # noqa: BLE001
        out["fp8"] = float("nan")
        out["fp8_error"] = repr(e)[:200]
    for _ in range(700):
        a @ b
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.record()
    for _ in range(20):
        a @ b
    en.record()
    torch.cuda.synchronize()
    out["bf16_sustained"] = 2 * n ** 3 * 20 / (st.elapsed_time(en) * 1e-3)
    time.sleep(1.0)  # let the clock recover before the next timed work
    return out


def weight_bytes_per_expert(spec: Spec, inputs) -> float:
    w1, w2, q = inputs.w1, inputs.w2, inputs.quant
    b = (w1[0].numel() * w1.element_size() + w2[0].numel() * w2.element_size())
    if q is not None:
        for s in (q.w1_scale, q.w2_scale):
            if s is not None:
                b += s.numel() * s.element_size() / s.shape[0]
    return b


def load_engine() -> dict:
    for p in ENGINE_CSV_CANDIDATES + [ENGINE_CSV]:
        if os.path.exists(p):
            with open(p) as f:
                return {(r["shape"], int(r["M"])): r for r in csv.DictReader(f)}
    return {}


def gmean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    ap.add_argument("--quick", action="store_true", help="5 configs per point")
    ap.add_argument("--shapes", default="", help="comma-separated indices into SPECS (default: all)")
    ap.add_argument("--ms", default=",".join(map(str, MS)))
    ap.add_argument("--jobs", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop sweeping (default configs only) past this")
    ap.add_argument("--wait-for", default="", help="file whose existence gates the timing phase")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--diag", action="store_true", help="also compare each GEMM with cuBLAS bmm (Mixtral, M=4096)")
    ap.add_argument("--align", action="store_true", help="also time align variants alone")
    ap.add_argument("--no-pace", action="store_true", help="time back to back (no idle gaps; see Timer)")
    ap.add_argument("--flush", choices=("write", "read"), default="write",
                    help="L2 eviction before each timed call: write (zero 256 MB, as the engine's figures) "
                         "or read (sum 256 MB: a clean cold cache); see Timer.flush")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    log_f = open(os.path.join(args.out, "bench_log.txt"), "w")

    def log(msg):
        line = f"[{time.time() - t_start:6.1f}s] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    specs = [SPECS[int(i)] for i in args.shapes.split(",")] if args.shapes else SPECS
    spec_idx = [SPECS.index(s) for s in specs]
    ms = [int(m) for m in args.ms.split(",")]
    plan = [(si, M, sweep(SPECS[si], M, args.quick)) for si in spec_idx for M in ms]
    log(f"{len(plan)} points, {sum(len(c) for _, _, c in plan)} (point, config) pairs")
    if args.jobs > 0:
        precompile(plan, args.jobs, log)

    import torch
    from moeplan.kernels import MoeRunner
    from moeplan.kernels.inputs import make_routing

    if args.wait_for:
        while not os.path.exists(args.wait_for):
            time.sleep(1.0)
        log("gate file present: timing starts")
    gpu = torch.cuda.get_device_name()
    timer = Timer(pace=not args.no_pace, flush=args.flush)
    bw = measure_bandwidth(timer)
    peaks = measure_peaks(timer)
    log(f"GPU {gpu}: copy bandwidth {bw / 1e12:.2f} TB/s, bf16 {peaks['bf16'] / 1e12:.0f} TFLOP/s, "
        f"fp8 {peaks['fp8'] / 1e12:.0f} TFLOP/s (pacing {'on' if timer.pace else 'off'}, flush {timer.flush_mode}; bf16 after 1 s of "
        f"back-to-back products: {peaks['bf16_sustained'] / 1e12:.0f} TFLOP/s)")
    if args.diag:
        diagnose(timer, log)
    if args.align:
        align_bench(log)
    engine = load_engine()
    gpu_tag = gpu.replace(" ", "_").replace("/", "_")
    csv_path = os.path.join(args.out, f"bench_kernel_{gpu_tag}.csv")
    fields = ["gpu", "shape", "M", "floor_us", "gemms_us", "layer_us", "default_gemms_us", "default_layer_us",
              "best_config", "n_configs", "gemms_over_floor", "layer_over_floor", "default_gemms_over_floor",
              "engine_shipped_us", "engine_default_us", "ours_over_engine_shipped",
              "default_over_engine_default", "align_us", "act_us", "experts_hit", "bytes_MB", "gflop",
              "fast_gemms_us", "fast_layer_us", "fast_best_config", "fast_plan", "fast_gemms_over_floor",
              "fast_layer_over_floor", "fast_over_engine_shipped", "fast_over_faithful_layer"]
    rows = []
    f_csv = open(csv_path, "w", newline="")
    wr = csv.DictWriter(f_csv, fieldnames=fields)
    wr.writeheader()
    for si in spec_idx:
        spec = SPECS[si]
        full = real_inputs(spec, max(ms), seed=si)
        wpe = weight_bytes_per_expert(spec, full)
        peak = peaks["fp8"] if spec.scheme == "fp8_w8a8" and math.isfinite(peaks["fp8"]) else peaks["bf16"]
        for M in ms:
            try:
                row = bench_point(spec, M, full, wpe, peak, bw, timer, engine, gpu, args, t_start, log)
            except Exception as e:  # noqa: BLE001 - keep the other points
                log(f"{spec.name} M={M}: FAILED {type(e).__name__}: {str(e)[:300]}")
                continue
            if row is None:
                continue
            rows.append(row)
            wr.writerow(row)
            f_csv.flush()
        del full
        torch.cuda.empty_cache()
    f_csv.close()
    end = measure_peaks(timer)  # clock drift check: the same products at the end of the run
    log(f"end of run: bf16 {end['bf16'] / 1e12:.0f} TFLOP/s, fp8 {end['fp8'] / 1e12:.0f} TFLOP/s "
        f"(start {peaks['bf16'] / 1e12:.0f} / {peaks['fp8'] / 1e12:.0f})")
    peaks["bf16_end"], peaks["fp8_end"] = end["bf16"], end["fp8"]
    summary = write_summary(args.out, rows, gpu, bw, peaks, time.time() - t_start, args)
    print(summary)
    log(f"done in {time.time() - t_start:.0f}s; wrote {csv_path}")


def bench_point(spec, M, full, wpe, peak, bw, timer, engine, gpu, args, t_start, log):
    """Sweep, time and describe one (shape, M) point; returns its CSV row."""
    import torch
    from moeplan.kernels import MoeRunner
    from moeplan.kernels.inputs import make_routing
    n_routings = 8
    gen = torch.Generator(device="cuda").manual_seed(1000 + M)
    routings = [make_routing(M, spec.E, spec.topk, "cuda", gen) for _ in range(n_routings)]
    hit = statistics.mean(int(ids.unique().numel()) for _, ids in routings)
    nbytes = hit * wpe + 2 * M * spec.K * 2
    flops = 2.0 * M * spec.topk * 3 * spec.N * spec.K
    floor_us = max(nbytes / bw, flops / peak) * 1e6
    x = full.x[:M]
    base = MoeRunner(x, full.w1, full.w2, routings[0][0], routings[0][1], None, full.quant)
    cands = sweep(spec, M, args.quick)
    if time.time() - t_start > args.budget_s:
        cands = cands[:1]  # out of time: default only
    results = []  # (gemms_us, config)
    for c in cands:
        try:
            results.append((time_runner(base.with_config(c), routings, timer, args.reps, gemms_only=True), c))
        except Exception as e:  # noqa: BLE001 (OutOfResources and friends)
            log(f"  skip {short(c)}: {type(e).__name__}: {str(e)[:120]}")
    if not results:
        log(f"{spec.name} M={M}: no config ran")
        return None
    results.sort(key=lambda t: t[0])
    best_us, best_c = results[0]
    dflt = [t for t in results if key_of(t[1]) == key_of(cands[0])]
    d_us = dflt[0][0] if dflt else float("nan")

    l_us = time_runner(base.with_config(best_c), routings, timer, args.reps)
    dl_us = time_runner(base.with_config(cands[0]), routings, timer, args.reps) if dflt else float("nan")
    fast = fast_variant(spec, M, base, cands, routings, timer, args, log)
    align_us, act_us = stage_us(base.with_config(best_c), routings, timer, args.reps)
    eng = engine.get((spec.name, M), {})
    e_ship = float(eng.get("engine_gemms_shipped_table_us", "nan") or "nan")
    e_def = float(eng.get("engine_gemms_default_us", "nan") or "nan")
    row = {
        "gpu": gpu, "shape": spec.name, "M": M, "floor_us": round(floor_us, 1),
        "gemms_us": round(best_us, 1), "layer_us": round(l_us, 1),
        "default_gemms_us": round(d_us, 1), "default_layer_us": round(dl_us, 1),
        "best_config": short(best_c), "n_configs": len(results),
        "gemms_over_floor": round(best_us / floor_us, 3), "layer_over_floor": round(l_us / floor_us, 3),
        "default_gemms_over_floor": round(d_us / floor_us, 3),
        "engine_shipped_us": e_ship, "engine_default_us": e_def,
        "ours_over_engine_shipped": round(best_us / e_ship, 3) if e_ship == e_ship else "",
        "default_over_engine_default": round(d_us / e_def, 3) if e_def == e_def else "",
        "align_us": round(align_us, 1), "act_us": round(act_us, 1),
        "experts_hit": round(hit, 1), "bytes_MB": round(nbytes / 1e6, 1), "gflop": round(flops / 1e9, 2),
    }
    if fast is not None:
        fg, fl, fc, fp = fast
        row.update({
            "fast_gemms_us": round(fg, 1), "fast_layer_us": round(fl, 1), "fast_best_config": short(fc),
            "fast_plan": f"split{fp.split1}/{fp.split2}{'/sum' if fp.fuse_sum else ''}{'/tma' if fp.tma else ''}"
                         f"{'/1acc' if fp.one_acc and spec.block_shape else ''}"
                         f"{'/sort1' if fp.sort1 else ''}{'/sort2' if fp.sort2 else ''}"
                         f"{'/cap' if fp.fit_stages else ''}",
            "fast_gemms_over_floor": round(fg / floor_us, 3), "fast_layer_over_floor": round(fl / floor_us, 3),
            "fast_over_engine_shipped": round(fg / e_ship, 3) if e_ship == e_ship else "",
            "fast_over_faithful_layer": round(fl / l_us, 3),
        })
    log(f"{spec.name[:28]:28s} M={M:5d} floor {floor_us:8.1f} gemms {best_us:8.1f} "
        f"({best_us / floor_us:4.2f}x, engine {e_ship:8.1f}) layer {l_us:8.1f} default {d_us:8.1f} "
        f"align {align_us:5.1f} act {act_us:6.1f} best {short(best_c)} [{len(results)} cfgs]")
    if fast is not None:
        log(f"{'':28s}   fast: gemms {fast[0]:8.1f} ({fast[0] / floor_us:4.2f}x) layer {fast[1]:8.1f} "
            f"({fast[1] / floor_us:4.2f}x) best {short(fast[2])} {fast[3]}")
    return row


def time_runner(r, routings, timer, reps: int, gemms_only: bool = False) -> float:
    """Median us of one graph replay of runner r: the whole layer, or (gemms_only) the two
    GEMMs with align and input quant replayed untimed first; a fresh routing before each."""
    g_prep = _capture_prep(r) if gemms_only else None
    g = r.capture(num_calls=1, gemms_only=gemms_only)

    def before(i):
        w, ids = routings[i % len(routings)]
        r.set_routing(ids, w)
        if g_prep is not None:
            g_prep.replay()
    return timer.median_us(g.replay, before, reps=reps)


def fast_variant(spec, M, base, cands, routings, timer, args, log):
    """The fast variant at this point: the same sweep (GEMM stage = memset + both GEMMs),
    then the layer at its best config; at small M, the layer with other split-K / fused-sum
    choices too (logged, to check the heuristic). Returns (gemms, layer, config, FastPlan)."""
    from moeplan.kernels.fused_moe import FastPlan

    def timed(r, gemms_only):
        return time_runner(r, routings, timer, args.reps, gemms_only)

    results = []
    for c in cands:
        try:
            results.append((timed(base.with_config(c, variant="fast"), True), c))
        except Exception as e:  # noqa: BLE001
            log(f"  fast skip {short(c)}: {type(e).__name__}: {str(e)[:120]}")
    if not results:
        return None
    results.sort(key=lambda t: t[0])
    g_us, c = results[0]
    r = base.with_config(c, variant="fast")
    l_us = timed(r, False)
    plan = r.plan.fast
    import dataclasses
    if M <= 64:
        options = [FastPlan(s1, s2, fuse, plan.tma) for s1 in (1, 4, 16)
                   for s2, fuse in ((1, False), (1, True), (4, True))]
    else:
        options = [FastPlan(1, 1, False, plan.tma), FastPlan(1, 1, True, plan.tma)]
    options.append(dataclasses.replace(plan, tma=not plan.tma))  # the descriptor loads' effect
    if spec.block_shape:
        options.append(dataclasses.replace(plan, one_acc=not plan.one_acc))  # the accumulator form's
    options.append(dataclasses.replace(plan, fit_stages=not plan.fit_stages))  # the stage cap's
    if M > 64:  # tile-ordered rows: without, GEMM2 side only, with the gather of x too
        options += [dataclasses.replace(plan, sort1=s1, sort2=s2) for s1, s2 in
                    ((False, False), (False, True), (True, True)) if (s1, s2) != (plan.sort1, plan.sort2)]
    alts = []
    for fp in dict.fromkeys(options):  # FastPlans are hashable: each alternative once
        if fp == plan:
            continue
        try:
            alts.append((timed(base.with_config(c, variant="fast", fast=fp), False), fp))
        except Exception as e:  # noqa: BLE001
            log(f"  fast alt {fp}: {type(e).__name__}: {str(e)[:100]}")
    alts.sort(key=lambda t: t[0])
    log(f"  fast alternatives at {short(c)} (heuristic {plan.split1}/{plan.split2}{'s' if plan.fuse_sum else ''}: "
        f"{l_us:.1f} us): "
        + ", ".join(f"{fp.split1}/{fp.split2}{'s' if fp.fuse_sum else ''}{'t' if fp.tma else ''} {us:.1f}"
                    for us, fp in alts[:6])
        + "".join(f" | tma {'off' if plan.tma else 'on'}: {us:.1f}" for us, fp in alts if fp.tma != plan.tma)
        + "".join(f" | one_acc {'off' if plan.one_acc else 'on'}: {us:.1f}" for us, fp in alts
                  if fp.one_acc != plan.one_acc and fp.tma == plan.tma)
        + "".join(f" | stage cap {'off' if plan.fit_stages else 'on'}: {us:.1f}" for us, fp in alts
                  if fp.fit_stages != plan.fit_stages)
        + "".join(f" | sort {int(fp.sort1)}{int(fp.sort2)}: {us:.1f}" for us, fp in alts
                  if (fp.sort1, fp.sort2) != (plan.sort1, plan.sort2) and fp.tma == plan.tma
                  and fp.fit_stages == plan.fit_stages and fp.one_acc == plan.one_acc))
    return g_us, l_us, c, plan


def diagnose(timer: "Timer", log) -> None:
    """Compute-bound check (Mixtral TP1 bf16, M=4096): each GEMM alone vs cuBLAS bmm.

    The bmm does the same FLOPs on a perfectly balanced split (8 experts x 1024 rows),
    so it bounds what a grouped GEMM of this size can reach on this card.
    """
    import torch
    from moeplan.kernels import MoeRunner
    spec = SPECS[0]
    full = real_inputs(spec, 4096, seed=0)
    E, N, K = spec.E, spec.N, spec.K
    a = torch.randn((E, 1024, K), device="cuda", dtype=torch.bfloat16)
    w1t = full.w1.transpose(1, 2)  # (E, K, 2N) view
    h = torch.randn((E, 1024, N), device="cuda", dtype=torch.bfloat16)
    w2t = full.w2.transpose(1, 2)  # (E, N, K) view
    t1 = timer.median_us(lambda: torch.bmm(a, w1t), reps=10)
    t2 = timer.median_us(lambda: torch.bmm(h, w2t), reps=10)
    fl1, fl2 = 2 * 8192 * 2 * N * K, 2 * 8192 * N * K
    log(f"diag cuBLAS bmm balanced: gate_up {t1:.0f} us ({fl1 / t1 / 1e6:.0f} TFLOP/s), down {t2:.0f} us ({fl2 / t2 / 1e6:.0f} TFLOP/s)")
    # balanced routing: token m goes to experts (m % 8) and ((m + 1) % 8)
    m = torch.arange(4096, device="cuda")
    ids_bal = torch.stack([m % E, (m + 1) % E], dim=1).to(torch.int32)
    w_bal = torch.full((4096, 2), 0.5, device="cuda")
    for c in (cfg(128, 256, 64, 16, 8, 4), cfg(128, 256, 64, 64, 8, 3), cfg(128, 128, 64, 1, 8, 5), cfg(64, 256, 64, 16, 8, 4)):
        for label, (w, ids) in (("random", (full.topk_weights, full.topk_ids)), ("balanced", (w_bal, ids_bal))):
            try:
                r = MoeRunner(full.x, full.w1, full.w2, w, ids, c, None)
                r.run()
                p = r.plan
                g1 = timer.median_us(lambda: p.run_gemm1(r.w1), reps=10)
                g2 = timer.median_us(lambda: p.run_gemm2(r.w2, r.topk_weights), reps=10)
                log(f"diag {short(c)} {label:8s}: gate_up {g1:.0f} us ({fl1 / g1 / 1e6:.0f} TFLOP/s), "
                    f"down {g2:.0f} us ({fl2 / g2 / 1e6:.0f} TFLOP/s)")
            except Exception as e:  # noqa: BLE001
                log(f"diag {short(c)} {label}: {type(e).__name__} {str(e)[:100]}")
    # the same config three ways: each GEMM alone (above), both GEMMs in one graph (as the
    # sweep times them), and 100 back-to-back replays (does a sustained load slow down?)
    c = cfg(128, 256, 64, 16, 8, 4)
    r = MoeRunner(full.x, full.w1, full.w2, full.topk_weights, full.topk_ids, c, None)
    g_both = r.capture(num_calls=1, gemms_only=True)
    graphs = {}
    for name, fn in (("gemm1", lambda: r.plan.run_gemm1(r.w1)), ("gemm2", lambda: r.plan.run_gemm2(r.w2, r.topk_weights))):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        graphs[name] = g
    t_both = timer.median_us(g_both.replay, reps=20)
    t_1 = timer.median_us(graphs["gemm1"].replay, reps=20)
    t_2 = timer.median_us(graphs["gemm2"].replay, reps=20)
    log(f"diag {short(c)} graphs: both {t_both:.0f} us, gemm1 {t_1:.0f} + gemm2 {t_2:.0f} = {t_1 + t_2:.0f} us")
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(100)]
    for st, en in ev:  # no flush, no gap: a sustained load
        st.record()
        g_both.replay()
        en.record()
    torch.cuda.synchronize()
    ts = [1000 * st.elapsed_time(en) for st, en in ev]
    log(f"diag sustained 100 replays of both GEMMs: first 10 median {statistics.median(ts[:10]):.0f} us, "
        f"last 10 median {statistics.median(ts[-10:]):.0f} us, min {min(ts):.0f}, max {max(ts):.0f}")
    del full, a, h, r, g_both, graphs
    torch.cuda.empty_cache()


def stage_us(r, routings, timer: "Timer", reps: int) -> tuple[float, float]:
    """Align alone and the activation (+ its quantization) alone, each in its own graph."""
    import torch
    r.run()
    graphs = []
    for fn in (lambda: r.plan.run_align(r.topk_ids, r.expert_map), r.plan.run_activation):
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        graphs.append(g)

    def before(i):
        w, ids = routings[i % len(routings)]
        r.set_routing(ids, w)
    return tuple(timer.median_us(g.replay, before, reps=reps) for g in graphs)


def align_bench(log) -> None:
    """Align alone: Triton (auto path), Triton's multi-kernel path, and the torch version.

    Each variant is captured 20 times in one CUDA graph; per-call time = replay / 20.
    """
    import torch
    import moeplan.kernels.align as al
    from moeplan.kernels.inputs import make_routing
    cases = [(1, 8, 2, 16), (1, 256, 8, 16), (64, 128, 8, 16), (256, 256, 8, 16), (512, 256, 8, 16),
             (1024, 8, 2, 128), (1024, 128, 8, 64), (4096, 8, 2, 128), (4096, 128, 8, 128), (4096, 256, 8, 64)]
    for M, E, topk, BM in cases:
        _, ids = make_routing(M, E, topk, "cuda")
        res = {}
        for name in ("auto", "multi", "torch"):
            buf = al.AlignBuffers.allocate(M * topk, E, BM, "cuda")
            saved = al.SMALL_T
            if name == "multi":
                al.SMALL_T = 0
            fn = (lambda: al.moe_align_block_size_torch(ids, BM, E)) if name == "torch" else (
                lambda: al.moe_align_block_size(ids, BM, E, buffers=buf))
            try:
                fn()
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(20):
                        fn()
                g.replay()
                torch.cuda.synchronize()
                st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                ts = []
                for _ in range(5):
                    st.record()
                    g.replay()
                    en.record()
                    torch.cuda.synchronize()
                    ts.append(st.elapsed_time(en) * 1000 / 20)
                res[name] = statistics.median(ts)
            except Exception as e:  # noqa: BLE001
                res[name] = float("nan")
                log(f"align {name} failed: {type(e).__name__} {str(e)[:120]}")
            finally:
                al.SMALL_T = saved
        log(f"align M={M:5d} E={E:3d} topk={topk} BM={BM:3d} T={M * topk:6d}: "
            + " ".join(f"{k} {v:6.1f} us" for k, v in res.items()))


def _capture_prep(r):
    """Graph of the untimed preparation of a GEMM-only replay: align + input quant."""
    import torch
    r.plan.run_align(r.topk_ids, r.expert_map)
    r.plan.run_input_quant(r.x)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        r.plan.run_align(r.topk_ids, r.expert_map)
        r.plan.run_input_quant(r.x)
    return g


def write_summary(out_dir, rows, gpu, bw, peaks, elapsed, args) -> str:
    g = lambda k: gmean([float(r[k]) for r in rows if r.get(k) not in ("", None)])  # noqa: E731
    lines = [
        f"# Fused-MoE kernel benchmark ({gpu})",
        "",
        f"Command: `PYTHONPATH=. python3 scripts/bench_kernel.py --out $OUT{' --quick' if args.quick else ''}"
        f"{' --flush read' if args.flush == 'read' else ''}{' --no-pace' if args.no_pace else ''}` "
        f"({len(rows)} points, {elapsed:.0f} s).",
        f"Measured in the same run: copy bandwidth {bw / 1e12:.2f} TB/s (read + write), "
        f"bf16 matmul {peaks['bf16'] / 1e12:.0f} TFLOP/s, fp8 _scaled_mm {peaks['fp8'] / 1e12:.0f} TFLOP/s "
        f"(at the end of the run: {peaks.get('bf16_end', float('nan')) / 1e12:.0f} / "
        f"{peaks.get('fp8_end', float('nan')) / 1e12:.0f}).",
        "",
        "| geomean over the points | value |",
        "| --- | --- |",
        f"| both GEMMs / floor (best of sweep) | {g('gemms_over_floor'):.3f} |",
        f"| layer / floor (best config) | {g('layer_over_floor'):.3f} |",
        f"| both GEMMs / floor (default config) | {g('default_gemms_over_floor'):.3f} |",
        f"| ours (best) / engine with shipped table | {g('ours_over_engine_shipped'):.3f} |",
        f"| ours (default) / engine default heuristic | {g('default_over_engine_default'):.3f} |",
        f"| fast variant: both GEMMs / floor (best of sweep) | {g('fast_gemms_over_floor'):.3f} |",
        f"| fast variant: layer / floor | {g('fast_layer_over_floor'):.3f} |",
        f"| fast variant / engine with shipped table | {g('fast_over_engine_shipped'):.3f} |",
        f"| fast layer / faithful layer | {g('fast_over_faithful_layer'):.3f} |",
        "",
        "Columns of the CSV: floor_us, gemms_us (best config of the sweep), layer_us (whole layer, same",
        "config), default_* (the engine's default heuristic), align_us / act_us (those stages alone),",
        "engine_* (the engine's kernel on an H100, shared/reference/engine_kernel_h100.csv).",
        "",
        "Worst points vs the engine's shipped-table figure (ours / engine):",
        "",
    ]
    worst = sorted((r for r in rows if r["ours_over_engine_shipped"] not in ("", None)),
                   key=lambda r: -float(r["ours_over_engine_shipped"]))[:6]
    for r in worst:
        lines.append(f"- {r['shape']} M={r['M']}: {r['gemms_us']} us vs {r['engine_shipped_us']} us "
                     f"({r['ours_over_engine_shipped']}x), best {r['best_config']}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "bench_kernel_summary.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    main()
