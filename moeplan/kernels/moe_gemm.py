"""The grouped GEMM of the fused-MoE layer: the Triton kernel and its launcher.

Over 600 lines: one Triton kernel body serves every scheme (bf16, fp8/int8 w8a8, weight-only
int4/int8, mxfp4), both tile orientations (swap) and both variants, and its launcher must stay
beside it (Liger-style: one file per op); splitting the kernel would split one function.

Dimension letters: M tokens, E experts held here (E_g global ids under EP), K hidden
size, N intermediate size, topk slots per token, T = M * topk (token, slot) pairs,
O output columns of one GEMM (2N for gate_up, K for down), I its reduction size
(K for gate_up, N for down), P padded rows from align (see align.py).

The kernel (`_moe_gemm_kernel`) follows the tiling semantics the engine's tuning tables
assume (spec: tuning_files.md, "Kernel semantics the configs assume"):
  * grid = cdiv(P, BLOCK_SIZE_M) * cdiv(O, BLOCK_SIZE_N) programs in grouped order:
    GROUP_SIZE_M consecutive M tiles share a column of N tiles;
  * each M tile is BLOCK_SIZE_M rows of sorted_token_ids, all of one expert (or, with the
    naive assignment of an engine profile, one (token, slot) pair);
    tiles at or past num_tokens_post_padded exit at once; tiles of expert -1 (owned by
    another EP rank, when the profile pads EP pairs or puts them in align's -1 bucket)
    write zeros into their rows; sentinel rows (id >= T) are never stored;
  * fp32 accumulation over I in BLOCK_SIZE_K steps, num_stages-deep pipelining,
    num_warps warps; masks for partial K and N tiles; small-M fp8 tiles computed
    transposed where the profile's operand swap applies (decided per GEMM: `Launch.swap_of`);
  * optional router-weight multiply and expert bias in the epilogue;
  * block quantization: one activation and one weight scale per BLOCK_SIZE_K step, read at
    the step's first k. Where the profile clamps (vLLM) BLOCK_SIZE_K runs as
    min(BLOCK_SIZE_K, min(block_shape)), so a step never spans two scale blocks; where it
    does not (SGLang) BLOCK_SIZE_K runs as given, and a BK that does not divide block_k
    applies the step's first scale to k the next block's scale covers: wrong results,
    as the engine's kernel computes them (the tuner's correctness gate rejects such configs).
Weight-only fp8 (fp8_w8a16) and MXFP4 (gpt-oss) weights are dequantized tile by tile to the
activation dtype and multiplied with the 16-bit dot (QUANT 4 and 5; see `_e2m1_to_f32`).
This is the FAITHFUL kernel that `moeplan tune` measures; the fast variant's options
(split-K, atomics, TMA, tile-ordered rows) are extra constexprs of the same kernel.
The layer around it (align, activation, both GEMMs, top-k sum) is in fused_moe.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from moeplan.kernels._common import cdiv, round_to_bf16_grid, tl_dtype, upcast_dot
from moeplan.kernels.quantize import activation_quant_mode, weight_group_size
from moeplan.engines.launch import Launch
from moeplan.engines.launch import effective_block_k as _launch_block_k
from moeplan.layout.quant import QuantConfig

# Quant kinds of one GEMM (constexpr QUANT of the kernel)
Q_NONE, Q_W8A8, Q_W8A8_BLOCK, Q_WEIGHT_ONLY = 0, 1, 2, 3
Q_FP8_W8A16 = 4  # fp8 e4m3 weights, 16-bit activations: per tensor / channel / [bn, bk] block scales
Q_MXFP4 = 5  # OCP MXFP4 weights (E2M1 two per byte along I, one E8M0 scale per 32), 16-bit activations
MX_GROUP = 32  # values per E8M0 scale
# the fast variant's stage cap keeps at least this many stages (fast_options.py --set cap, H100:
# at DeepSeek-V3 TP16, M = 256 / 1024 / 4096, both GEMMs 284 / 356 / 643 us with floor 2,
# 300 / 362 / 667 with floor 1, 286 / 371 / 826 without the cap; the other 27 points within
# 1% of no cap, except Qwen3 M=64, 2.5% faster)
FAST_STAGE_FLOOR = 2


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    # UPCAST only under the CPU interpreter, whose bf16 tl.dot is broken.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc)
    if a.dtype == tl.float32:
        # an fp32 layer is computed in fp32: Triton's default for fp32 operands is TF32,
        # which put a 64x72 @ 72x80 layer at 2.3e-3 relative error on an H100
        return tl.dot(a, b, acc=acc, input_precision="ieee")
    return tl.dot(a, b, acc=acc)


@triton.jit
def _e2m1_to_f32(q):
    """FP4 E2M1 codes (ints 0..15: sign bit 3, exponent bits 2-1, mantissa bit 0) -> fp32.

    Magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}, built as fp32 bit patterns: a code with
    exponent e > 0 is 2^(e-1) * (1 + m/2), i.e. fp32 exponent field e + 126 and top
    mantissa bit m, which is ((e << 1 | m) + 252) << 22; e = 0 is 0 or 0.5 (0x3F000000).
    """
    c = q.to(tl.uint32)
    mag = c & 7
    bits = tl.where(mag >= 2, (mag + 252) << 22, (mag & 1) * 0x3F000000)
    bits = bits | ((c & 8) << 28)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _e8m0_to_f32(s):
    """E8M0 scale bytes -> 2^(s - 127) as fp32 (the byte is the fp32 exponent field).

    Exact for s in 1..254; s = 0 (2^-127, below fp32's normal range) gives 0 and the NaN
    code 255 gives inf: neither occurs in real checkpoints.
    """
    return (s.to(tl.uint32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _store_zero_rows(c_ptr, rows, row_mask, pid_n, N, stride_cm, stride_cn,
                     BLOCK_SIZE_N: tl.constexpr, DOT_M: tl.constexpr, compute_type: tl.constexpr):
    """Zeros into rows `rows` (where row_mask) of the tile's column range of C."""
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_ptrs = c_ptr + rows.to(tl.int64)[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    c_mask = row_mask[:, None] & (offs_cn[None, :] < N)
    tl.store(c_ptrs, tl.zeros((DOT_M, BLOCK_SIZE_N), dtype=compute_type), mask=c_mask)


@triton.jit(do_not_specialize=["EM", "num_valid_tokens", "split_k"])
def _moe_gemm_kernel(
    # pointers
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, b_zp_ptr, bias_ptr, topk_weights_ptr,
    sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
    # sizes: N = output columns O, K = reduction size I, EM = padded rows P, T; split_k
    # programs share each tile's K range (fast variant; 1 in the faithful kernel)
    N, K, EM, num_valid_tokens, split_k,
    # strides
    stride_am, stride_ak, stride_be, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bse, stride_bsk, stride_bsn,
    stride_bze, stride_bzk, stride_bzn, stride_biase, stride_biasn,
    # quantization group sizes: block quant [group_n, group_k]; weight-only: group_k = G;
    # fp8_w8a16 block scales [group_n, group_k] (0, 0: per tensor / channel); mxfp4: group_k = 32
    group_n: tl.constexpr, group_k: tl.constexpr,
    # the six knobs (num_warps / num_stages are launch options)
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    # variants
    MUL_ROUTED_WEIGHT: tl.constexpr, top_k: tl.constexpr, compute_type: tl.constexpr,
    QUANT: tl.constexpr, A_PER_ROW: tl.constexpr, B_PER_COL: tl.constexpr, INT_DOT: tl.constexpr,
    W_BITS: tl.constexpr, W_GROUPED: tl.constexpr, HAS_ZP: tl.constexpr, ZP_DEFAULT: tl.constexpr,
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, UPCAST: tl.constexpr, DOT_M: tl.constexpr,
    # fast variant only (the faithful kernel is SPLIT = ATOMIC = False, OUT_DIV = 1): SPLIT
    # reads the K range of split tl.program_id(1) of split_k; ATOMIC adds the fp32 tile into
    # a zeroed fp32 C; OUT_DIV maps the pair row t to output row t // OUT_DIV (top-k sum)
    SPLIT: tl.constexpr = False, ATOMIC: tl.constexpr = False, OUT_DIV: tl.constexpr = 1,
    # fast variant: B tiles through a TMA tensor descriptor over B viewed as (E * O, I)
    # (rows past an expert's O read the next expert's rows and are never stored; past I and
    # past the last expert the copy engine fills zeros)
    B_DESC: tl.constexpr = False, b_desc=None,
    # fast variant, block quant: ONE accumulator kept in units of the current step's scales
    # (rescaled by prev/cur each step, scaled back once in the epilogue) instead of a second
    # accumulator-sized tile per step; needs positive scales
    ONE_ACC: tl.constexpr = False,
    # fast variant, tile-ordered rows: A_SORTED reads A row pid_m * BLOCK_SIZE_M + i for tile
    # row i (A holds P rows in align's order, so a tile's rows are contiguous), A_DESC loads
    # those tiles through a TMA descriptor over A (P, I); C_SORTED writes C row
    # pid_m * BLOCK_SIZE_M + i (C holds P rows) with zeros in sentinel rows and in tiles past
    # the used rows, so every row of C is defined
    A_SORTED: tl.constexpr = False, A_DESC: tl.constexpr = False, a_desc=None,
    C_SORTED: tl.constexpr = False,
    # engine launch rules (profile vllm-0.33; faithful kernel): NAIVE: no align, tile p is
    # pair p alone (row 0; its other rows invalid), expert_ids_ptr is topk_ids flattened;
    # SWAP_AB: the tile is computed transposed (fp8 w8a8 only): A (BM, BK) and B (BK, BN) load as
    # usual, acc (BN, BM) += dot(B^T, A^T), transposed back once before the epilogue
    NAIVE: tl.constexpr = False, SWAP_AB: tl.constexpr = False,
):
    # ---- grouped program order -------------------------------------------------------
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(EM, BLOCK_SIZE_M)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # ---- rows of this tile -----------------------------------------------------------
    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    offs_m = tl.arange(0, DOT_M)  # DOT_M = max(BLOCK_SIZE_M, 16): tl.dot needs >= 16 rows
    offs_tid = pid_m * BLOCK_SIZE_M + offs_m
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        if C_SORTED:
            if not ATOMIC:  # a tile-ordered C has rows here too: zeros
                _store_zero_rows(c_ptr, offs_tid, offs_m < BLOCK_SIZE_M, pid_n, N, stride_cm, stride_cn,
                                 BLOCK_SIZE_N, DOT_M, compute_type)
        return
    if NAIVE:
        offs_token = tl.where(offs_m == 0, pid_m, num_valid_tokens)
    elif DOT_M == BLOCK_SIZE_M:
        offs_token = tl.load(sorted_token_ids_ptr + offs_tid)
    else:
        offs_token = tl.load(sorted_token_ids_ptr + offs_tid, mask=offs_m < BLOCK_SIZE_M,
                             other=num_valid_tokens)
    token_mask = offs_token < num_valid_tokens
    # Sentinel rows of a pair-ordered A point at row 0 (valid memory), are never stored and
    # are masked out of the A (and per-step A scale) loads, as in the engine's kernel:
    # unmasked, every padding row of every program read row 0, and at mid M, where a 128-row
    # tile is half padding, those requests piled onto that row's few L2 lines (Mixtral TP1
    # M=256 at M128/N128/K64/G1/w4/s5: 1287 us unmasked, 1005 masked, H100). A tile-ordered A
    # has real (or zeroed) rows there: no mask.
    if A_SORTED:
        if DOT_M == BLOCK_SIZE_M:
            a_rows = offs_tid.to(tl.int64)
        else:  # the dot's extra rows re-read the tile's first row (they may lie past P)
            a_rows = tl.where(offs_m < BLOCK_SIZE_M, offs_tid, pid_m * BLOCK_SIZE_M).to(tl.int64)
    else:
        a_rows = tl.where(token_mask, offs_token // top_k, 0).to(tl.int64)
    offs_token = offs_token.to(tl.int64)

    off_expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    if ATOMIC:
        if off_expert == -1:
            return  # C starts zeroed: nothing to add
    if off_expert == -1:
        # expert owned by another EP rank: its rows get zeros
        if C_SORTED:
            _store_zero_rows(c_ptr, offs_tid, offs_m < BLOCK_SIZE_M, pid_n, N, stride_cm, stride_cn,
                             BLOCK_SIZE_N, DOT_M, compute_type)
        else:
            _store_zero_rows(c_ptr, offs_token, token_mask, pid_n, N, stride_cm, stride_cn,
                             BLOCK_SIZE_N, DOT_M, compute_type)
        return

    offs_k = tl.arange(0, BLOCK_SIZE_K)
    offs_bn = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N  # wrap: no N mask on loads
    b_base = b_ptr + off_expert * stride_be
    # Tiles load as (BM, BK) and (BK, BN) with or without the swap, as in the engine's kernel:
    # the swap transposes the loaded tiles for the dot (below), not the loads.
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    if W_BITS == 4:
        b_ptrs = b_base + (offs_k[:, None] // 2) * stride_bk + offs_bn[None, :] * stride_bn
        b_shift = (offs_k[:, None] % 2) * 4
    else:
        b_ptrs = b_base + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn

    # ---- scales that do not change along K -------------------------------------------
    if QUANT == 1:
        if A_PER_ROW:
            a_scale = tl.load(a_scale_ptr + a_rows * stride_asm)
        else:
            a_scale = tl.load(a_scale_ptr)
        if B_PER_COL:
            b_scale = tl.load(b_scale_ptr + off_expert * stride_bse + offs_bn * stride_bsn)
        else:
            b_scale = tl.load(b_scale_ptr + off_expert * stride_bse)
    if QUANT == 2:
        a_scale_ptrs = a_scale_ptr + a_rows * stride_asm
        b_scale_ptrs = b_scale_ptr + off_expert * stride_bse + (offs_bn // group_n) * stride_bsn
    if QUANT == 3:
        bs_base = b_scale_ptr + off_expert * stride_bse
        if W_GROUPED:
            if HAS_ZP:
                bz_base = b_zp_ptr + off_expert * stride_bze
                if W_BITS == 4:
                    bz_cols = (offs_bn // 2) * stride_bzn
                    bz_shift = (offs_bn % 2) * 4
                else:
                    bz_cols = offs_bn * stride_bzn
        else:
            b_scale = tl.load(bs_base + offs_bn * stride_bsn).to(tl.float32)
    if QUANT == 4:
        bs_base = b_scale_ptr + off_expert * stride_bse
        if group_n > 0:  # block scales (E, cdiv(O, group_n), cdiv(I, group_k))
            bs_cols = (offs_bn // group_n) * stride_bsn
        else:  # per channel (E, O, 1), or per tensor (E,) with stride_bsn = 0: epilogue scale
            b_scale = tl.load(bs_base + offs_bn * stride_bsn).to(tl.float32)
    if QUANT == 5:
        bs_base = b_scale_ptr + off_expert * stride_bse
        bs_cols = offs_bn * stride_bsn

    # ---- main loop ---------------------------------------------------------------------
    k_lo = 0
    k_hi = tl.cdiv(K, BLOCK_SIZE_K)
    if SPLIT:
        k_per = tl.cdiv(k_hi, split_k)
        k_lo = tl.program_id(1) * k_per
        k_hi = tl.minimum(k_lo + k_per, k_hi)
        if k_lo >= k_hi:
            return
        a_ptrs += k_lo * BLOCK_SIZE_K * stride_ak
        if W_BITS == 4:
            b_ptrs += k_lo * (BLOCK_SIZE_K // 2) * stride_bk
        else:
            b_ptrs += k_lo * BLOCK_SIZE_K * stride_bk
    if SWAP_AB:
        accumulator = tl.zeros((BLOCK_SIZE_N, DOT_M), dtype=tl.float32)
    else:
        accumulator = tl.zeros((DOT_M, BLOCK_SIZE_N), dtype=tl.float32)
    if QUANT == 2:
        if ONE_ACC:
            ks0 = (k_lo * BLOCK_SIZE_K) // group_k
            if not A_SORTED:
                prev_a = tl.load(a_scale_ptrs + ks0 * stride_ask, mask=token_mask, other=1.0)
            else:
                prev_a = tl.load(a_scale_ptrs + ks0 * stride_ask)
            prev_b = tl.load(b_scale_ptrs + ks0 * stride_bsk)
    if B_DESC:
        b_row = (off_expert * N + pid_n * BLOCK_SIZE_N).to(tl.int32)
    if A_DESC:
        a_row = (pid_m * BLOCK_SIZE_M).to(tl.int32)
    for k in range(k_lo, k_hi):
        if A_DESC:
            a = a_desc.load([a_row, k * BLOCK_SIZE_K])  # (DOT_M, BK); zeros past I
        elif EVEN_K:
            if not A_SORTED:
                a = tl.load(a_ptrs, mask=token_mask[:, None], other=0.0)
            else:
                a = tl.load(a_ptrs)
        else:
            a_mask = offs_k[None, :] < K - k * BLOCK_SIZE_K
            if not A_SORTED:
                a_mask = a_mask & token_mask[:, None]
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
        if B_DESC:
            b = b_desc.load([b_row, k * BLOCK_SIZE_K]).T  # (BK, BN) view of a K-major tile
        elif EVEN_K:
            b = tl.load(b_ptrs)
        else:
            b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_SIZE_K, other=0.0)
        if SWAP_AB:
            # fp8 w8a8 only (QUANT 1 or 2, no int dot, no fast-variant options): the token
            # dimension rides the instruction's N side; (BN, BK) x (BK, BM) into (BN, BM)
            if QUANT == 2:
                ks = (k * BLOCK_SIZE_K) // group_k
                a_s = tl.load(a_scale_ptrs + ks * stride_ask, mask=token_mask, other=1.0)
                b_s = tl.load(b_scale_ptrs + ks * stride_bsk)
                accumulator += tl.dot(tl.trans(b), tl.trans(a)) * b_s[:, None] * a_s[None, :]
            else:
                accumulator = _dot(tl.trans(b), tl.trans(a), accumulator, UPCAST)
        elif QUANT == 0:
            accumulator = _dot(a, b, accumulator, UPCAST)
        elif QUANT == 1:
            if INT_DOT:
                accumulator += tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
            else:
                accumulator = _dot(a, b, accumulator, UPCAST)
        elif QUANT == 2:
            ks = (k * BLOCK_SIZE_K) // group_k
            if not A_SORTED:  # 1.0, not 0: the one-accumulator form divides by it
                a_s = tl.load(a_scale_ptrs + ks * stride_ask, mask=token_mask, other=1.0)
            else:
                a_s = tl.load(a_scale_ptrs + ks * stride_ask)
            b_s = tl.load(b_scale_ptrs + ks * stride_bsk)
            if ONE_ACC:
                accumulator = accumulator * ((prev_a / a_s)[:, None] * (prev_b / b_s)[None, :])
                accumulator = tl.dot(a, b, acc=accumulator)
                prev_a = a_s
                prev_b = b_s
            else:
                if INT_DOT:
                    part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
                else:
                    part = tl.dot(a, b)
                accumulator += part * a_s[:, None] * b_s[None, :]
        elif QUANT == 3:
            if W_BITS == 4:
                b = (b >> b_shift) & 0xF
            if W_GROUPED:
                if group_k % BLOCK_SIZE_K == 0:
                    # the whole K tile lies in one group: one scale (zero point) per column
                    kg = (k * BLOCK_SIZE_K) // group_k
                    s = tl.load(bs_base + offs_bn[None, :] * stride_bsn + kg * stride_bsk).to(tl.float32)
                    if HAS_ZP:
                        z = tl.load(bz_base + bz_cols[None, :] + kg * stride_bzk)
                else:
                    kg = (k * BLOCK_SIZE_K + offs_k[:, None]) // group_k
                    kg_mask = (k * BLOCK_SIZE_K + offs_k[:, None]) < K
                    s = tl.load(bs_base + offs_bn[None, :] * stride_bsn + kg * stride_bsk,
                                mask=kg_mask, other=0.0).to(tl.float32)
                    if HAS_ZP:
                        z = tl.load(bz_base + bz_cols[None, :] + kg * stride_bzk, mask=kg_mask, other=0)
                if HAS_ZP:
                    if W_BITS == 4:
                        z = (z >> bz_shift[None, :]) & 0xF
                    zf = z.to(tl.float32)
                else:
                    zf = ZP_DEFAULT
                bf = (b.to(tl.float32) - zf) * s
                if UPCAST:
                    bf = round_to_bf16_grid(bf)  # what the GPU's bf16 cast gives, kept fp32
                else:
                    bf = bf.to(compute_type)
            elif UPCAST:
                bf = b.to(tl.float32)  # the interpreter's int8 -> bf16 cast is broken too
            else:
                bf = b.to(compute_type)
            accumulator = _dot(a, bf, accumulator, UPCAST)
        elif QUANT == 4:
            if group_n > 0:
                if group_k % BLOCK_SIZE_K == 0:
                    # the K tile lies in one scale block: one scale per column
                    kg = (k * BLOCK_SIZE_K) // group_k
                    s = tl.load(bs_base + bs_cols[None, :] + kg * stride_bsk).to(tl.float32)
                else:
                    kk = k * BLOCK_SIZE_K + offs_k[:, None]
                    s = tl.load(bs_base + bs_cols[None, :] + (kk // group_k) * stride_bsk, mask=kk < K,
                                other=0.0).to(tl.float32)
                bf = b.to(tl.float32) * s
                if UPCAST:
                    bf = round_to_bf16_grid(bf)
                else:
                    bf = bf.to(compute_type)
            elif UPCAST:
                bf = b.to(tl.float32)
            else:
                bf = b.to(compute_type)  # exact: every e4m3 value is a bf16 / fp16 value
            accumulator = _dot(a, bf, accumulator, UPCAST)
        else:
            b = (b >> b_shift) & 0xF
            if group_k % BLOCK_SIZE_K == 0:
                kg = (k * BLOCK_SIZE_K) // group_k
                sb = tl.load(bs_base + bs_cols[None, :] + kg * stride_bsk)
                sf = _e8m0_to_f32(sb)
            else:
                # BLOCK_SIZE_K spans BLOCK_SIZE_K / 32 scale groups (K is a multiple of 32):
                # load one (groups, BN) scale tile and broadcast it over each group's rows
                # instead of gathering a scale per element
                NGK: tl.constexpr = BLOCK_SIZE_K // group_k
                kg = (k * BLOCK_SIZE_K) // group_k + tl.arange(0, NGK)
                sb = tl.load(bs_base + bs_cols[None, :] + kg[:, None] * stride_bsk,
                             mask=kg[:, None] * group_k < K, other=0)
                sf = _e8m0_to_f32(sb)  # (NGK, BN)
                sf = tl.reshape(tl.broadcast_to(sf[:, None, :], (NGK, group_k, BLOCK_SIZE_N)),
                                (BLOCK_SIZE_K, BLOCK_SIZE_N))
            bf = _e2m1_to_f32(b) * sf  # exact (power-of-two scale)
            if UPCAST:
                bf = round_to_bf16_grid(bf)
            else:
                bf = bf.to(compute_type)
            accumulator = _dot(a, bf, accumulator, UPCAST)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        if W_BITS == 4:
            b_ptrs += (BLOCK_SIZE_K // 2) * stride_bk
        else:
            b_ptrs += BLOCK_SIZE_K * stride_bk

    # ---- epilogue ----------------------------------------------------------------------
    if SWAP_AB:
        accumulator = tl.trans(accumulator)  # (BN, BM) -> (BM, BN): the epilogue is unchanged
    if QUANT == 2:
        if ONE_ACC:
            accumulator = accumulator * (prev_a[:, None] * prev_b[None, :])
    if QUANT == 1:
        if A_PER_ROW:
            accumulator = accumulator * a_scale[:, None]
        else:
            accumulator = accumulator * a_scale
        if B_PER_COL:
            accumulator = accumulator * b_scale[None, :]
        else:
            accumulator = accumulator * b_scale
    if QUANT == 3:
        if not W_GROUPED:
            accumulator = accumulator * b_scale[None, :]
    if QUANT == 4:
        if group_n == 0:
            accumulator = accumulator * b_scale[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + off_expert * stride_biase + offs_bn * stride_biasn).to(tl.float32)
        if SPLIT:
            bias = tl.where(tl.program_id(1) == 0, bias, 0.0)  # added by one split only
        accumulator = accumulator + bias[None, :]
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + offs_token, mask=token_mask, other=0.0)
        accumulator = accumulator * w[:, None]
    # output pointers only now: a (BM, BN) int64 pointer tile kept live across the K loop
    # would cost registers the accumulator needs
    offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_mask = token_mask[:, None] & (offs_cn[None, :] < N)
    if C_SORTED:
        # every row of the tile (sentinels as zeros); rows past BLOCK_SIZE_M (DOT_M > BM)
        # belong to the next tile
        rows = offs_tid.to(tl.int64)
        c_mask = (offs_m < BLOCK_SIZE_M)[:, None] & (offs_cn[None, :] < N)
        accumulator = tl.where(token_mask[:, None], accumulator, 0.0)
        c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_cn[None, :] * stride_cn
        if ATOMIC:
            tl.atomic_add(c_ptrs, accumulator, mask=c_mask, sem="relaxed")
        else:
            if UPCAST:
                accumulator = round_to_bf16_grid(accumulator)
            tl.store(c_ptrs, accumulator.to(compute_type), mask=c_mask)
    elif ATOMIC:
        c_ptrs = c_ptr + (offs_token // OUT_DIV)[:, None] * stride_cm + offs_cn[None, :] * stride_cn
        tl.atomic_add(c_ptrs, accumulator, mask=c_mask, sem="relaxed")
    else:
        if UPCAST:
            accumulator = round_to_bf16_grid(accumulator)
        c_ptrs = c_ptr + offs_token[:, None] * stride_cm + offs_cn[None, :] * stride_cn
        tl.store(c_ptrs, accumulator.to(compute_type), mask=c_mask)


# ---------------------------------------------------------------------------------------------
# quantization plan of the layer
# ---------------------------------------------------------------------------------------------

@dataclass
class GemmQuant:
    """How one GEMM's operands are quantized (derived from a QuantConfig)."""

    kind: int = Q_NONE
    act_dtype: Optional[torch.dtype] = None  # fp8/int8 when activations are quantized
    act_mode: Optional[str] = None  # static / tensor / token / group
    act_group: Optional[int] = None
    act_scale: Optional[torch.Tensor] = None  # static activation scale
    w_scale: Optional[torch.Tensor] = None
    w_zp: Optional[torch.Tensor] = None
    block_shape: Optional[list[int]] = None
    w_bits: int = 16
    group_size: Optional[int] = None  # weight-only group along I (None: per channel)
    w_block: Optional[list[int]] = None  # fp8_w8a16 block scales [bn, bk] (None: per tensor / channel)


def gemm_quant(quant: Optional[QuantConfig], which: str) -> GemmQuant:
    """GemmQuant of GEMM `which` ('w1' or 'w2'); raises for schemes the kernel lacks."""
    if quant is None or quant.weight_dtype is None:
        return GemmQuant()
    desc = quant.w1 if which == "w1" else quant.w2
    static = quant.a1_scale if which == "w1" else quant.a2_scale
    if quant.use_fp8_w8a8 or quant.use_int8_w8a8:
        if desc.scale is None:
            raise ValueError(f"{quant.scheme}: {which}_scale is missing")
        mode, group = activation_quant_mode(quant, static)
        qdtype = torch.float8_e4m3fn if quant.use_fp8_w8a8 else torch.int8
        kind = Q_W8A8_BLOCK if quant.block_shape is not None else Q_W8A8
        return GemmQuant(kind, qdtype, mode, group, static, desc.scale, None,
                         None if quant.block_shape is None else list(quant.block_shape), 8)
    if quant.use_int8_w8a16 or quant.use_int4_w4a16:
        if desc.scale is None:
            raise ValueError(f"{quant.scheme}: {which}_scale is missing")
        return GemmQuant(Q_WEIGHT_ONLY, w_scale=desc.scale, w_zp=desc.zp,
                         w_bits=4 if quant.use_int4_w4a16 else 8, group_size=weight_group_size(quant))
    if quant.use_fp8_w8a16:
        if desc.scale is None:
            raise ValueError(f"fp8_w8a16: {which}_scale is missing")
        bs = quant.block_shape
        if bs is not None and (bs[0] <= 0 or bs[1] <= 0):
            raise ValueError(f"fp8_w8a16 block scales need a block shape [bn, bk] of positive sizes, got {bs}")
        return GemmQuant(Q_FP8_W8A16, w_scale=desc.scale, w_bits=8, w_block=None if bs is None else list(bs))
    if quant.use_mxfp4_w4a16:
        if desc.scale is None:
            raise ValueError(f"mxfp4: {which}_scale (E8M0 bytes) is missing")
        return GemmQuant(Q_MXFP4, w_scale=desc.scale, w_bits=4, group_size=MX_GROUP)
    raise NotImplementedError(
        f"scheme {quant.scheme} is not supported by the Triton fused-MoE kernel "
        "(supported: unquantized, fp8_w8a8, int8_w8a8, int8_w8a16, int4_w4a16, fp8_w8a16, mxfp4)")


def positive_scales(s: Optional[torch.Tensor]) -> bool:
    """True if every weight scale is > 0. Checked once per tensor version and remembered on
    the tensor itself (a cache keyed by address could answer for a freed tensor's successor);
    the first check synchronizes, so inside a CUDA-graph capture an unchecked tensor counts
    as not positive and the two-tile form runs."""
    if s is None:
        return False
    seen = getattr(s, "_moeplan_positive", None)
    if seen is not None and seen[0] == s._version:
        return seen[1]
    if s.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    ok = bool((s > 0).all())
    s._moeplan_positive = (s._version, ok)
    return ok


def _tma_box_ok(t: torch.Tensor, box_rows: int, box_cols: int) -> bool:
    """Can (box_rows, box_cols) tiles of t, viewed as 2-D over its last dim, come through a
    TMA descriptor? Contiguous, 16-byte aligned base and rows, box rows of >= 16 bytes,
    box sides of at most 256."""
    elt = t.element_size()
    return (t.is_contiguous() and t.data_ptr() % 16 == 0 and (t.shape[-1] * elt) % 16 == 0
            and box_cols * elt >= 16 and box_rows <= 256 and box_cols <= 256)


def tma_eligible(B: torch.Tensor, gq: GemmQuant, BN: int, BK: int) -> bool:
    """Can B's (BN, BK) tiles come through a TMA descriptor? Unpacked 8/16-bit weights
    (unquantized, w8a8, block w8a8) that `_tma_box_ok` accepts."""
    return gq.kind in (Q_NONE, Q_W8A8, Q_W8A8_BLOCK) and _tma_box_ok(B, BN, BK)


def effective_block_k(config: dict, gq: GemmQuant, clamp: bool = True) -> int:
    """BLOCK_SIZE_K as the kernel runs it (moeplan.engines.launch's rule: with block quant and
    `clamp`, min(BK, bn, bk); without the clamp, BK as given).

    Clamped, a BK that still does not divide block_k is refused: the kernel would need a scale
    per element. Unclamped (SGLang) it is run, one scale per step as that engine does (module doc).
    """
    bk = _launch_block_k(int(config["BLOCK_SIZE_K"]), tuple(gq.block_shape) if gq.block_shape else None, clamp)
    if gq.block_shape is not None and clamp:
        if gq.block_shape[1] % bk:
            raise ValueError(f"BLOCK_SIZE_K {bk} does not divide the block size {gq.block_shape[1]}")
    return bk


def _check_weight_only_scales(B: torch.Tensor, I: int, gq: GemmQuant) -> torch.Tensor:
    """Check B and its scales for fp8_w8a16 / mxfp4 (shapes only); returns the scale tensor to launch."""
    E, O = B.shape[0], B.shape[1]
    s = gq.w_scale
    if gq.kind == Q_MXFP4:
        if B.dtype != torch.uint8 or B.shape[2] * 2 != I:
            raise ValueError(f"mxfp4 weights must be (E, O, I//2) uint8 (two E2M1 values a byte), got "
                             f"{tuple(B.shape)} {B.dtype} for I = {I}")
        if I % MX_GROUP:
            raise ValueError(f"mxfp4 needs the reduction size to be a multiple of {MX_GROUP}, got {I}")
        if s.dtype != torch.uint8:
            if str(s.dtype) != "torch.float8_e8m0fnu":
                raise ValueError(f"mxfp4 scales must be uint8 (or float8_e8m0fnu) E8M0 bytes, got {s.dtype}")
            s = s.view(torch.uint8)
        if tuple(s.shape) != (E, O, I // MX_GROUP):
            raise ValueError(f"mxfp4 scales must be (E, O, I/32) = {(E, O, I // MX_GROUP)}, got {tuple(s.shape)}")
        return s
    if B.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8_w8a16 weights must be float8_e4m3fn, got {B.dtype}")
    if gq.w_block is not None:
        bn, bk = gq.w_block
        want = (E, cdiv(O, bn), cdiv(I, bk))
        if tuple(s.shape) != want:
            raise ValueError(f"fp8_w8a16 block {gq.w_block} scales must be (E, cdiv(O,bn), cdiv(I,bk)) = {want}, "
                             f"got {tuple(s.shape)}")
    elif s.numel() == E and s.dim() == 1:
        pass  # per tensor (E,)
    elif tuple(s.shape) not in ((E, O, 1), (E, O)):
        raise ValueError(f"fp8_w8a16 scales must be per tensor (E,) = ({E},) or per channel (E, O, 1) = "
                         f"{(E, O, 1)} without a block shape, got {tuple(s.shape)}")
    return s


def invoke_moe_gemm(
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A_scale: Optional[torch.Tensor],
    gq: GemmQuant,
    bias: Optional[torch.Tensor],
    topk_weights: Optional[torch.Tensor],
    sorted_token_ids: torch.Tensor,
    expert_ids: torch.Tensor,
    num_tokens_post_padded: torch.Tensor,
    mul_routed_weight: bool,
    top_k: int,
    config: dict,
    num_valid_tokens: int,
    split_k: int = 1,
    atomic: bool = False,
    out_div: int = 1,
    compute_dtype: Optional[torch.dtype] = None,
    tma: bool = False,
    one_acc: bool = False,
    a_sorted: bool = False,
    c_sorted: bool = False,
    fit_stages: bool = False,
    launch: Optional[Launch] = None,
    gemm: int = 1,
) -> None:
    """One grouped GEMM: C[t] = A[t // top_k] @ B[expert(t)].T (+ bias) (* weight[t]).

    A (rows, I) activations (quantized for w8a8), B (E, O, I) weights (I//2 packed int4),
    C (T, O) output in the compute dtype; sorted_token_ids / expert_ids /
    num_tokens_post_padded from align with BLOCK_SIZE_M = config["BLOCK_SIZE_M"].
    Fast variant: with `atomic`, C is a zeroed float32 tensor the tiles are added into, at
    row t // out_div (out_div = topk sums the pairs of a token: C is then (M, O)), and
    `split_k` programs share each tile's K range; `compute_dtype` is the 16-bit dtype;
    `tma` loads B tiles through a tensor descriptor where `tma_eligible` allows it;
    `one_acc` (block-quantized fp8 with positive weight scales) keeps a single accumulator.
    `a_sorted`: A (and its per-row scales) hold P rows in align's tile order (row p is pair
    sorted_token_ids[p]), read contiguously (through a descriptor with `tma`); `c_sorted`: C
    holds P rows in tile order, sentinel rows and unused tiles written as zeros.
    `fit_stages` caps num_stages at the K steps one program runs, keeping FAST_STAGE_FLOOR
    (deeper buffers would hold nothing but take shared memory another program could use).
    `launch` (moeplan.engines.launch.plan_launch) carries the engine's row plan, tile
    orientations and BLOCK_SIZE_K rule: with `launch.naive` expert_ids is topk_ids flattened and
    the grid has one M tile per pair (sorted_token_ids is not read); with `launch.swap_of(gemm)`
    (`gemm` 1: gate_up, 2: down) the tiles are computed transposed; `launch.bk_clamp` (None
    launch: True) clamps BLOCK_SIZE_K under block quantization.
    """
    assert sorted_token_ids.stride(0) == 1 and C.stride(1) == 1
    if split_k > 1 or out_div > 1:
        assert atomic, "split-K and the fused top-k sum add into C atomically"
    if atomic:
        assert C.dtype == torch.float32
    O = B.shape[1]
    I = A.shape[1]
    BM = int(config["BLOCK_SIZE_M"])
    BN = int(config["BLOCK_SIZE_N"])
    BK = effective_block_k(config, gq, launch.bk_clamp if launch is not None else True)
    GM = int(config["GROUP_SIZE_M"])
    EM = launch.padded_rows if launch is not None else sorted_token_ids.shape[0]
    naive = launch is not None and launch.naive
    swap = launch is not None and launch.swap_of(gemm)
    if swap and not (gq.kind in (Q_W8A8, Q_W8A8_BLOCK) and A.dtype == torch.float8_e4m3fn
                     and not (atomic or a_sorted or c_sorted or tma)):
        raise ValueError("the operand swap runs fp8_w8a8 GEMMs of the faithful kernel only "
                         f"(got {gq.kind=}, activations {A.dtype})")
    compute = compute_dtype if compute_dtype is not None else C.dtype
    if topk_weights is not None:
        assert topk_weights.is_contiguous()
    a_s = A_scale
    # activation scales: (1,) per tensor, (R, 1) per row, (R, cdiv(I, bk)) per row and group
    a_per_row = a_s is not None and a_s.dim() == 2 and a_s.shape[0] > 1
    stride_asm = a_s.stride(0) if a_per_row else 0
    stride_ask = a_s.stride(1) if (a_s is not None and a_s.dim() == 2) else 0
    w_s, w_zp = gq.w_scale, gq.w_zp
    if gq.kind in (Q_FP8_W8A16, Q_MXFP4):
        w_s = _check_weight_only_scales(B, I, gq)
    b_per_col = False
    stride_bse = stride_bsk = stride_bsn = 0
    if w_s is not None:
        if gq.kind in (Q_W8A8, Q_FP8_W8A16) and w_s.numel() == B.shape[0]:
            stride_bse = w_s.stride(0)  # per tensor: (E,)
        else:
            stride_bse = w_s.stride(0)
            stride_bsn = w_s.stride(1)
            stride_bsk = w_s.stride(2) if w_s.dim() == 3 else 0
            b_per_col = True
    group_n = group_k = 0
    if gq.kind == Q_W8A8_BLOCK:
        group_n, group_k = gq.block_shape
    elif gq.kind == Q_WEIGHT_ONLY and gq.group_size is not None:
        group_k = gq.group_size
    elif gq.kind == Q_FP8_W8A16 and gq.w_block is not None:
        group_n, group_k = gq.w_block
    elif gq.kind == Q_MXFP4:
        group_k = MX_GROUP
    zp_default = 0.0
    if gq.kind == Q_WEIGHT_ONLY:
        if gq.w_bits == 4:
            zp_default = 8.0
        elif B.dtype == torch.uint8:
            zp_default = 128.0
    int_dot = gq.kind in (Q_W8A8, Q_W8A8_BLOCK) and B.dtype == torch.int8
    grid = (cdiv(EM, BM) * cdiv(O, BN), split_k) if split_k > 1 else (cdiv(EM, BM) * cdiv(O, BN),)
    stages = int(config["num_stages"])
    if fit_stages:
        stages = min(stages, max(FAST_STAGE_FLOOR, cdiv(cdiv(I, BK), split_k)))
    extra = {}
    if atomic:
        extra.update(SPLIT=split_k > 1, ATOMIC=True, OUT_DIV=out_div)
    if one_acc and gq.kind == Q_W8A8_BLOCK and not int_dot and positive_scales(w_s):
        extra.update(ONE_ACC=True)
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor
    if tma and tma_eligible(B, gq, BN, BK):
        extra.update(B_DESC=True, b_desc=TensorDescriptor.from_tensor(B.view(B.shape[0] * O, I), [BN, BK]))
    if a_sorted:
        assert A.shape[0] == EM, "a tile-ordered A holds one row per padded row"
        extra.update(A_SORTED=True)
        if tma and _tma_box_ok(A, max(BM, 16), BK):
            extra.update(A_DESC=True, a_desc=TensorDescriptor.from_tensor(A, [max(BM, 16), BK]))
    if c_sorted:
        assert C.shape[0] == EM, "a tile-ordered C holds one row per padded row"
        extra.update(C_SORTED=True)
    if naive:
        assert not (a_sorted or c_sorted), "naive assignment has no tile order"
        extra.update(NAIVE=True)
    if swap:
        extra.update(SWAP_AB=True)
    # the dot's row count: BLOCK_SIZE_M itself, as in the engine's kernel (Triton pads small
    # tiles to the instruction); tile-ordered rows keep >= 16 (their TMA boxes and row reuse)
    dot_m = max(BM, 16) if (a_sorted or c_sorted) else BM
    dummy = C
    _moe_gemm_kernel[grid](
        A, B, C,
        a_s if a_s is not None else dummy,
        w_s if w_s is not None else dummy,
        w_zp if w_zp is not None else dummy,
        bias if bias is not None else dummy,
        topk_weights if topk_weights is not None else dummy,
        sorted_token_ids, expert_ids, num_tokens_post_padded,
        O, I, EM, num_valid_tokens, split_k,
        A.stride(0), A.stride(1), B.stride(0), B.stride(2), B.stride(1), C.stride(0), C.stride(1),
        stride_asm, stride_ask,
        stride_bse, stride_bsk, stride_bsn,
        w_zp.stride(0) if w_zp is not None else 0,
        w_zp.stride(2) if w_zp is not None else 0,
        w_zp.stride(1) if w_zp is not None else 0,
        bias.stride(0) if bias is not None else 0,
        bias.stride(1) if bias is not None else 0,
        group_n=group_n, group_k=group_k,
        BLOCK_SIZE_M=BM, BLOCK_SIZE_N=BN, BLOCK_SIZE_K=BK, GROUP_SIZE_M=GM,
        MUL_ROUTED_WEIGHT=mul_routed_weight, top_k=top_k, compute_type=tl_dtype(compute),
        QUANT=gq.kind, A_PER_ROW=bool(a_per_row), B_PER_COL=b_per_col, INT_DOT=int_dot,
        W_BITS=gq.w_bits if gq.kind in (Q_WEIGHT_ONLY, Q_MXFP4) else 16,
        W_GROUPED=gq.kind == Q_WEIGHT_ONLY and gq.group_size is not None,
        HAS_ZP=w_zp is not None, ZP_DEFAULT=zp_default,
        HAS_BIAS=bias is not None, EVEN_K=I % BK == 0, UPCAST=upcast_dot(compute),
        DOT_M=dot_m,
        num_warps=int(config["num_warps"]), num_stages=stages,
        **extra,
    )
