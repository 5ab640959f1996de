"""Realistic inputs of the fused-MoE layer for one shape (tests, tuner, benchmarks).

Dimension letters: M tokens, E local experts (E_g global with an expert map), K hidden,
N intermediate, topk slots per token.

Weights are randn / sqrt(fan_in) (so activations keep unit scale through both GEMMs),
x is randn, and routing is softmax(randn logits) top-k ("uniform": every expert equally
likely), renormalised over the chosen k like most MoE models. Never zeros.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from moeplan.kernels._common import act_dtype
from moeplan.kernels.quantize import quantize_weights
from moeplan.layout.quant import QuantConfig


class MoeInputs(NamedTuple):
    x: torch.Tensor  # (M, K) activation dtype
    w1: torch.Tensor  # (E, 2N, K) (quantized layout for quantized schemes)
    w2: torch.Tensor  # (E, K, N)
    topk_weights: torch.Tensor  # (M, topk) float32
    topk_ids: torch.Tensor  # (M, topk) int32, global ids
    quant: Optional[QuantConfig]


def make_routing(M: int, E: int, topk: int, device="cpu", generator: Optional[torch.Generator] = None,
                 routing: str = "uniform", renormalize: bool = True):
    """(topk_weights (M, topk) float32, topk_ids (M, topk) int32) from softmax(randn) top-k.

    routing 'uniform': iid logits; 'skewed': logits + a per-expert bias (a few hot experts).
    """
    logits = torch.randn((M, E), generator=generator, device=device, dtype=torch.float32)  # (M, E)
    if routing == "skewed":
        bias = torch.linspace(2.0, -2.0, E, device=device)
        logits = logits + bias
    elif routing != "uniform":
        raise ValueError(f"unknown routing {routing!r}; valid: uniform, skewed")
    probs = torch.softmax(logits, dim=-1)
    w, ids = torch.topk(probs, topk, dim=-1)
    if renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    return w.contiguous(), ids.to(torch.int32).contiguous()


def make_moe_inputs(
    M: int,
    E: int,
    N: int,
    K: int,
    topk: int,
    dtype="bf16",
    scheme: Optional[str] = None,
    block_shape: Optional[Sequence[int]] = None,
    device="cpu",
    seed: int = 0,
    routing: str = "uniform",
    per_token: bool = False,
    per_channel: bool = False,
    group_size: Optional[int] = None,
    zero_point: bool = False,
    bias: bool = False,
    static_act_scales: bool = False,
    per_tensor: bool = False,
) -> MoeInputs:
    """Inputs for one shape; `scheme` None means unquantized in `dtype`.

    Quantized schemes quantize float weights with quantize.quantize_weights (engine
    layouts). `static_act_scales` gives w8a8 schemes fixed per-tensor activation
    scales (the amax of a sample / qmax) instead of dynamic ones. `per_tensor` gives
    fp8_w8a16 per-tensor weight scales (default per channel, or block with block_shape).
    mxfp4 needs K and N multiples of 32; with `bias` its biases ride in the QuantConfig.
    """
    dt = act_dtype(dtype)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    x = torch.randn((M, K), generator=g, device=device, dtype=torch.float32).to(dt)  # (M, K)
    w1 = _randn((E, 2 * N, K), K, g, device, dt)  # (E, 2N, K)
    w2 = _randn((E, K, N), N, g, device, dt)  # (E, K, N)
    b1 = b2 = None
    if bias:
        b1 = (0.1 * torch.randn((E, 2 * N), generator=g, device=device)).to(dt)  # (E, 2N)
        b2 = (0.1 * torch.randn((E, K), generator=g, device=device)).to(dt)  # (E, K)
    topk_weights, topk_ids = make_routing(M, E, topk, device, g, routing)
    if scheme is None or scheme in ("bf16", "fp16", "fp32", "bfloat16", "float16", "float32"):
        w1q, w2q, quant = quantize_weights(w1, w2, "bf16", w1_bias=b1, w2_bias=b2)
        if b1 is None:
            quant = None
        return MoeInputs(x, w1q, w2q, topk_weights, topk_ids, quant)
    a1s = a2s = None
    if static_act_scales:
        qmax = 448.0 if scheme == "fp8_w8a8" else 127.0
        a1s = (x.float().abs().amax() / qmax).reshape(1)  # (1,) float32
        a2s = torch.tensor([4.0 / qmax], device=device)  # activations after silu stay ~N(0,1)-ish
    w1q, w2q, quant = quantize_weights(w1, w2, scheme, block_shape=block_shape, per_channel=per_channel,
                                       group_size=group_size, zero_point=zero_point, per_token=per_token,
                                       a1_scale=a1s, a2_scale=a2s, w1_bias=b1, w2_bias=b2, per_tensor=per_tensor)
    return MoeInputs(x, w1q, w2q, topk_weights, topk_ids, quant)


def _randn(shape, fan_in, g, device, dt):
    """randn / sqrt(fan_in), generated expert by expert to bound fp32 temporaries."""
    out = torch.empty(shape, device=device, dtype=dt)
    for e in range(shape[0]):
        out[e] = (torch.randn(shape[1:], generator=g, device=device, dtype=torch.float32) / fan_in ** 0.5).to(dt)
    return out
