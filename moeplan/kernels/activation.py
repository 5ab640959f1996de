"""Gated activation between the two GEMMs, optionally fused with activation quantization.

Dimension letters: R rows (R = T = M * topk pairs in the layer), N intermediate size;
the input holds 2N columns: gate then up halves (`silu`, `gelu`), or gate/up
INTERLEAVED (`swigluoai`, gpt-oss: columns 0,2,4.. gate and 1,3,5.. up).

  silu       out = silu(gate) * up
  gelu       out = gelu(gate) * up                  (exact erf GELU)
  swigluoai  gate = min(gate, 7); up = clamp(up, -7, 7)
             out = (up + 1) * gate * sigmoid(1.702 * gate)
  none       out = x (N columns): used to quantize a tensor with no activation

Quantization of the output (fp8 e4m3 or int8), fused when it is row-local:
  static     a given per-tensor scale                       scale (1,) float32
  token      dynamic, one scale per row (amax / qmax)       scale (R, 1) float32
  group      dynamic, one scale per GROUP columns of a row  scale (R, cdiv(N, GROUP)) float32
Dynamic per-tensor quantization needs the whole tensor's amax: the caller computes the
scale first (see quantize.quantize_activation) and then uses `static`.
int8 rounds half away from zero; fp8 rounds to nearest even (the hardware cast).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from moeplan.kernels._common import FP8_MAX, INT8_MAX, cdiv, is_interpreter, next_pow2, round_to_bf16_grid

ACTIVATIONS = {"none": 0, "silu": 1, "gelu": 2, "swigluoai": 3}
QUANT_MODES = {None: 0, "static": 1, "token": 2, "group": 3}
SWIGLUOAI_ALPHA = 1.702
SWIGLUOAI_LIMIT = 7.0
SCALE_EPS = 1e-10


@triton.jit
def _activate(x_ptr, row_off, cols, mask, N, ACT: tl.constexpr):
    """fp32 activation of `cols` (< N) of one row of x (row start pointer offset row_off)."""
    if ACT == 0:
        return tl.load(x_ptr + row_off + cols, mask=mask, other=0.0).to(tl.float32)
    elif ACT == 3:
        g = tl.load(x_ptr + row_off + 2 * cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(x_ptr + row_off + 2 * cols + 1, mask=mask, other=0.0).to(tl.float32)
        g = tl.minimum(g, 7.0)
        u = tl.minimum(tl.maximum(u, -7.0), 7.0)
        return (u + 1.0) * (g * tl.sigmoid(1.702 * g))
    else:
        g = tl.load(x_ptr + row_off + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(x_ptr + row_off + N + cols, mask=mask, other=0.0).to(tl.float32)
        if ACT == 1:
            a = g * tl.sigmoid(g)
        else:
            a = 0.5 * g * (1.0 + tl.erf(g * 0.7071067811865476))
        return a * u


@triton.jit
def _round_to_e4m3_grid(q):
    # Round fp32 values (|q| <= 448) to the nearest e4m3 value, ties to even, in fp32
    # arithmetic. Only used under the CPU interpreter, whose fp32 -> fp8 cast gets the
    # exponent wrong when rounding carries into it (125.4 -> 64 instead of 128).
    a = tl.abs(q)
    e = tl.floor(tl.log2(tl.maximum(a, 1e-30)))
    e = tl.maximum(e, -6.0)  # subnormals share the smallest normal exponent's step
    step = tl.exp2(e - 3.0)  # 3 mantissa bits
    y = a / step
    r = tl.floor(y + 0.5)
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    r = tl.where(((r - y) == 0.5) & odd, r - 1.0, r)
    return tl.where(q < 0, -r * step, r * step)


@triton.jit
def _quant_values(v, inv_scale, QMAX: tl.constexpr, IS_INT: tl.constexpr, FIX_FP8: tl.constexpr):
    q = v * inv_scale
    q = tl.minimum(tl.maximum(q, -QMAX), QMAX)
    if IS_INT:
        q = tl.where(q >= 0, tl.floor(q + 0.5), tl.ceil(q - 0.5))
    elif FIX_FP8:
        q = _round_to_e4m3_grid(q)
    return q


@triton.jit
def _act_quant_kernel(x_ptr, out_ptr, scale_ptr, N, stride_xm, stride_om, stride_sm,
                      ACT: tl.constexpr, QUANT: tl.constexpr, GROUP: tl.constexpr,
                      QMAX: tl.constexpr, IS_INT: tl.constexpr, EPS: tl.constexpr,
                      FIX_FP8: tl.constexpr, FIX_BF16: tl.constexpr, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = row * stride_xm
    o_row = out_ptr + row * stride_om
    out_ty = out_ptr.dtype.element_ty
    if QUANT == 2:
        # per-row scale: one pass for the amax, a second one to quantize and store
        amax = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            m = cols < N
            v = _activate(x_ptr, x_row, cols, m, N, ACT)
            amax = tl.maximum(amax, tl.where(m, tl.abs(v), 0.0))
        scale = tl.maximum(tl.max(amax, axis=0), EPS) / QMAX
        tl.store(scale_ptr + row * stride_sm, scale)
        inv = 1.0 / scale
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            m = cols < N
            v = _activate(x_ptr, x_row, cols, m, N, ACT)
            tl.store(o_row + cols, _quant_values(v, inv, QMAX, IS_INT, FIX_FP8).to(out_ty), mask=m)
    else:
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = cols < N
        v = _activate(x_ptr, x_row, cols, m, N, ACT)
        if QUANT == 0:
            if FIX_BF16:
                v = round_to_bf16_grid(v)
            tl.store(o_row + cols, v.to(out_ty), mask=m)
        elif QUANT == 1:
            inv = 1.0 / tl.load(scale_ptr)
            tl.store(o_row + cols, _quant_values(v, inv, QMAX, IS_INT, FIX_FP8).to(out_ty), mask=m)
        else:
            NG: tl.constexpr = BLOCK_N // GROUP
            vg = tl.reshape(tl.where(m, v, 0.0), (NG, GROUP))
            amax = tl.max(tl.abs(vg), axis=1)  # (NG,)
            scale = tl.maximum(amax, EPS) / QMAX
            q = _quant_values(vg, (1.0 / scale)[:, None], QMAX, IS_INT, FIX_FP8)
            tl.store(o_row + cols, tl.reshape(q, (BLOCK_N,)).to(out_ty), mask=m)
            gidx = tl.program_id(1) * NG + tl.arange(0, NG)
            tl.store(scale_ptr + row * stride_sm + gidx, scale, mask=gidx * GROUP < N)


def _qmax(qdtype: torch.dtype) -> tuple[float, bool]:
    if qdtype == torch.int8:
        return INT8_MAX, True
    if qdtype == torch.float8_e4m3fn:
        return FP8_MAX, False
    raise TypeError(f"unsupported activation quant dtype {qdtype}")


def act_and_quant(
    x: torch.Tensor,
    activation: str = "silu",
    out: Optional[torch.Tensor] = None,
    quant_dtype: Optional[torch.dtype] = None,
    mode: Optional[str] = None,
    group_size: Optional[int] = None,
    scale: Optional[torch.Tensor] = None,
    scale_out: Optional[torch.Tensor] = None,
):
    """Apply `activation` to x (R, 2N) (or (R, N) for 'none'); optionally quantize.

    Returns out (R, N) (x.dtype, or quant_dtype), and the scale tensor (None unquantized).
    `mode` in {None, 'static', 'token', 'group'}; `scale` is the static (1,) scale;
    `scale_out` an optional preallocated dynamic-scale tensor.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: silu, gelu, swigluoai")
    act = ACTIVATIONS[activation]
    R = x.shape[0]
    N = x.shape[1] if act == 0 else x.shape[1] // 2
    if act != 0 and x.shape[1] != 2 * N:
        raise ValueError(f"gated activation needs an even column count, got {x.shape[1]}")
    assert x.stride(-1) == 1
    if mode is None:
        quant_dtype = None
    out_dtype = quant_dtype if quant_dtype is not None else x.dtype
    if out is None:
        out = torch.empty((R, N), dtype=out_dtype, device=x.device)  # (R, N)
    qmax, is_int = (1.0, False) if quant_dtype is None else _qmax(quant_dtype)
    qm = QUANT_MODES[mode]
    if qm == 1:
        assert scale is not None and scale.numel() == 1
        scale_out = scale
    elif qm == 2:
        if scale_out is None:
            scale_out = torch.empty((R, 1), dtype=torch.float32, device=x.device)  # (R, 1)
    elif qm == 3:
        assert group_size is not None and group_size & (group_size - 1) == 0, "group size must be a power of two"
        if scale_out is None:
            scale_out = torch.empty((R, cdiv(N, group_size)), dtype=torch.float32, device=x.device)  # (R, N/G)
    if R == 0:
        return out, scale_out
    sptr = scale_out if scale_out is not None else out
    s_stride = scale_out.stride(0) if (scale_out is not None and scale_out.dim() == 2) else 0
    if qm == 2:
        block = min(next_pow2(N), 2048)
        grid = (R,)
    else:
        block = min(next_pow2(N), 1024)
        if qm == 3:
            block = max(block, group_size)
        grid = (R, cdiv(N, block))
    _act_quant_kernel[grid](
        x, out, sptr, N, x.stride(0), out.stride(0), s_stride,
        ACT=act, QUANT=qm, GROUP=group_size or 1, QMAX=qmax, IS_INT=is_int, EPS=SCALE_EPS,
        FIX_FP8=is_interpreter() and quant_dtype == torch.float8_e4m3fn,
        FIX_BF16=is_interpreter() and out.dtype == torch.bfloat16,
        BLOCK_N=block, num_warps=4 if block <= 1024 else 8)
    return out, (scale_out if qm != 0 else None)


# ---- pure-torch reference --------------------------------------------------------------

def act_and_mul_ref(x: torch.Tensor, activation: str = "silu") -> torch.Tensor:
    """fp32 reference of the gated activation: x (R, 2N) -> (R, N) float32."""
    x = x.float()
    if activation == "none":
        return x
    if activation == "swigluoai":
        g, u = x[:, 0::2], x[:, 1::2]
        g = g.clamp(max=SWIGLUOAI_LIMIT)
        u = u.clamp(min=-SWIGLUOAI_LIMIT, max=SWIGLUOAI_LIMIT)
        return (u + 1.0) * (g * torch.sigmoid(SWIGLUOAI_ALPHA * g))
    n = x.shape[1] // 2
    g, u = x[:, :n], x[:, n:]
    if activation == "silu":
        return torch.nn.functional.silu(g) * u
    if activation == "gelu":
        return torch.nn.functional.gelu(g) * u
    raise ValueError(f"unknown activation {activation!r}")
