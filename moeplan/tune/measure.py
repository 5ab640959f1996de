"""Measuring one (config, M) point of the fused-MoE layer, inside a worker process.

Dimension letters: M tokens, E local experts (E_g global ids under EP), K hidden size,
N intermediate size per shard, topk slots per token, R routing draws per batch size.

The objective is the engine's: the time of the whole layer (align, input quantization,
GEMM1, activation, GEMM2, top-k sum) at batch M under one config. On a GPU one layer
call is captured in a CUDA graph; before every replay a fresh routing (topk ids and
weights, drawn from the job's routing pool) is copied into the graph's static inputs,
and CUDA events around the replay alone time it. The score is the median.

Phases: `screen` (few replays), `confirm` (many), `check` (output vs the float32
reference: the correctness gate), `ab` (the evidence rule: the config and the job's default
config for M timed alternately, AB_ROUNDS rounds in ABBA order, each round one batch of
CUDA-graph replays per side on the same static inputs and routing draws; the result carries
every round's pair of medians). A down job (SGLang's `_down` table: the payload carries
`up_configs`) measures the same phases as `down_*`: the point's config is GEMM2's, GEMM1 runs
the up entry at that M, and the default side is the up entry for both GEMMs.

Under Triton's CPU interpreter (tests) the layer runs eagerly and is timed with the
wall clock, or -- with MOEPLAN_TUNE_TIMER=model -- scored by a deterministic synthetic
cost model so resumed and uninterrupted runs can be compared exactly.

Test hooks (injected faults, the synthetic cost model): moeplan.tune.hooks.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Optional

from moeplan.engines.knobs import KernelConfig
from moeplan.tune.checkpoint import DOWN_PREFIX
from moeplan.tune.evidence import AB_ROUNDS, ab_order
from moeplan.tune.hooks import (ENV_FAULT, ENV_MODEL_NOISE, ENV_TIMER, CompileFault, ResourceFault, fault_for,
                                model_noise, model_time_us, parse_faults)



# Replays per phase: (warm-up, timed)
# confirm: every draw of the 64-draw pool once; ab: per round and side (AB_ROUNDS rounds)
DEFAULT_TIMING = {"screen": (2, 12), "confirm": (5, 64), "ab": (2, 32)}
INTERPRET_TIMING = {"screen": (0, 1), "confirm": (0, 2), "ab": (0, 1)}

# Correctness-gate tolerance: relative L2 error vs the float32 reference, per --dtype scheme.
GATE_TOL = {"fp32": 2e-2, "bf16": 3e-2, "fp16": 2e-2, "fp8_w8a8": 6e-2, "int8_w8a8": 6e-2,
            "fp8_w8a16": 6e-2, "int8_w8a16": 6e-2, "int4_w4a16": 8e-2}


def classify_error(e: BaseException) -> tuple[str, bool]:
    """(status, context_is_broken) of an exception raised while running a config."""
    name = type(e).__name__
    msg = str(e)
    if isinstance(e, CompileFault):
        return "compile_error", False
    if isinstance(e, ResourceFault):
        return "out_of_resources", False
    try:
        from triton.runtime.errors import OutOfResources
        if isinstance(e, OutOfResources):
            return "out_of_resources", False
    except ImportError:  # pragma: no cover
        pass
    try:
        from triton.compiler.errors import CompilationError
        if isinstance(e, CompilationError):
            return "compile_error", False
    except ImportError:  # pragma: no cover
        pass
    if name in ("OutOfMemoryError",) or "out of memory" in msg.lower():
        return "oom", False
    low = msg.lower()
    if "illegal memory access" in low or "illegal address" in low or "unspecified launch failure" in low \
            or "misaligned address" in low or "device-side assert" in low:
        return "crash", True
    if "PassManager" in msg or "ptxas" in low or "MLIR" in msg or "compil" in low:
        return "compile_error", False
    return "error", False


@dataclass
class PointResult:
    status: str
    median_us: Optional[float] = None
    min_us: Optional[float] = None
    max_us: Optional[float] = None
    n: int = 0
    error: str = ""
    first_ms: Optional[float] = None  # the first call (compile / load) of this config at M
    fatal: bool = False  # the CUDA context is broken: the worker must exit after reporting
    rounds: Optional[list] = None  # phase ab: [[config_us, default_us], ...] per round

    def to_dict(self) -> dict:
        """What the worker sends back (everything but `fatal`, which it acts on itself)."""
        d = {"status": self.status, "median_us": self.median_us, "min_us": self.min_us,
             "max_us": self.max_us, "n": self.n, "error": self.error, "first_ms": self.first_ms}
        if self.rounds is not None:
            d["rounds"] = self.rounds
        return d


def rss_mb() -> Optional[float]:
    """Resident memory of this process in MiB (Linux), to show that a long run stays flat."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        return None


_tls = threading.local()
_hook_lock = threading.Lock()


def _install_compile_only_hook() -> None:
    """Make Triton JIT launches compile-only (no launch) in threads that set _tls.compile_only."""
    from triton.runtime.jit import JITFunction
    with _hook_lock:
        if getattr(JITFunction, "_moeplan_compile_only", False):
            return
        orig = JITFunction.run

        def run(self, *args, grid, warmup, **kwargs):
            if getattr(_tls, "compile_only", False):
                warmup = True
            return orig(self, *args, grid=grid, warmup=warmup, **kwargs)

        JITFunction.run = run
        JITFunction._moeplan_compile_only = True


class Bench:
    """One worker's view of a table job: weights, per-M inputs, routing pools, and the timer."""

    def __init__(self, job: dict, gpu: Optional[int]):
        import torch

        from moeplan.kernels.inputs import make_moe_inputs

        self.job = job
        self.torch = torch
        self.interpret = bool(job.get("interpret"))
        self.device = torch.device("cpu") if self.interpret else torch.device("cuda", gpu or 0)
        if not self.interpret:
            torch.cuda.set_device(self.device)
        timer = os.environ.get(ENV_TIMER) or job.get("timer") or ("wall" if self.interpret else "cuda")
        self.timer = timer
        self.faults = parse_faults(os.environ.get(ENV_FAULT))
        self.model_noise = os.environ.get(ENV_MODEL_NOISE)
        # the engine's default config per M: the other side of every A/B point
        self.defaults = {int(M): KernelConfig.from_dict(d) for M, d in (job.get("defaults") or {}).items()}
        # GEMM2's own table (SGLang `_down`): every point's config is GEMM2's, GEMM1 runs the up
        # entry at that M, and the A/B's other side ("defaults") is the up entry for both GEMMs
        self.ups = {int(M): KernelConfig.from_dict(d) for M, d in (job.get("up_configs") or {}).items()}
        self.timing = dict(INTERPRET_TIMING if self.interpret else DEFAULT_TIMING)
        for k, v in (job.get("timing") or {}).items():
            self.timing[k] = tuple(v)
        s = job["shape"]
        self.E, self.N, self.K, self.topk = s["E"], s["N"], s["K"], s["topk"]
        self.E_global = s.get("E_global") or self.E
        self.scheme = s["scheme"]
        block = s.get("block_shape")
        quant_scheme = None if self.scheme in ("bf16", "fp16", "fp32") else self.scheme
        inp = make_moe_inputs(1, self.E, self.N, self.K, self.topk, dtype=s["act_dtype"], scheme=quant_scheme,
                              block_shape=block, device=self.device, seed=int(job.get("seed", 0)),
                              per_token=bool(s.get("per_token")), per_channel=bool(s.get("per_channel")))
        self.w1, self.w2, self.quant = inp.w1, inp.w2, inp.quant
        self.dtype = inp.x.dtype
        self.activation = s.get("activation", "silu")
        from moeplan.engines.registry import NEWEST
        self.engine = job.get("engine") or NEWEST
        # the operand-swap rule reads the compute capability; the interpreter has none
        self.capability = None if self.interpret else tuple(torch.cuda.get_device_capability(self.device))
        emap = s.get("expert_map")
        self.expert_map = None if emap is None else torch.tensor(emap, dtype=torch.int32, device=self.device)
        pools = torch.load(job["routing_path"], map_location="cpu", weights_only=True)
        self.pools = {int(M): (ids.to(self.device), w.to(self.device)) for M, (ids, w) in pools.items()}
        self._base: dict[int, object] = {}
        self._ref: dict[int, object] = {}
        self._gen = torch.Generator(device="cpu")
        # compile-ahead threads (GPU only): Triton launches in these threads only compile
        self.compile_threads = 0 if self.interpret else int(job.get("compile_threads", 0))
        self._pool = ThreadPoolExecutor(self.compile_threads) if self.compile_threads > 0 else None
        self._precompiled: dict[KernelConfig, Future] = {}
        self._submitted: dict[KernelConfig, float] = {}  # when each compile-ahead pass was queued
        self._precompile_broken: Optional[str] = None
        self._enqueue_ms_per_iter = 0.1
        self.requeued = 0  # timed batches queued again because the host fell behind the spin kernel
        if self._pool is not None:
            _install_compile_only_hook()

    # ---- inputs ---------------------------------------------------------------------------
    def base(self, M: int):
        """The M-token runner holding the static x and routing (default config)."""
        r = self._base.get(M)
        if r is None:
            torch = self.torch
            from moeplan.kernels.runner import MoeRunner
            self._gen.manual_seed(1000 + M)
            x = torch.randn((M, self.K), generator=self._gen).to(self.dtype).to(self.device)  # (M, K)
            ids, w = self.pools[M]
            r = MoeRunner(x, self.w1, self.w2, w[0], ids[0], None, self.quant, self.activation, self.expert_map,
                          engine=self.engine)
            self._base[M] = r
        return r

    # ---- compile ahead --------------------------------------------------------------------
    def precompile(self, cfg: KernelConfig, Ms: list[int]) -> None:
        """Queue a compile-only pass of cfg at each M (no GPU work; errors stay for measure())."""
        if self._pool is None or self._precompile_broken or cfg in self._precompiled:
            return
        self._precompiled[cfg] = self._pool.submit(self._compile_only, cfg, sorted(set(Ms)))
        self._submitted[cfg] = time.monotonic()

    def compiled(self, cfg: KernelConfig) -> bool:
        """True when measuring cfg would not wait for its compile-ahead pass (done, failed or none)."""
        fut = self._precompiled.get(cfg)
        return fut is None or fut.done()

    def compiling_for(self, cfg: KernelConfig) -> float:
        """Seconds since cfg's compile-ahead pass was queued (0 when it has none)."""
        t = self._submitted.get(cfg)
        return 0.0 if t is None or self.compiled(cfg) else time.monotonic() - t

    def wait_compiled(self, cfgs: list[KernelConfig], timeout: float) -> None:
        """Block until one of cfgs' compile-ahead passes finishes, or `timeout` seconds."""
        futs = [f for f in (self._precompiled.get(c) for c in cfgs) if f is not None]
        if futs:
            wait(futs, timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout)

    def _compile_only(self, cfg: KernelConfig, Ms: list[int]):
        torch = self.torch
        from moeplan.kernels.fused_moe import LayerPlan, LayerShape
        meta = torch.device("meta")
        _tls.compile_only = True
        try:
            torch.cuda.set_device(self.device)
            for M in Ms:  # every M: some integer arguments specialise on M (cache hits cost ~1 ms)
                shape = LayerShape(M, self.E, self.E_global, self.N, self.K, self.topk, self.expert_map is not None)
                up, down = self._configs(cfg, M)
                plan = LayerPlan(shape, self.dtype, meta, up.to_dict(), self.quant, self.activation,
                                 engine=self.engine, capability=self.capability,
                                 **({} if down is None else {"down_config": down.to_dict()}))
                x = torch.empty((M, self.K), dtype=self.dtype, device=meta)
                ids = torch.empty((M, self.topk), dtype=torch.int32, device=meta)
                w = torch.empty((M, self.topk), dtype=torch.float32, device=meta)
                out = torch.empty((M, self.K), dtype=self.dtype, device=meta)
                emap = None if self.expert_map is None else torch.empty_like(self.expert_map, device=meta)
                plan.run(x, self.w1, self.w2, w, ids, emap, out)
            return None
        finally:
            _tls.compile_only = False

    def _await_precompile(self, cfg: KernelConfig) -> None:
        fut = self._precompiled.pop(cfg, None)
        if fut is None:
            return
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            status, _ = classify_error(e)
            if status in ("compile_error", "out_of_resources"):
                raise
            # The compile-only path itself failed (not the config): stop using it.
            self._precompile_broken = f"{type(e).__name__}: {e}"
            import sys
            print(f"moeplan tune worker: compiling ahead disabled ({self._precompile_broken[:200]})",
                  file=sys.stderr, flush=True)

    def forget(self, cfg: KernelConfig) -> None:
        self._precompiled.pop(cfg, None)
        self._submitted.pop(cfg, None)

    # ---- one point ------------------------------------------------------------------------
    def _configs(self, cfg: KernelConfig, M: int) -> tuple[KernelConfig, Optional[KernelConfig]]:
        """(GEMM1's config, GEMM2's own or None) of a point's config at M."""
        if self.ups:
            return self.ups[M], cfg
        return cfg, None

    def _model_us(self, cfg: KernelConfig, M: int) -> float:
        up, down = self._configs(cfg, M)
        return model_time_us(up, M, self.E_global, self.topk, down)

    def runner(self, cfg: KernelConfig, M: int):
        """The M-token runner of a point's config (in a down job: the up entry, then cfg for GEMM2)."""
        up, down = self._configs(cfg, M)
        return self.base(M).with_config(up, down_config=down)

    def _fault(self, cfg: KernelConfig, phase: str) -> None:
        kind = fault_for(self.faults, cfg)
        if kind == "exit":
            os._exit(17)
        if kind == "compile":
            raise CompileFault(f"injected compile error for {cfg.short()}")
        if kind == "oor":
            raise ResourceFault(f"injected out of resources for {cfg.short()}")
        if kind == "hang":
            time.sleep(3600)
        if kind == "slow":
            time.sleep(0.3)

    def measure(self, cfg: KernelConfig, M: int, phase: str) -> PointResult:
        torch = self.torch
        try:
            self._fault(cfg, phase)
            phase = phase[len(DOWN_PREFIX):] if phase.startswith(DOWN_PREFIX) else phase
            if self.ups and M not in self.ups:
                return PointResult("error", error=f"the down job carries no up entry for M={M}")
            if phase == "check":
                return self._check(cfg, M)
            self._await_precompile(cfg)
            if phase in ("ab", "ab_more"):  # ab_more: the same A/B again (moeplan.tune.evidence)
                return self._ab(cfg, M)
            r = self.runner(cfg, M)
            ids, w = self.pools[M]
            t0 = time.perf_counter()
            r.set_routing(ids[0], w[0])
            r.run()
            if not self.interpret:
                torch.cuda.synchronize()
            first_ms = (time.perf_counter() - t0) * 1e3
            warm, reps = self.timing[phase]
            if self.timer == "model":
                t = self._model_us(cfg, M)
                return PointResult("ok", t, t, t, 1, first_ms=first_ms)
            if self.interpret or self.timer == "wall":
                times = self._wall_times(r, ids, w, warm, reps)
            else:
                times = self._time_graph(r, ids, w, warm, reps)
            del r
            return PointResult("ok", statistics.median(times), min(times), max(times), len(times), first_ms=first_ms)
        except Exception as e:  # noqa: BLE001 - every failure is a result, never the end of the search
            status, fatal = classify_error(e)
            if status == "oom" and not self.interpret:
                torch.cuda.empty_cache()
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            return PointResult(status, error=msg, fatal=fatal)

    def _wall_times(self, r, ids, w, warm: int, reps: int) -> list[float]:
        """Per-call wall-clock times (us) of eager runs, a fresh routing draw before each."""
        R, times = ids.shape[0], []
        for i in range(warm + reps):
            r.set_routing(ids[i % R], w[i % R])
            t0 = time.perf_counter()
            r.run()
            if not self.interpret:
                self.torch.cuda.synchronize()
            if i >= warm:
                times.append((time.perf_counter() - t0) * 1e6)
        return times

    def _time_graph(self, r, ids, w, warm: int, reps: int) -> list[float]:
        graph = self._capture(r)
        times = self._replays(r, graph, ids, w, warm, reps)
        del graph
        return times

    def _capture(self, r):
        """One layer call of runner r captured in a CUDA graph (after an eager warm-up on a side stream)."""
        torch = self.torch
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            r.run()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            r.run()
        torch.cuda.synchronize()
        return graph

    def _replays(self, r, graph, ids, w, warm: int, reps: int) -> list[float]:
        """Per-replay GPU times (us) of `graph`, a fresh routing draw copied in before each replay."""
        torch = self.torch
        R = ids.shape[0]
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        # The compile-ahead threads compete for the GIL: if this thread stalled between a start
        # event and its replay, the GPU would idle inside the timed region. A spin kernel first
        # keeps the GPU busy while every replay is queued, so the events time GPU work only.
        n_iter = warm + reps
        sleep_ms = min(1000.0, max(2.0, 3.0 * self._enqueue_ms_per_iter * n_iter + 1.0))
        for attempt in range(3):
            torch.cuda._sleep(int(sleep_ms * 2.0e6))  # ~2 GHz SM clock: cycles for sleep_ms
            t0 = time.perf_counter()
            for i in range(warm):
                r.set_routing(ids[i % R], w[i % R])
                graph.replay()
            for i in range(reps):
                j = (warm + i) % R
                r.set_routing(ids[j], w[j])
                starts[i].record()
                graph.replay()
                ends[i].record()
            enqueue_ms = (time.perf_counter() - t0) * 1e3
            torch.cuda.synchronize()
            self._enqueue_ms_per_iter = 0.8 * self._enqueue_ms_per_iter + 0.2 * enqueue_ms / n_iter
            if enqueue_ms < 0.8 * sleep_ms:
                break
            # the host was slower than the spin (GIL stalls): the GPU may have idled in a timed
            # region; queue everything again behind a longer spin
            self.requeued += 1
            sleep_ms = min(1000.0, 4.0 * enqueue_ms)
        return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]

    # ---- the evidence rule: interleaved A/B against the default config ----------------------
    def _ab(self, cfg: KernelConfig, M: int) -> PointResult:
        """cfg (A) and the job's default config at M (B), timed alternately: AB_ROUNDS rounds in
        ABBA order, each round one batch of `timing["ab"]` replays per side on the same static
        inputs and the same routing draws. The result's median/min/max are A's over its rounds."""
        torch = self.torch
        d = self.defaults.get(M)
        if d is None:
            return PointResult("error", error=f"the job carries no default config for M={M}")
        runners = {"a": self.runner(cfg, M), "b": self.base(M).with_config(d)}
        ids, w = self.pools[M]
        t0 = time.perf_counter()
        for r in runners.values():  # the first calls (compile / load) are never timed
            r.set_routing(ids[0], w[0])
            r.run()
        if not self.interpret:
            torch.cuda.synchronize()
        first_ms = (time.perf_counter() - t0) * 1e3
        warm, reps = self.timing["ab"]
        rounds = []
        if self.timer == "model":
            for i in range(AB_ROUNDS):
                rounds.append([round(self._model_us(c, M) * model_noise(self.model_noise, c, M, i), 4)
                               for c in (cfg, d)])
        elif self.interpret or self.timer == "wall":
            for i in range(AB_ROUNDS):
                t = {}
                for side in ab_order(i):
                    t[side] = statistics.median(self._wall_times(runners[side], ids, w, warm, reps))
                rounds.append([t["a"], t["b"]])
        else:
            graphs = {k: self._capture(r) for k, r in runners.items()}
            for i in range(AB_ROUNDS):
                t = {side: statistics.median(self._replays(runners[side], graphs[side], ids, w, warm, reps))
                     for side in ab_order(i)}
                rounds.append([t["a"], t["b"]])
            del graphs
        a = [x for x, _ in rounds]
        return PointResult("ok", statistics.median(a), min(a), max(a), len(rounds), first_ms=first_ms, rounds=rounds)

    # ---- correctness gate -----------------------------------------------------------------
    def reference(self, M: int):
        ref = self._ref.get(M)
        if ref is None:
            from moeplan.kernels.reference import fused_experts_ref
            b = self.base(M)
            ids, w = self.pools[M]
            ref = fused_experts_ref(b.x, self.w1, self.w2, w[0], ids[0], quant=self.quant,
                                    activation=self.activation, expert_map=self.expert_map).float()
            self._ref = {M: ref}  # keep one: references of large M are big
        return ref

    def _check(self, cfg: KernelConfig, M: int) -> PointResult:
        torch = self.torch
        ids, w = self.pools[M]
        r = self.runner(cfg, M)
        r.set_routing(ids[0], w[0])
        r.out.fill_(float("nan"))  # every element must be written
        out = r.run().float()
        if fault_for(self.faults, cfg) == "wrong":
            out = out * 1.5 + 0.25
        ref = self.reference(M)
        if not bool(torch.isfinite(out).all()):
            return PointResult("wrong", error="output has NaN/Inf (unwritten or overflowed elements)")
        err = float((out - ref).norm() / ref.norm().clamp(min=1e-12))
        tol = float(self.job.get("gate_tol") or GATE_TOL.get(self.scheme, 6e-2))
        if err > tol:
            return PointResult("wrong", median_us=None, error=f"relative error {err:.3g} > {tol:g} vs the float32 reference")
        return PointResult("ok", error=f"relative error {err:.3g}")

    # ---- device facts -----------------------------------------------------------------------
    def device_facts(self) -> dict:
        import triton
        torch = self.torch
        facts = {"triton_version": triton.__version__, "torch_version": torch.__version__}
        if self.interpret:
            facts["device_name"] = None
            return facts
        props = torch.cuda.get_device_properties(self.device)
        facts["device_name"] = props.name
        facts["capability"] = list(self.capability or ())
        facts["sm_count"] = props.multi_processor_count
        return facts

    def roofline_ceilings(self) -> dict:
        """Measured copy bandwidth (bytes read + written per s) and dense matmul rates."""
        torch = self.torch
        out = {}
        if self.interpret:
            return out
        try:
            n = 1 << 28  # 256 Mi bf16 = 512 MiB
            a = torch.empty(n, dtype=torch.bfloat16, device=self.device)
            b = torch.empty_like(a)
            a.normal_()
            for _ in range(3):
                b.copy_(a)
            torch.cuda.synchronize()
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
            ev[0].record()
            for _ in range(10):
                b.copy_(a)
            ev[1].record()
            torch.cuda.synchronize()
            out["bandwidth_Bps"] = 2 * a.numel() * 2 * 10 / (ev[0].elapsed_time(ev[1]) * 1e-3)
            del a, b
            m = 8192
            x = torch.randn(m, m, device=self.device, dtype=torch.bfloat16)
            y = torch.randn(m, m, device=self.device, dtype=torch.bfloat16)
            for _ in range(3):
                x @ y
            torch.cuda.synchronize()
            ev[0].record()
            for _ in range(10):
                x @ y
            ev[1].record()
            torch.cuda.synchronize()
            out["bf16_flops"] = 2 * m ** 3 * 10 / (ev[0].elapsed_time(ev[1]) * 1e-3)
            try:
                xf = x.to(torch.float8_e4m3fn)
                yf = y.to(torch.float8_e4m3fn).t().contiguous().t()
                one = torch.ones((), device=self.device)
                for _ in range(3):
                    torch._scaled_mm(xf, yf, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                torch.cuda.synchronize()
                ev[0].record()
                for _ in range(10):
                    torch._scaled_mm(xf, yf, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                ev[1].record()
                torch.cuda.synchronize()
                out["fp8_flops"] = 2 * m ** 3 * 10 / (ev[0].elapsed_time(ev[1]) * 1e-3)
            except Exception:  # noqa: BLE001 - fp8 matmul is optional
                pass
            del x, y
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
