"""The fused-MoE layer (align, input quantization, GEMM1, activation, GEMM2, top-k sum)
around the grouped GEMM of moe_gemm.py, and its fast variant's plan.

Dimension letters: M tokens, E experts held here (E_g global ids under EP), K hidden
size, N intermediate size, topk slots per token, T = M * topk (token, slot) pairs,
P padded rows from align (see align.py).

`fused_experts` / `LayerPlan` run the FAITHFUL kernel under an engine profile
(moeplan.engines.profile): its launch rules come from moeplan.engines.launch (`plan_launch`),
the geometry the tuner's pruning uses too:
  * align or the naive assignment (vLLM, very sparse batches);
  * EP pairs dropped (vLLM 0.33), padded into -1 tiles over the global experts (older vLLM)
    or put in align's -1 bucket, placed first (SGLang: E + 1 buckets, zero-writing tiles);
  * the operand swap for small-M fp8 tiles: one decision for both GEMMs (vLLM, sm_90) or
    one per GEMM from its own config (SGLang, sm_9x);
  * GEMM2's own config (SGLang's `_down` table: `down_config`, BLOCK_SIZE_M tied to GEMM1's
    since one align serves both GEMMs; `USE_TMA` keys are ignored: the TMA paths are not modelled);
  * BLOCK_SIZE_K under block quantization clamped to the block (vLLM) or run as given (SGLang).
`variant="fast"` adds split-K, the fused top-k sum, TMA loads and tile-ordered rows
(FastPlan); it ranks configs differently, so `moeplan tune` measures the faithful one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from moeplan.engines.registry import NEWEST, PROFILES, get_profile
from moeplan.engines.profile import EngineProfile
from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.engines.registry import default_config
from moeplan.kernels._common import cdiv
from moeplan.kernels.activation import act_and_quant
from moeplan.kernels.align import AlignBuffers, moe_align_block_size
from moeplan.kernels.moe_gemm import MX_GROUP, GemmQuant, effective_block_k, gemm_quant, invoke_moe_gemm
from moeplan.kernels.quantize import quantize_activation
from moeplan.engines.launch import ShapeInfo, plan_launch
from moeplan.layout.quant import QuantConfig

CHUNK_TOKENS = 32768  # the layer processes at most this many tokens at once (bounds memory)


def resolve_engine(engine: Union[None, str, EngineProfile]) -> EngineProfile:
    """An engine profile from a name, a profile, or None (the newest)."""
    if engine is None:
        return PROFILES[NEWEST]
    if isinstance(engine, EngineProfile):
        return engine
    return get_profile(engine)


def device_capability(device) -> Optional[tuple[int, int]]:
    """(major, minor) of a CUDA device; None elsewhere (the CPU interpreter, meta tensors)."""
    device = torch.device(device)
    if device.type == "cuda":
        return tuple(torch.cuda.get_device_capability(device))
    return None


def _config_dict(config: Union[None, dict, KernelConfig], M: int, E: int, N: int, K: int, topk: int,
                 quant: Optional[QuantConfig], dtype: torch.dtype, heuristic: str = PROFILES[NEWEST].heuristic) -> dict:
    if config is None:
        name = quant.config_name(dtype) if quant is not None else (
            "float32" if dtype == torch.float32 else None)
        block = quant.block_shape if quant is not None else None
        return default_config(M, E, N, K, topk, dtype=name, block_shape=block, heuristic=heuristic).to_dict()
    return _knobs(config)


def _knobs(config: Union[dict, KernelConfig]) -> dict:
    """The six knobs of an entry. The four block knobs are required; an entry without launch
    options or grouping runs as Triton launches by default (4 warps, 3 stages) with no
    grouping; other keys (SGLang's USE_TMA, launch options) are ignored."""
    if isinstance(config, KernelConfig):
        return config.to_dict()
    d = {"GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}
    d.update({k: config[k] for k in KNOBS if k in config})
    return KernelConfig.from_dict({k: int(v) for k, v in d.items()}).to_dict()


def gemm2_config(engine: EngineProfile, config: dict, down_config: Union[None, dict, KernelConfig]) -> dict:
    """The config GEMM2 runs under `engine`: `config` (GEMM1's) when `down_config` is None,
    else down_config's knobs with BLOCK_SIZE_M forced to config's (one align serves both
    GEMMs; SGLang overwrites a `_down` entry's BLOCK_SIZE_M the same way; an absent one is
    taken from config). `USE_TMA` and other non-knob keys are ignored.
    ValueError when the profile has no `_down` tables (`down_tables`) and down_config's knobs
    differ from config's: that engine runs one config for both GEMMs.
    """
    if down_config is None:
        return config
    given = down_config.to_dict() if isinstance(down_config, KernelConfig) else dict(down_config)
    given.setdefault("BLOCK_SIZE_M", config["BLOCK_SIZE_M"])
    down = _knobs(given)
    up = {k: int(config[k]) for k in KNOBS}
    if not engine.down_tables and down != up:
        short = KernelConfig(**down).short()
        raise ValueError(f"engine profile {engine.name} runs one config for both GEMMs (no _down tables): "
                         f"down_config {short} differs from the up config {KernelConfig(**up).short()}")
    down["BLOCK_SIZE_M"] = up["BLOCK_SIZE_M"]
    return down


@dataclass
class LayerShape:
    M: int  # tokens handled at once
    E: int  # local experts (w1.shape[0])
    E_global: int  # id range of topk_ids
    N: int
    K: int
    topk: int
    has_map: bool = False  # an EP expert map routes global ids to the E local experts

    def info(self, quant: Optional[QuantConfig]) -> ShapeInfo:
        """The launch-geometry view of this layer (moeplan.launch)."""
        scheme = quant.scheme if quant is not None and quant.weight_dtype is not None else "bf16"
        block = tuple(quant.block_shape) if quant is not None and quant.block_shape else None
        return ShapeInfo(self.E, self.N, self.K, self.topk, scheme, block,
                         self.E_global if self.has_map else None)


def layer_shape(x, w1, w2, topk_ids, quant: Optional[QuantConfig], expert_map) -> LayerShape:
    M, K = x.shape
    E = w1.shape[0]
    int4 = quant is not None and (quant.use_int4_w4a16 or quant.use_mxfp4_w4a16)
    N = w2.shape[2] * (2 if int4 else 1)
    if w1.shape[1] != 2 * N:
        raise ValueError(f"w1 {tuple(w1.shape)} does not hold 2N = {2 * N} rows (w2 {tuple(w2.shape)})")
    if w1.shape[2] * (2 if int4 else 1) != K or w2.shape[1] != K:
        raise ValueError(f"hidden size mismatch: x {tuple(x.shape)}, w1 {tuple(w1.shape)}, w2 {tuple(w2.shape)}")
    if topk_ids.shape[0] != M:
        raise ValueError(f"topk_ids has {topk_ids.shape[0]} rows for {M} tokens")
    if quant is not None and quant.use_mxfp4_w4a16 and (K % MX_GROUP or N % MX_GROUP):
        raise ValueError(f"mxfp4 needs the hidden size K and the intermediate size N to be multiples of "
                         f"{MX_GROUP} (one E8M0 scale per 32 values), got K={K}, N={N}")
    E_global = expert_map.numel() if expert_map is not None else E
    return LayerShape(M, E, E_global, N, K, topk_ids.shape[1], expert_map is not None)


VARIANTS = ("faithful", "fast")
# fast variant heuristics (not knobs: derived from the shape, the config and the card)
FAST_PROGRAMS_PER_SM = 2  # split K while a GEMM has fewer programs than this many per SM
FAST_MIN_K_STEPS = 4  # each split keeps at least this many BLOCK_SIZE_K steps (pipelining)
FAST_SUM_BYTES = 2 << 20  # fuse the top-k sum while the fp32 (M, K) output is no larger (measured:
# neutral to a few % slower from M*K*4 = 4 MiB up, slower still at 100+ MiB)
INTERPRETER_SMS = 2  # SM count assumed under the CPU interpreter (so tests exercise splits)
# tile-ordered rows (sort2) from this many pairs per expert on (scripts/fast_options.py --set
# sort, H100, write flush, both GEMMs, with sentinel rows masked out of the A loads): with
# 16-bit activations 1-2% more microseconds at 256 pairs per expert and 1-6% more at 16-64
# (the P - T padding rows it writes and activates outweigh contiguous A tiles), 2-6% fewer at
# 1024; with per-tensor fp8 activations (half the bytes to make contiguous) 4% more at 256 and
# 2% more at 1024: off; with block-quantized activations (per-row scale loads become
# contiguous too) neutral at 32, 2-10% fewer at 128 (DeepSeek-V3 TP4), 26% fewer at 128 with
# one K step in GEMM2 (TP16).
# Session 3 had found it paying from 128 / 32: its pair-ordered loads were then slowed by
# every sentinel row reading row 0, which tile order avoided.
FAST_SORT_ROWS = 1024
FAST_SORT_ROWS_BLOCK = 128
# gather x into tile order (sort1) only for 16-bit x read by many N tiles of GEMM1: the
# gather is one extra pass over (P, K), repaid by contiguous A tiles in each of the
# cdiv(2N, BLOCK_SIZE_N) column tiles (on top of sort2, Mixtral TP1 at 1024 pairs per expert,
# 112 tiles: 2% fewer; session 3, before the masked loads: Qwen3, 6 tiles, 9-13% more; fp8 x,
# 2-30% more)
FAST_SORT1_N_TILES = 32
# FAST_STAGE_FLOOR (the stage cap's floor) lives with the launcher in moe_gemm.py


@dataclass(frozen=True)
class FastPlan:
    """What the fast variant does differently for one layer call.

    split1 / split2: programs sharing each tile's K range in GEMM1 / GEMM2 (fp32 atomics);
    fuse_sum: GEMM2 adds its router-weighted tiles straight into an fp32 (M, K) output
    (no (T, K) intermediate, no separate top-k sum). split2 > 1 needs fuse_sum.
    tma: B tiles through TMA descriptors; one_acc: block fp8 keeps one rescaled accumulator.
    sort1: x (and its scales) gathered into align's tile order before GEMM1, whose A tiles
    are then contiguous rows; sort2: GEMM1's output and the activation kept in tile order
    (P rows), so GEMM2's A tiles are contiguous rows. Contiguous A tiles go through TMA
    descriptors too when `tma` is on. fit_stages: num_stages capped at the K steps one
    program runs, but not below FAST_STAGE_FLOOR (GEMM2 at DeepSeek-V3 TP16 runs one K step;
    its shared memory then holds more programs).
    """

    split1: int = 1
    split2: int = 1
    fuse_sum: bool = False
    tma: bool = False  # B tiles through TMA descriptors where `tma_eligible` allows
    one_acc: bool = True  # block fp8: one rescaled accumulator (see the kernel's ONE_ACC)
    sort1: bool = False
    sort2: bool = False
    fit_stages: bool = True

    def __post_init__(self):
        if self.split1 < 1 or self.split2 < 1:
            raise ValueError(f"split-K factors must be >= 1, got {self.split1}, {self.split2}")
        if self.split2 > 1 and not self.fuse_sum:
            raise ValueError("split2 > 1 needs fuse_sum (the splits meet in the fp32 output)")


# the faithful kernel as a plan: none of the fast variant's changes
FAITHFUL = FastPlan(one_acc=False, fit_stages=False)


def _split_k(programs: int, k_steps: int, sms: int) -> int:
    if programs >= FAST_PROGRAMS_PER_SM * sms:
        return 1
    want = cdiv(FAST_PROGRAMS_PER_SM * sms, max(1, programs))
    return max(1, min(want, k_steps // FAST_MIN_K_STEPS))


def fast_plan(shape: LayerShape, config: dict, q1: "GemmQuant", q2: "GemmQuant", sms: int,
              tma: bool = True, config2: Optional[dict] = None) -> FastPlan:
    """The fast variant's choices: split K where a GEMM has too few programs to fill the
    card (decode), fuse the top-k sum where the fp32 output stays small. `config2`: GEMM2's
    own config (None: `config`).

    Live M tiles are estimated as min(E, T) + T // BLOCK_SIZE_M (each expert hit starts a
    tile; the grid's other tiles exit at once).
    """
    s = shape
    T = s.M * s.topk
    config2 = config if config2 is None else config2
    BM, BN = int(config["BLOCK_SIZE_M"]), int(config["BLOCK_SIZE_N"])
    BN2 = int(config2["BLOCK_SIZE_N"])
    m_tiles = min(s.E, T) + T // BM
    split1 = _split_k(m_tiles * cdiv(2 * s.N, BN), cdiv(s.K, effective_block_k(config, q1)), sms)
    split2 = _split_k(m_tiles * cdiv(s.K, BN2), cdiv(s.N, effective_block_k(config2, q2)), sms)
    fuse = split2 > 1 or s.M * s.K * 4 <= FAST_SUM_BYTES
    rows_per_expert = T / max(1, min(s.E_global, T))
    if q2.act_mode == "group":
        sort2 = rows_per_expert >= FAST_SORT_ROWS_BLOCK
    else:  # 8-bit per-tensor / per-token activations: never (measured 2-4% slower at 256-1024)
        sort2 = q2.act_dtype is None and rows_per_expert >= FAST_SORT_ROWS
    sort1 = sort2 and q1.act_dtype is None and cdiv(2 * s.N, BN) >= FAST_SORT1_N_TILES
    return FastPlan(split1, split2, fuse, tma=tma, sort1=sort1, sort2=sort2)


def _has_tma(device) -> bool:
    """TMA needs a Hopper-or-newer GPU; the CPU interpreter emulates descriptor loads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 9
    return True


def _sm_count(device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_SMS


class LayerPlan:
    """Static buffers and launch parameters of the layer for one (M, shape, config, quant).

    Everything a call needs is allocated here, so `run` allocates nothing except the
    amax temporaries of dynamic per-tensor activation scales, and is CUDA-graph capturable.

    variant "faithful" (what `moeplan tune` measures) runs the engine's launch rules of
    `engine` (a profile or its name; None: the newest): align or naive assignment, EP pairs
    dropped, padded or bucketed, the operand swap on a device of `capability` (None: the
    device's own; the CPU interpreter has none) or as `swap_ab` forces it (both GEMMs), the
    profile's BLOCK_SIZE_K rule. `down_config`: GEMM2's own config (SGLang's `_down` entry;
    see `gemm2_config`: BLOCK_SIZE_M forced to config's, refused by profiles without `_down`
    tables when it differs); None: GEMM2 runs `config`. `launch` is the row plan with both
    GEMMs' orientations (`launch.swap`, `launch.swap2`); `config2` is GEMM2's config.
    "fast" may split K and fuse the top-k sum (see FastPlan; `fast` overrides its
    heuristics); it follows the profile's EP rule but never swaps, always aligns and always
    clamps BLOCK_SIZE_K (it is moeplan's own kernel: never knowingly wrong).
    """

    def __init__(self, shape: LayerShape, dtype: torch.dtype, device, config: dict,
                 quant: Optional[QuantConfig], activation: str = "silu",
                 w1_bias=None, w2_bias=None, variant: str = "faithful", fast: Optional[FastPlan] = None,
                 engine: Union[None, str, EngineProfile] = None, capability: Optional[tuple[int, int]] = None,
                 swap_ab: Optional[bool] = None, down_config: Union[None, dict, KernelConfig] = None):
        if variant not in VARIANTS:
            raise ValueError(f"unknown kernel variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.shape, self.dtype, self.config, self.quant, self.activation = shape, dtype, config, quant, activation
        s = shape
        T = s.M * s.topk
        self.T = T
        self.q1 = gemm_quant(quant, "w1")
        self.q2 = gemm_quant(quant, "w2")
        self.w1_bias = w1_bias if w1_bias is not None else (quant.w1_bias if quant is not None else None)
        self.w2_bias = w2_bias if w2_bias is not None else (quant.w2_bias if quant is not None else None)
        BM = int(config["BLOCK_SIZE_M"])
        self.engine = resolve_engine(engine)
        self.config2 = gemm2_config(self.engine, config, down_config)  # GEMM2's config (BM = config's)
        if capability is None:
            capability = device_capability(device)
        fixed = {} if variant == "faithful" else dict(swap=False, naive=False, bk_clamp=True)
        if variant == "faithful" and swap_ab is not None:
            fixed["swap"] = swap_ab
        self.launch = plan_launch(self.engine, s.info(quant), s.M, BM, int(config["BLOCK_SIZE_N"]), capability,
                                  down_block_n=int(self.config2["BLOCK_SIZE_N"]), **fixed)
        if (self.launch.swap or self.launch.swap2) and not (quant is not None and quant.use_fp8_w8a8):
            raise ValueError("the operand swap is an fp8_w8a8 launch rule; this layer is "
                             f"{quant.scheme if quant is not None else 'unquantized'}")
        f = dict(device=device)
        if self.launch.naive:
            self.align = None
            self.ntpp = torch.full((1,), self.launch.padded_rows, dtype=torch.int32, **f)  # (1,) int32
        else:
            self.align = AlignBuffers.allocate(T, self.launch.align_buckets, BM, device)
        if variant == "fast" and fast is None:
            fast = fast_plan(s, config, self.q1, self.q2, _sm_count(device), tma=_has_tma(device),
                             config2=self.config2)
        self.fast = fast if variant == "fast" else None
        fp = self.fast or FAITHFUL
        P = self.launch.padded_rows
        R = P if fp.sort2 else T  # rows of GEMM1's output and the activation
        self.R = R
        # one fp32 workspace (zeroed by one memset per call) holds the atomic outputs
        n1 = R * 2 * s.N if fp.split1 > 1 else 0
        n2 = s.M * s.K if fp.fuse_sum else 0
        self.work = torch.empty((n1 + n2,), dtype=torch.float32, **f) if n1 + n2 else None
        if n1:
            self.c1 = self.work[:n1].view(R, 2 * s.N)  # (R, 2N) float32, split-K partial sums
        else:
            self.c1 = torch.empty((R, 2 * s.N), dtype=dtype, **f)  # (R, 2N) gate_up output
        if n2:
            self.out32 = self.work[n1:].view(s.M, s.K)  # (M, K) float32, top-k sum by atomics
            self.c2 = None
        else:
            self.out32 = None
            self.c2 = torch.empty((T, s.K), dtype=dtype, **f)  # (T, K) down output, router-weighted
        q = self.q1
        self.a1q = self.a1s = None
        if q.act_dtype is not None:
            self.a1q = torch.empty((s.M, s.K), dtype=q.act_dtype, **f)  # (M, K) quantized x
            self.a1s = self._scale_buf(q, s.M, s.K, device)
        self.xs = self.xs_scale = None
        if fp.sort1:
            self.gather_rows = torch.empty((P,), dtype=torch.int32, **f)  # (P,) x row of each padded row
            self.xs = torch.empty((P, s.K), dtype=q.act_dtype or dtype, **f)  # (P, K) x in tile order
            if self.a1s is not None and self.a1s.dim() == 2 and q.act_mode != "static":
                self.xs_scale = torch.empty((P, self.a1s.shape[1]), dtype=torch.float32, **f)  # (P, groups)
        q = self.q2
        self.a2s = None
        if q.act_dtype is not None:
            self.a2q = torch.empty((R, s.N), dtype=q.act_dtype, **f)  # (R, N) quantized activation
            self.a2s = self._scale_buf(q, R, s.N, device)
            self.a2 = torch.empty((R, s.N), dtype=dtype, **f) if q.act_mode == "tensor" else None
        else:
            self.a2 = torch.empty((R, s.N), dtype=dtype, **f)  # (R, N) activation output
            self.a2q = None

    @staticmethod
    def _scale_buf(q: GemmQuant, R: int, I: int, device):
        if q.act_mode == "static":
            return q.act_scale.float().reshape(1).to(device)  # (1,) float32
        if q.act_mode == "tensor":
            return torch.empty((1,), dtype=torch.float32, device=device)  # (1,)
        if q.act_mode == "token":
            return torch.empty((R, 1), dtype=torch.float32, device=device)  # (R, 1)
        return torch.empty((R, cdiv(I, q.act_group)), dtype=torch.float32, device=device)  # (R, I/bk)

    # -- stages --------------------------------------------------------------------------
    def run_align(self, topk_ids, expert_map):
        if self.launch.naive:  # no align: tile p computes expert topk_ids.flatten()[p]
            self._naive_ids = topk_ids.reshape(-1)
            return
        moe_align_block_size(topk_ids, int(self.config["BLOCK_SIZE_M"]), self.launch.align_experts,
                             expert_map, buffers=self.align, drop=self.launch.ep_drop,
                             bucket=self.launch.ep_bucket)

    def rows(self):
        """(sorted_token_ids, expert_ids, num_tokens_post_padded) of the last align (naive:
        the count tensor stands in for the unread sorted ids, topk_ids for the expert ids)."""
        if self.launch.naive:
            return self.ntpp, self._naive_ids, self.ntpp
        return self.align.outputs()

    def _quant_act(self, q: GemmQuant, x, out, scale_buf):
        if q.act_mode == "static":
            return act_and_quant(x, "none", out=out, quant_dtype=q.act_dtype, mode="static", scale=scale_buf)[0], scale_buf
        return quantize_activation(x, q.act_dtype, q.act_mode, q.act_group, out=out, scale_out=scale_buf)

    def run_input_quant(self, x):
        a, a_s = x, None
        if self.q1.act_dtype is not None:
            a, a_s = self._quant_act(self.q1, x, self.a1q, self.a1s)
        self._a1 = (a, a_s)

    def _gather_x(self, a, a_s, sorted_ids):
        """x (and per-row scales) into align's tile order: row p <- x[sorted_ids[p] // topk]
        (sentinel rows take the last pair's row: real data, never stored)."""
        torch.clamp(sorted_ids, max=self.T - 1, out=self.gather_rows)
        self.gather_rows.div_(self.shape.topk, rounding_mode="floor")
        torch.index_select(a, 0, self.gather_rows, out=self.xs)
        if self.xs_scale is not None:
            torch.index_select(a_s, 0, self.gather_rows, out=self.xs_scale)
            a_s = self.xs_scale
        return self.xs, a_s

    def run_gemm1(self, w1):
        a, a_s = self._a1
        sorted_ids, expert_ids, ntpp = self.rows()
        if self.work is not None:
            self.work.zero_()  # the fast variant's atomic outputs (GEMM1 partials, top-k sum)
        fp = self.fast or FAITHFUL
        if self.launch.ep_drop and self.q2.act_mode == "tensor" and not fp.sort2:
            # dropped pairs' rows are never written, but a per-tensor scale reads every row
            self.c1.zero_()
        if fp.sort1:
            a, a_s = self._gather_x(a, a_s, sorted_ids)
        invoke_moe_gemm(a, w1, self.c1, a_s, self.q1, self.w1_bias, None, sorted_ids, expert_ids, ntpp,
                        False, self.shape.topk, self.config, self.T,
                        split_k=fp.split1, atomic=fp.split1 > 1, compute_dtype=self.dtype,
                        tma=fp.tma, one_acc=fp.one_acc, a_sorted=fp.sort1, c_sorted=fp.sort2,
                        fit_stages=fp.fit_stages, launch=self.launch, gemm=1)

    def run_activation(self):
        q = self.q2
        if q.act_dtype is None:
            act_and_quant(self.c1, self.activation, out=self.a2)
            self._a2 = (self.a2, None)
        elif q.act_mode == "tensor":
            act_and_quant(self.c1, self.activation, out=self.a2)
            self._a2 = quantize_activation(self.a2, q.act_dtype, "tensor", out=self.a2q, scale_out=self.a2s)
        else:
            self._a2 = act_and_quant(self.c1, self.activation, out=self.a2q, quant_dtype=q.act_dtype,
                                     mode=q.act_mode, group_size=q.act_group,
                                     scale=self.a2s if q.act_mode == "static" else None,
                                     scale_out=None if q.act_mode == "static" else self.a2s)

    def run_gemm2(self, w2, topk_weights):
        a, a_s = self._a2
        sorted_ids, expert_ids, ntpp = self.rows()
        fp = self.fast or FAITHFUL
        fused = self.out32 is not None  # top-k sum by atomics into (M, K) fp32, else (T, K) rows
        if self.launch.ep_drop and not fused:
            self.c2.zero_()  # dropped pairs get no row from GEMM2: they must add zero to the sum
        invoke_moe_gemm(a, w2, self.out32 if fused else self.c2, a_s, self.q2, self.w2_bias, topk_weights,
                        sorted_ids, expert_ids, ntpp, True, 1, self.config2, self.T, split_k=fp.split2,
                        atomic=fused, out_div=self.shape.topk if fused else 1, compute_dtype=self.dtype,
                        tma=fp.tma, one_acc=fp.one_acc, a_sorted=fp.sort2, fit_stages=fp.fit_stages,
                        launch=self.launch, gemm=2)

    def run_sum(self, out):
        s = self.shape
        if self.out32 is not None:
            out.copy_(self.out32)  # the sum happened in GEMM2: only the cast is left
            return
        torch.sum(self.c2.view(s.M, s.topk, s.K), dim=1, out=out)

    def run(self, x, w1, w2, topk_weights, topk_ids, expert_map, out):
        """The whole layer on these tensors (x has exactly shape.M rows)."""
        self.run_align(topk_ids, expert_map)
        self.run_input_quant(x)
        self.run_gemm1(w1)
        self.run_activation()
        self.run_gemm2(w2, topk_weights)
        self.run_sum(out)
        return out


def fused_experts(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    config: Union[None, dict, KernelConfig] = None,
    quant: Optional[QuantConfig] = None,
    activation: str = "silu",
    expert_map: Optional[torch.Tensor] = None,
    w1_bias: Optional[torch.Tensor] = None,
    w2_bias: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    chunk_tokens: int = CHUNK_TOKENS,
    variant: str = "faithful",
    engine: Union[None, str, EngineProfile] = None,
    capability: Optional[tuple[int, int]] = None,
    swap_ab: Optional[bool] = None,
    down_config: Union[None, dict, KernelConfig] = None,
) -> torch.Tensor:
    """The fused-MoE layer: out[m] = sum_j w[m, j] * down_e(act(gate_up_e(x[m]))), e = ids[m, j].

    x (M, K) bf16/fp16/fp32; w1 (E, 2N, K) (gate rows then up rows; interleaved for
    swigluoai); w2 (E, K, N); topk_weights (M, topk) float32; topk_ids (M, topk) int32/int64
    global ids (with expert_map, a (E_g,) int32 map to local ids or -1); config the six
    knobs (None: the engine's default heuristic); quant a moeplan.quant.QuantConfig with
    its tensors (None: unquantized); biases (E, 2N) / (E, K). Returns (M, K) in x.dtype.
    Tokens are processed in chunks of `chunk_tokens` to bound memory.
    engine: the engine profile whose launch rules the faithful kernel follows (None: the
    newest; see LayerPlan for `capability`, `swap_ab` and `down_config`, GEMM2's own config),
    and whose default heuristic picks the config when `config` is None.
    variant "faithful" (default) is the kernel `moeplan tune` measures; "fast" may split K
    at small M and sum the top-k slots inside GEMM2 (fp32 atomics: the result's rounding
    and summation order differ, and so may the config that wins; see FastPlan).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown kernel variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if x.dim() != 2:
        raise ValueError(f"x must be (M, K), got {tuple(x.shape)}")
    shape = layer_shape(x, w1, w2, topk_ids, quant, expert_map)
    M = shape.M
    if out is None:
        out = torch.empty((M, shape.K), dtype=x.dtype, device=x.device)  # (M, K)
    if M == 0:
        return out
    x = x.contiguous()
    topk_weights = topk_weights.to(torch.float32).contiguous()
    topk_ids = topk_ids.contiguous()
    chunk = max(1, min(M, chunk_tokens))
    engine = resolve_engine(engine)
    cfg = _config_dict(config, chunk, shape.E, shape.N, shape.K, shape.topk, quant, x.dtype, engine.heuristic)
    plans: dict[int, LayerPlan] = {}
    for start in range(0, M, chunk):
        m = min(chunk, M - start)
        if m not in plans:
            sub = LayerShape(m, shape.E, shape.E_global, shape.N, shape.K, shape.topk, shape.has_map)
            plans[m] = LayerPlan(sub, x.dtype, x.device, cfg, quant, activation, w1_bias, w2_bias, variant,
                                 engine=engine, capability=capability, swap_ab=swap_ab, down_config=down_config)
        plans[m].run(x[start:start + m], w1, w2, topk_weights[start:start + m], topk_ids[start:start + m],
                     expert_map, out[start:start + m])
    return out
