"""Plain-PyTorch float32 reference of the fused-MoE layer (same signature as fused_experts).

Dimension letters: M tokens, E local experts, E_g global ids, K hidden, N intermediate,
topk slots per token.

Weights are dequantized to float32; activations of w8a8 schemes are quantized the way
the kernel quantizes them (same scale rule and rounding, see quantize.py) and then
dequantized, so fp8/int8 comparisons measure the GEMMs, not the quantization noise.
The loop runs over experts; nothing is fused.
"""

from __future__ import annotations

from typing import Optional

import torch

from moeplan.kernels.activation import act_and_mul_ref
from moeplan.kernels.moe_gemm import gemm_quant
from moeplan.kernels.quantize import dequantize_activation_ref, dequantize_weight, quantize_activation_ref
from moeplan.layout.quant import QuantConfig


def _fake_quant(x: torch.Tensor, gq) -> torch.Tensor:
    """float32 x -> the float32 values the kernel's quantized activations stand for."""
    if gq.act_dtype is None:
        return x
    mode = gq.act_mode
    q, s = quantize_activation_ref(x, gq.act_dtype, mode, gq.act_group, gq.act_scale)
    return dequantize_activation_ref(q, s, mode, gq.act_group)


def fused_experts_ref(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    config=None,
    quant: Optional[QuantConfig] = None,
    activation: str = "silu",
    expert_map: Optional[torch.Tensor] = None,
    w1_bias: Optional[torch.Tensor] = None,
    w2_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """float32 reference; `config` is ignored. Returns (M, K) in x.dtype."""
    M, K = x.shape
    topk = topk_ids.shape[1]
    W1 = dequantize_weight(w1, quant, "w1")  # (E, 2N, K) float32
    W2 = dequantize_weight(w2, quant, "w2")  # (E, K, N) float32
    if quant is not None:
        w1_bias = w1_bias if w1_bias is not None else quant.w1_bias
        w2_bias = w2_bias if w2_bias is not None else quant.w2_bias
    q1, q2 = gemm_quant(quant, "w1"), gemm_quant(quant, "w2")
    xf = _fake_quant(x.float(), q1)  # (M, K) float32
    ids = topk_ids.long()
    if expert_map is not None:
        local = expert_map.long()[ids]  # (M, topk) local ids or -1
    else:
        local = ids
    # GEMM1 + activation for every (token, slot) pair, expert by expert
    T = M * topk
    flat_local = local.reshape(T)
    tok = torch.arange(T, device=x.device) // topk
    h = torch.zeros((T, W2.shape[2]), dtype=torch.float32, device=x.device)  # (T, N)
    for e in range(W1.shape[0]):
        sel = (flat_local == e).nonzero().flatten()
        if sel.numel() == 0:
            continue
        g = xf[tok[sel]] @ W1[e].T  # (n_e, 2N)
        if w1_bias is not None:
            g = g + w1_bias[e].float()
        h[sel] = act_and_mul_ref(g, activation)
    hq = _fake_quant(h, q2)  # (T, N)
    y = torch.zeros((T, K), dtype=torch.float32, device=x.device)  # (T, K)
    for e in range(W2.shape[0]):
        sel = (flat_local == e).nonzero().flatten()
        if sel.numel() == 0:
            continue
        d = hq[sel] @ W2[e].T  # (n_e, K)
        if w2_bias is not None:
            d = d + w2_bias[e].float()
        y[sel] = d
    y = y * topk_weights.reshape(T, 1).float()
    return y.view(M, topk, K).sum(dim=1).to(x.dtype)
