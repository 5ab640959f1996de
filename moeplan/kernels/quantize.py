"""Quantization helpers: weights for every scheme (host-side torch), activations (Triton).

Dimension letters: E experts, O output rows of a weight (2N for w1, K for w2), I its
input columns (K for w1, N for w2), R activation rows, G a weight group size along I.

Weight layouts are the engine's, so its checkpoints' tensors plug in unchanged:

  scheme       weights                  scales (layout)                              zero points
  fp8_w8a8     (E, O, I) float8_e4m3fn  per-tensor (E,), per-channel (E, O, 1),      -
                                        block [bn, bk] (E, cdiv(O,bn), cdiv(I,bk))   -
               all float32
  int8_w8a8    (E, O, I) int8           per-tensor (E,) or per-channel (E, O, 1)     -
  int8_w8a16   (E, O, I) uint8          group: (E, O, cdiv(I,G)), act. dtype         (E, O, cdiv(I,G)) uint8
               stored +128 without zero points (the engine's uint8b128);
               or (E, O, I) int8 with per-channel scales (E, O, 1) and no groups
  int4_w4a16   (E, O, I//2) uint8,      group: (E, O, cdiv(I,G)), act. dtype         (E, O//2, cdiv(I,G)) uint8,
               two values per byte along I (even index in the low nibble);           two per byte along O
               stored +8 without zero points (uint4b8)                                (even row low nibble)
  fp8_w8a16    (E, O, I) float8_e4m3fn  per-channel (E, O, 1) (default), per-tensor    -
                                        (E,), block [bn, bk] (E, cdiv(O,bn), cdiv(I,bk))
               all float32; activations stay 16-bit (the kernel dequantizes weight tiles)
  mxfp4        (E, O, I//2) uint8,      E8M0 (E, O, I//32) uint8: 2^(byte - 127)     -
               OCP MXFP4: FP4 E2M1 codes (sign bit 3, exponent bits 2-1, mantissa bit 0;
               magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6) two per byte along I (even index in
               the low nibble), one scale per 32 consecutive I values (gpt-oss layout);
               I must be a multiple of 32

Dequantization: w = (q - z) * s, z = zero point, or 8 / 128 without zero points;
fp8: w = q * s; mxfp4: w = e2m1(code) * 2^(byte - 127).
Activations left without a given scale are quantized dynamically: per tensor, per
token (per-token schemes), or per token and group of bk columns (block schemes).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from moeplan.kernels._common import FP8_DTYPE, FP8_MAX, INT8_MAX, cdiv
from moeplan.kernels.activation import SCALE_EPS, act_and_quant
from moeplan.base.errors import QuantError
from moeplan.layout.quant import QuantConfig, quant_for_scheme

SCHEMES = ("bf16", "fp16", "fp32", "fp8_w8a8", "int8_w8a8", "int8_w8a16", "int4_w4a16", "fp8_w8a16", "mxfp4")
# Schemes `moeplan tune` accepts. mxfp4 runs correctly but its in-kernel E2M1 decode is far
# from the roofline on an H100 (gpt-oss-20b layer, best screened config: 215 us at M=1 against
# a ~18 us floor, 35.6 ms at M=4096), so a table tuned on it would rank configs of a kernel
# unlike the engine's; it stays out until that path is fast.
TUNABLE_SCHEMES = tuple(s for s in SCHEMES if s != "mxfp4")

MX_GROUP = 32  # values per E8M0 scale (OCP MX)
E2M1_MAX = 6.0
# E2M1 code -> value (codes 8..15 are the negatives of 0..7); host-side reference only
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# midpoints between consecutive E2M1 magnitudes (rounding thresholds)
_E2M1_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


# ---- small numeric helpers (shared by weights and the activation reference) ---------------

def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v >= 0, torch.floor(v + 0.5), torch.ceil(v - 0.5))


def _cast_q(v: torch.Tensor, qdtype: torch.dtype) -> torch.Tensor:
    """fp32 values already divided by their scale -> clamped quantized tensor."""
    if qdtype == torch.int8:
        return _round_half_away(v.clamp(-INT8_MAX, INT8_MAX)).to(torch.int8)
    return v.clamp(-FP8_MAX, FP8_MAX).to(qdtype)


def _qmax(qdtype: torch.dtype) -> float:
    return INT8_MAX if qdtype == torch.int8 else FP8_MAX


def _block_amax(w: torch.Tensor, bn: int, bk: int) -> torch.Tensor:
    """w (E, O, I) -> per-block amax (E, cdiv(O,bn), cdiv(I,bk)) float32 (edges padded with 0)."""
    E, O, I = w.shape
    Op, Ip = cdiv(O, bn) * bn, cdiv(I, bk) * bk
    wp = torch.nn.functional.pad(w.float().abs(), (0, Ip - I, 0, Op - O))
    return wp.view(E, Op // bn, bn, Ip // bk, bk).amax(dim=(2, 4))


def _expand_blocks(s: torch.Tensor, bn: int, bk: int, O: int, I: int) -> torch.Tensor:
    """(E, cdiv(O,bn), cdiv(I,bk)) -> (E, O, I) by repeating each block's value."""
    return s.repeat_interleave(bn, dim=1)[:, :O].repeat_interleave(bk, dim=2)[:, :, :I]


# ---- weights ---------------------------------------------------------------------------------

def _quant_w8(w: torch.Tensor, qdtype, block_shape, per_channel):
    """(E, O, I) float -> (q, scale) for fp8/int8 w8a8 (per-tensor, per-channel or block)."""
    qmax = _qmax(qdtype)
    E, O, I = w.shape
    wf = w.float()
    if block_shape is not None:
        bn, bk = block_shape
        scale = _block_amax(w, bn, bk).clamp(min=SCALE_EPS) / qmax  # (E, O/bn, I/bk) float32
        q = _cast_q(wf / _expand_blocks(scale, bn, bk, O, I), qdtype)
    elif per_channel:
        scale = wf.abs().amax(dim=2, keepdim=True).clamp(min=SCALE_EPS) / qmax  # (E, O, 1) float32
        q = _cast_q(wf / scale, qdtype)
    else:
        scale = wf.abs().amax(dim=(1, 2)).clamp(min=SCALE_EPS) / qmax  # (E,) float32
        q = _cast_q(wf / scale[:, None, None], qdtype)
    return q, scale.contiguous()


def _quant_wna16(w: torch.Tensor, bits: int, group: Optional[int], zero_point: bool, scale_dtype):
    """(E, O, I) float -> (q, scale, zp) in the engine's int4/int8 weight-only layouts."""
    E, O, I = w.shape
    wf = w.float()
    if group is None:  # int8 per output channel, signed, no zero points
        if bits != 8 or zero_point:
            raise ValueError("weight-only without a group size is only int8 without zero points")
        scale = wf.abs().amax(dim=2, keepdim=True).clamp(min=SCALE_EPS) / INT8_MAX  # (E, O, 1)
        q = _cast_q(wf / scale, torch.int8)
        return q, scale.to(scale_dtype), None
    ng = cdiv(I, group)
    pad = ng * group - I
    wg = torch.nn.functional.pad(wf, (0, pad)).view(E, O, ng, group)
    levels = (1 << bits) - 1  # 15 or 255
    if zero_point:
        lo = wg.amin(dim=3).clamp(max=0.0)
        hi = wg.amax(dim=3).clamp(min=0.0)
        scale = ((hi - lo) / levels).clamp(min=SCALE_EPS)  # (E, O, ng)
        zp = _round_half_away(-lo / scale).clamp(0, levels)  # (E, O, ng)
        scale = scale.to(scale_dtype)
        sf = scale.float()
        qv = (_round_half_away(wg / sf[..., None]) + zp[..., None]).clamp(0, levels)
    else:
        half = 1 << (bits - 1)  # 8 or 128: the stored offset
        scale = (wg.abs().amax(dim=3) / (half - 1)).clamp(min=SCALE_EPS).to(scale_dtype)  # (E, O, ng)
        sf = scale.float()
        qv = (_round_half_away(wg / sf[..., None]).clamp(-half, half - 1) + half)
        zp = None
    qv = qv.view(E, O, ng * group)[:, :, :I].to(torch.uint8)  # (E, O, I) values in [0, levels]
    if bits == 4:
        if I % 2:
            raise ValueError(f"int4 packing needs an even input size, got {I}")
        qv = qv[:, :, 0::2] | (qv[:, :, 1::2] << 4)  # (E, O, I//2) uint8
        if zp is not None:
            if O % 2:
                raise ValueError(f"int4 zero points pack two output rows per byte: O={O} is odd")
            z = zp.to(torch.uint8)
            zp = z[:, 0::2, :] | (z[:, 1::2, :] << 4)  # (E, O//2, ng) uint8
    elif zp is not None:
        zp = zp.to(torch.uint8)  # (E, O, ng) uint8
    return qv.contiguous(), scale.contiguous(), (None if zp is None else zp.contiguous())


# ---- OCP MXFP4 (FP4 E2M1 values, E8M0 scales per 32) -------------------------------------------

def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """float values (already divided by their scale) -> E2M1 codes (uint8 0..15).

    Round to nearest, ties to the even code (even mantissa), saturating at +-6; the sign
    bit is kept for negative values (a negative value rounding to 0 gives code 8, -0).
    """
    a = v.float().abs()
    mids = torch.tensor(_E2M1_MIDPOINTS, dtype=torch.float32, device=v.device)
    code = torch.bucketize(a, mids)  # midpoints strictly below |v|: the lower code on a tie
    tie = (a == mids[code.clamp(max=len(_E2M1_MIDPOINTS) - 1)]) & (code % 2 == 1)
    code = (code + tie.long()).clamp(max=7)
    return (code | ((v < 0).long() << 3)).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8 0..15) -> float32 values (table lookup, host side)."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    return table[codes.long() & 0xF]


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """(..., I) uint8 codes -> (..., I//2) bytes, the even index in the low nibble."""
    if codes.shape[-1] % 2:
        raise QuantError(f"FP4 packing needs an even number of values, got {codes.shape[-1]}")
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """(..., I//2) bytes -> (..., I) uint8 codes (low nibble first)."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def e8m0_to_float(s: torch.Tensor) -> torch.Tensor:
    """E8M0 scale bytes (uint8 or float8_e8m0fnu) -> float32 2^(byte - 127) (255 -> NaN)."""
    if s.dtype != torch.uint8:
        s = s.view(torch.uint8)
    v = torch.exp2(s.float() - 127.0)
    return torch.where(s == 255, torch.full_like(v, float("nan")), v)


def _quant_mxfp4(w: torch.Tensor):
    """(E, O, I) float -> (q (E, O, I//2) uint8, scale (E, O, I//32) uint8 E8M0).

    Each group of 32 gets the smallest power of two 2^e with amax / 2^e <= 6 (so nothing
    saturates; OCP's floor(log2(amax)) - 2 may clip up to 25% of the top values), then
    round to nearest E2M1 (ties to even). All-zero groups get the smallest scale (byte 0).
    """
    E, O, I = w.shape
    if I % MX_GROUP:
        raise QuantError(f"mxfp4 needs the input size to be a multiple of {MX_GROUP}, got {I}")
    wg = w.float().view(E, O, I // MX_GROUP, MX_GROUP)
    amax = wg.abs().amax(dim=3)  # (E, O, I/32)
    e = torch.ceil(torch.log2(amax / E2M1_MAX))
    e = torch.where(amax > 0, e, torch.full_like(e, -127.0)).clamp(-127, 127)
    codes = e2m1_encode(wg / torch.exp2(e)[..., None]).view(E, O, I)
    return pack_fp4(codes), (e + 127).to(torch.uint8).contiguous()


def _dequant_mxfp4(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(E, O, I//2) packed codes + (E, O, I//32) E8M0 -> float32 (E, O, I)."""
    vals = e2m1_decode(unpack_fp4(q))  # (E, O, I)
    return vals * e8m0_to_float(scale).repeat_interleave(MX_GROUP, dim=2)


def _by_expert(fn, w: torch.Tensor, *args, chunk_bytes: int = 1 << 28):
    """Apply a per-expert quantizer to slices of experts (bounds the fp32 temporaries)."""
    per = max(1, chunk_bytes // max(1, w[0].numel() * 4))
    parts = [fn(w[i:i + per], *args) for i in range(0, w.shape[0], per)]
    return tuple(None if p[0] is None else torch.cat(p, dim=0) for p in zip(*parts))


def quantize_weights(
    w1: torch.Tensor,
    w2: torch.Tensor,
    scheme: str,
    block_shape: Optional[Sequence[int]] = None,
    per_channel: bool = False,
    group_size: Optional[int] = None,
    zero_point: bool = False,
    per_token: bool = False,
    a1_scale: Optional[torch.Tensor] = None,
    a2_scale: Optional[torch.Tensor] = None,
    w1_bias: Optional[torch.Tensor] = None,
    w2_bias: Optional[torch.Tensor] = None,
    per_tensor: bool = False,
):
    """Quantize float weights w1 (E, 2N, K), w2 (E, K, N) for `scheme`.

    Returns (qw1, qw2, quant_config). For bf16/fp16/fp32 the weights are cast and
    quant_config is the unquantized (or biased) config. `group_size` is for
    int8_w8a16/int4_w4a16 (block_shape [0, G] is accepted too); `per_token` picks
    dynamic per-token activation scales for w8a8; a1/a2_scale make them static.
    fp8_w8a16: block scales with `block_shape`, else per channel, or per tensor
    with `per_tensor`. mxfp4: K and N must be multiples of 32 (QuantError otherwise).
    """
    s = scheme.lower()
    if s in ("bf16", "fp16", "fp32", "bfloat16", "float16", "float32"):
        return w1, w2, quant_for_scheme("bf16", w1_bias=w1_bias, w2_bias=w2_bias)
    if s in ("fp8_w8a8", "int8_w8a8"):
        qdtype = FP8_DTYPE if s == "fp8_w8a8" else torch.int8
        if block_shape is not None:
            block_shape = [int(v) for v in block_shape]
        q1, s1 = _by_expert(_quant_w8, w1, qdtype, block_shape, per_channel)
        q2, s2 = _by_expert(_quant_w8, w2, qdtype, block_shape, per_channel)
        cfg = quant_for_scheme(s, block_shape=block_shape, per_token=per_token, per_channel=per_channel,
                               w1_scale=s1, w2_scale=s2, a1_scale=a1_scale, a2_scale=a2_scale)
        _attach_bias(cfg, w1_bias, w2_bias)
        return q1, q2, cfg
    if s in ("int8_w8a16", "int4_w4a16"):
        if group_size is None and block_shape is not None:
            group_size = int(block_shape[1])
        bits = 4 if s == "int4_w4a16" else 8
        if bits == 4 and group_size is None:
            raise ValueError("int4_w4a16 needs a group size (group_size=G or block_shape=[0, G])")
        q1, s1, z1 = _by_expert(_quant_wna16, w1, bits, group_size, zero_point, w1.dtype)
        q2, s2, z2 = _by_expert(_quant_wna16, w2, bits, group_size, zero_point, w2.dtype)
        cfg = quant_for_scheme(s, block_shape=None if group_size is None else [0, group_size],
                               w1_scale=s1, w2_scale=s2, w1_zp=z1, w2_zp=z2)
        _attach_bias(cfg, w1_bias, w2_bias)
        return q1, q2, cfg
    if s == "fp8_w8a16":
        if block_shape is not None:
            block_shape = [int(v) for v in block_shape]
            if min(block_shape) <= 0:
                raise QuantError(f"fp8_w8a16 block scales need [bn, bk] of positive sizes, got {block_shape}")
        elif group_size is not None:
            raise QuantError("fp8_w8a16 takes a block shape [bn, bk], not a group size")
        q1, s1 = _by_expert(_quant_w8, w1, FP8_DTYPE, block_shape, not per_tensor)
        q2, s2 = _by_expert(_quant_w8, w2, FP8_DTYPE, block_shape, not per_tensor)
        cfg = quant_for_scheme(s, block_shape=block_shape, w1_scale=s1, w2_scale=s2)
        _attach_bias(cfg, w1_bias, w2_bias)
        return q1, q2, cfg
    if s == "mxfp4":
        if block_shape is not None or group_size not in (None, MX_GROUP):
            raise QuantError(f"mxfp4 has a fixed group size of {MX_GROUP} (one E8M0 scale per 32 values); "
                             "it takes no block shape or other group size")
        K, N = w1.shape[2], w2.shape[2]
        if K % MX_GROUP or N % MX_GROUP:
            raise QuantError(f"mxfp4 needs the hidden size K and the intermediate size N to be multiples of "
                             f"{MX_GROUP}, got K={K}, N={N}")
        q1, s1 = _by_expert(_quant_mxfp4, w1)
        q2, s2 = _by_expert(_quant_mxfp4, w2)
        cfg = quant_for_scheme(s, w1_scale=s1, w2_scale=s2, w1_bias=w1_bias, w2_bias=w2_bias)
        return q1, q2, cfg
    raise ValueError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


def _attach_bias(cfg: QuantConfig, w1_bias, w2_bias) -> None:
    cfg.w1.bias = w1_bias
    cfg.w2.bias = w2_bias


def weight_group_size(quant: Optional[QuantConfig]) -> Optional[int]:
    """Group size along I of a weight-only scheme (None: per channel)."""
    if quant is None:
        return None
    bs = quant.block_shape
    if bs is not None and (quant.use_int8_w8a16 or quant.use_int4_w4a16) and bs[1] > 0:
        return int(bs[1])
    return None


def dequantize_weight(q: torch.Tensor, quant: Optional[QuantConfig], which: str) -> torch.Tensor:
    """Quantized weight -> float32 (E, O, I). `which` is 'w1' or 'w2' (picks scale/zp)."""
    if quant is None or quant.weight_dtype is None:
        return q.float()
    desc = quant.w1 if which == "w1" else quant.w2
    scale, zp = desc.scale, desc.zp
    if quant.use_int4_w4a16:
        E, O, Ih = q.shape
        I = 2 * Ih
        vals = torch.stack([q & 0xF, q >> 4], dim=-1).view(E, O, I).float()  # (E, O, I)
        G = weight_group_size(quant)
        if zp is not None:
            z = torch.stack([zp & 0xF, zp >> 4], dim=2).reshape(E, O, -1).float()  # (E, O, ng)
        else:
            z = torch.full_like(scale, 8.0, dtype=torch.float32)
        sc = scale.float().repeat_interleave(G, dim=2)[:, :, :I]
        return (vals - z.repeat_interleave(G, dim=2)[:, :, :I]) * sc
    if quant.use_int8_w8a16:
        E, O, I = q.shape
        G = weight_group_size(quant)
        if G is None:
            return q.float() * scale.float().reshape(E, O, 1)
        if q.dtype == torch.int8:
            z = torch.zeros_like(scale, dtype=torch.float32)
        elif zp is not None:
            z = zp.float()
        else:
            z = torch.full_like(scale, 128.0, dtype=torch.float32)
        sc = scale.float().repeat_interleave(G, dim=2)[:, :, :I]
        return (q.float() - z.repeat_interleave(G, dim=2)[:, :, :I]) * sc
    if quant.use_mxfp4_w4a16:
        return _dequant_mxfp4(q, scale)
    if quant.use_fp8_w8a8 or quant.use_int8_w8a8 or quant.use_fp8_w8a16:
        E, O, I = q.shape
        s = scale.float()
        if quant.block_shape is not None:
            bn, bk = quant.block_shape
            return q.float() * _expand_blocks(s, bn, bk, O, I)
        if s.numel() == E:
            return q.float() * s.reshape(E, 1, 1)
        return q.float() * s.reshape(E, O, 1)
    raise NotImplementedError(f"dequantization of scheme {quant.scheme} is not supported")


# ---- activations -----------------------------------------------------------------------------

def activation_quant_mode(quant: QuantConfig, static_scale) -> tuple[Optional[str], Optional[int]]:
    """(mode, group) for act_and_quant: 'static', 'token' or 'group' (per-tensor dynamic: 'tensor')."""
    if quant.block_shape is not None:
        return "group", int(quant.block_shape[1])
    if static_scale is not None:
        return "static", None
    if quant.per_act_token_quant:
        return "token", None
    return "tensor", None


def quantize_activation(
    x: torch.Tensor,
    qdtype: torch.dtype,
    mode: str,
    group_size: Optional[int] = None,
    scale: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    scale_out: Optional[torch.Tensor] = None,
):
    """Quantize x (R, I) -> (q (R, I) qdtype, scale) with the Triton kernel.

    mode 'static' (scale (1,) given), 'tensor' (dynamic per-tensor: amax through torch,
    no host sync), 'token' (R, 1), 'group' (R, cdiv(I, G)).
    """
    if mode == "tensor":
        s = x.abs().amax().float().clamp(min=SCALE_EPS) / _qmax(qdtype)  # () float32
        if scale_out is not None:
            scale_out.copy_(s.reshape(scale_out.shape))
            s = scale_out
        else:
            s = s.reshape(1)  # (1,) float32
        q, _ = act_and_quant(x, "none", out=out, quant_dtype=qdtype, mode="static", scale=s)
        return q, s
    return act_and_quant(x, "none", out=out, quant_dtype=qdtype, mode=mode, group_size=group_size,
                         scale=scale, scale_out=scale_out)


def quantize_activation_ref(x: torch.Tensor, qdtype: torch.dtype, mode: str,
                            group_size: Optional[int] = None, scale: Optional[torch.Tensor] = None):
    """Pure-torch twin of quantize_activation on fp32 values: returns (q, scale)."""
    xf = x.float()
    qmax = _qmax(qdtype)
    R, I = xf.shape
    if mode == "static":
        s = scale.float().reshape(1)
        return _cast_q(xf / s, qdtype), s
    if mode == "tensor":
        s = (xf.abs().amax().clamp(min=SCALE_EPS) / qmax).reshape(1)
        return _cast_q(xf / s, qdtype), s
    if mode == "token":
        s = xf.abs().amax(dim=1, keepdim=True).clamp(min=SCALE_EPS) / qmax  # (R, 1)
        return _cast_q(xf / s, qdtype), s
    if mode == "group":
        G = group_size
        ng = cdiv(I, G)
        xp = torch.nn.functional.pad(xf, (0, ng * G - I)).view(R, ng, G)
        s = xp.abs().amax(dim=2).clamp(min=SCALE_EPS) / qmax  # (R, ng)
        q = _cast_q(xp / s[..., None], qdtype).view(R, ng * G)[:, :I]
        return q, s
    raise ValueError(f"unknown activation quant mode {mode!r}")


def dequantize_activation_ref(q: torch.Tensor, s: torch.Tensor, mode: str, group_size: Optional[int] = None):
    """(q, scale) from quantize_activation_ref -> float32 values."""
    qf = q.float()
    if mode in ("static", "tensor"):
        return qf * s.reshape(())
    if mode == "token":
        return qf * s
    I = qf.shape[1]
    return qf * s.repeat_interleave(group_size, dim=1)[:, :I]
