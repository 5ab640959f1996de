"""The fused-MoE layer against the float32 reference on small odd shapes, every scheme.

Under the Triton CPU interpreter (TRITON_INTERPRET=1, set here before any kernel module
is imported, when no GPU is present). Shapes are tiny (the interpreter runs every
program in Python) but odd: K and N not multiples of the blocks, M = 1, experts with
no token, topk = E, EP maps with -1 experts, GROUP_SIZE_M > 1, BLOCK_SIZE_M = 8.
Outputs are poisoned with NaN before each run; every element must be written.
"""

import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from moeplan.kernels import (  # noqa: E402
    MoeRunner, fused_experts, fused_experts_ref, make_moe_inputs, quantize_weights,
)
from moeplan.kernels.testing import check_close, config, poisoned, seed_for, tol_key  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"

# Block shapes are scaled down for the tiny shapes ([32, 32] stands for [128, 128]).
SCHEMES = [
    # id, dtype, scheme, make_moe_inputs kwargs
    ("fp32", "fp32", None, {}),
    ("fp16", "fp16", None, {}),
    ("bf16", "bf16", None, {}),
    ("fp8-tensor", "bf16", "fp8_w8a8", {}),
    ("fp8-tensor-static", "bf16", "fp8_w8a8", {"static_act_scales": True}),
    ("fp8-token-channel", "bf16", "fp8_w8a8", {"per_token": True, "per_channel": True}),
    ("fp8-tensor-channel", "fp16", "fp8_w8a8", {"per_channel": True}),
    ("fp8-block", "bf16", "fp8_w8a8", {"block_shape": [32, 32]}),
    ("int8-token-channel", "bf16", "int8_w8a8", {"per_token": True, "per_channel": True}),
    ("int8-tensor", "fp16", "int8_w8a8", {}),
    ("w8a16-group", "bf16", "int8_w8a16", {"group_size": 32}),
    ("w8a16-group-zp", "fp16", "int8_w8a16", {"group_size": 16, "zero_point": True}),
    ("w8a16-channel", "bf16", "int8_w8a16", {}),
    ("w4a16-group", "bf16", "int4_w4a16", {"group_size": 32}),
    ("w4a16-group-zp", "fp16", "int4_w4a16", {"group_size": 16, "zero_point": True}),
]

# (M, E, N, K, topk): K=72 and 2N=80 are not multiples of BK=32 / BN=32; N=40 also not
# a multiple of the 32-wide quant blocks (partial scale blocks along both dims).
ODD = (7, 6, 40, 72, 2)


def _run_and_check(inp, cfg, what, activation="silu", expert_map=None, key=None):
    M, K = inp.x.shape
    out = poisoned((M, K), inp.x.dtype, DEVICE)
    res = fused_experts(*inp[:5], config=cfg, quant=inp.quant, activation=activation,
                        expert_map=expert_map, out=out)
    assert res.data_ptr() == out.data_ptr()
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, activation=activation, expert_map=expert_map)
    return check_close(out, ref, key, what)


@pytest.mark.parametrize("name,dtype,scheme,kw", SCHEMES, ids=[s[0] for s in SCHEMES])
def test_scheme_odd_shape(name, dtype, scheme, kw):
    # every scheme on the odd shape; GROUP_SIZE_M=2 so M tiles are reordered in groups
    M, E, N, K, topk = ODD
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device=DEVICE, seed=seed_for(name), **kw)
    _run_and_check(inp, config(16, 32, 32, gm=2), name, key=tol_key(dtype, scheme))


@pytest.mark.parametrize("activation", ["gelu", "swigluoai"])
def test_activations(activation):
    # gelu (exact erf) and gpt-oss's clamped, interleaved SwiGLU
    inp = make_moe_inputs(5, 4, 24, 48, 2, "bf16", device=DEVICE, seed=seed_for("act", activation))
    _run_and_check(inp, config(16, 16, 32), activation, activation=activation, key="bf16")


def test_swigluoai_with_biases_large_values():
    # gpt-oss style: biases, and inputs scaled so the +-7 clamps actually bite
    inp = make_moe_inputs(4, 4, 24, 32, 2, "bf16", device=DEVICE, seed=seed_for("oai"), bias=True)
    inp = inp._replace(x=(inp.x.float() * 6).to(torch.bfloat16))
    gate_up = torch.einsum("mk,eok->meo", inp.x.float(), inp.w1.float())
    assert gate_up.abs().max() > 7.0, "test data should exercise the clamps"
    # outputs here are several times unit scale, so the bf16 atol scales with them (on an
    # H100 one element of 128 was 0.038 off, about one bf16 step at its magnitude)
    ref_max = fused_experts_ref(*inp[:5], quant=inp.quant, activation="swigluoai").abs().max().item()
    _run_and_check(inp, config(16, 16, 16), "swigluoai+bias", activation="swigluoai",
                   key=(1.2e-2, 3e-2 * max(1.0, ref_max / 8), 5e-2))  # ref_max ~30: atol 0.11


def test_biases_fp8():
    # expert biases on both GEMMs with fp8 per-token quantization
    inp = make_moe_inputs(6, 5, 24, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("b8"),
                          bias=True, per_token=True, per_channel=True)
    _run_and_check(inp, config(16, 32, 32), "fp8+bias", key="fp8_w8a8")


@pytest.mark.parametrize("case", [
    "m1",            # a single token
    "topk_eq_e",     # every token routed to every expert
    "empty_expert",  # experts 0 and 2 receive no token
    "bm8",           # BLOCK_SIZE_M = 8 (< tl.dot's 16: the kernel pads the tile)
    "bk_gt_k",       # BLOCK_SIZE_K = 64 > K = 40: one partial K tile
    "even_k",        # K a multiple of BK: the mask-free EVEN_K path
    "group_m4",      # GROUP_SIZE_M = 4 over 6+ M tiles
    "bm32_bn64",     # larger tiles than the problem
])
def test_edge_cases_bf16(case):
    seed = seed_for("edge", case)
    cfg = config(16, 32, 32)
    if case == "m1":
        inp = make_moe_inputs(1, 5, 40, 72, 2, "bf16", device=DEVICE, seed=seed)
    elif case == "topk_eq_e":
        inp = make_moe_inputs(3, 4, 24, 40, 4, "bf16", device=DEVICE, seed=seed)
    elif case == "empty_expert":
        inp = make_moe_inputs(6, 5, 24, 40, 2, "bf16", device=DEVICE, seed=seed)
        g = torch.Generator().manual_seed(seed)
        allowed = torch.tensor([1, 3, 4])
        ids = torch.stack([allowed[torch.randperm(3, generator=g)[:2]] for _ in range(6)])
        inp = inp._replace(topk_ids=ids.to(torch.int32).to(DEVICE))
    elif case == "bm8":
        inp = make_moe_inputs(9, 4, 24, 40, 2, "bf16", device=DEVICE, seed=seed)
        cfg = config(8, 32, 32)
    elif case == "bk_gt_k":
        inp = make_moe_inputs(5, 4, 24, 40, 2, "bf16", device=DEVICE, seed=seed)
        cfg = config(16, 32, 64)
    elif case == "even_k":
        inp = make_moe_inputs(5, 4, 24, 64, 2, "bf16", device=DEVICE, seed=seed)
    elif case == "group_m4":
        inp = make_moe_inputs(40, 3, 24, 40, 2, "bf16", device=DEVICE, seed=seed)
        cfg = config(16, 16, 32, gm=4)
    else:
        inp = make_moe_inputs(6, 4, 24, 40, 2, "bf16", device=DEVICE, seed=seed)
        cfg = config(32, 64, 32)
    _run_and_check(inp, cfg, case, key="bf16")


@pytest.mark.parametrize("scheme,kw", [(None, {}), ("fp8_w8a8", {"block_shape": [32, 32]}),
                                       ("int4_w4a16", {"group_size": 16})],
                         ids=["bf16", "fp8-block", "int4"])
def test_expert_parallel_map(scheme, kw):
    # EP: 8 global experts, this rank holds 3 (global 1, 4, 6); tiles of the other
    # experts must write zeros, and the output sums only the local experts
    E_g, local = 8, torch.tensor([1, 4, 6])
    full = make_moe_inputs(7, E_g, 24, 64, 3, "bf16", scheme, device=DEVICE,
                           seed=seed_for("ep", scheme), **kw)
    emap = torch.full((E_g,), -1, dtype=torch.int32)
    emap[local] = torch.arange(3, dtype=torch.int32)
    q = full.quant
    if q is not None:  # slice every per-expert tensor to the local experts
        for d in (q.w1, q.w2):
            d.scale = d.scale[local.to(DEVICE)]
            if d.zp is not None:
                d.zp = d.zp[local.to(DEVICE)]
    inp = full._replace(w1=full.w1[local.to(DEVICE)], w2=full.w2[local.to(DEVICE)])
    _run_and_check(inp, config(16, 32, 32), f"ep-{scheme}", expert_map=emap.to(DEVICE),
                   key=tol_key("bf16", scheme))


@pytest.mark.parametrize("scheme,kw", [(None, {}), ("fp8_w8a8", {"static_act_scales": True})], ids=["bf16", "fp8-static"])
def test_chunking_matches_single_pass(scheme, kw):
    # M larger than the chunk: chunks of 3, 3 and 1 tokens give the same bits as one pass
    # (each row's dot product does not depend on which tile it shares)
    inp = make_moe_inputs(7, 4, 24, 40, 2, "bf16", scheme, device=DEVICE, seed=seed_for("chunk", scheme), **kw)
    cfg = config(16, 32, 32)
    a = fused_experts(*inp[:5], config=cfg, quant=inp.quant, chunk_tokens=3,
                      out=poisoned((7, 40), torch.bfloat16, DEVICE))
    b = fused_experts(*inp[:5], config=cfg, quant=inp.quant)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_default_config_and_kernelconfig():
    # config=None uses the engine's default heuristic; a KernelConfig is accepted too
    from moeplan.engines.knobs import KernelConfig
    inp = make_moe_inputs(3, 4, 24, 40, 2, "fp16", device=DEVICE, seed=seed_for("default"))
    ref = fused_experts_ref(*inp[:5])
    check_close(fused_experts(*inp[:5]), ref, "fp16", "default config")
    check_close(fused_experts(*inp[:5], config=KernelConfig(16, 16, 16, 1, 4, 2)), ref, "fp16", "KernelConfig")


def test_runner_poisoned_buffers_and_new_routing():
    # the preallocated runner: every intermediate poisoned with NaN before each run, then
    # a fresh routing written in place; results must match fused_experts each time
    inp = make_moe_inputs(6, 5, 24, 40, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("runner"),
                          block_shape=[32, 32])
    r = MoeRunner.from_inputs(inp, config(16, 32, 32))
    gen = torch.Generator(device=DEVICE).manual_seed(seed_for("runner-routing"))
    for it in range(2):
        for t in (r.plan.c1, r.plan.c2, r.out, r.plan.a2q, r.plan.a2s, r.plan.a1q, r.plan.a1s):
            if t is not None:
                t.fill_(float("nan")) if t.is_floating_point() else t.fill_(0)
        out = r.run().clone()
        ref = fused_experts(r.x, inp.w1, inp.w2, r.topk_weights, r.topk_ids, config=r.config, quant=inp.quant)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
        w, ids = r.new_routing(gen)
        r.set_routing(ids, w)


def test_quantize_weights_roundtrip():
    # dequantized weights stay close to the originals for every weight layout
    from moeplan.kernels.quantize import dequantize_weight
    g = torch.Generator().manual_seed(seed_for("roundtrip"))
    w1 = torch.randn((3, 48, 64), generator=g) / 8
    w2 = torch.randn((3, 64, 24), generator=g) / 5
    cases = [("fp8_w8a8", {}), ("fp8_w8a8", {"block_shape": [32, 32]}), ("fp8_w8a8", {"per_channel": True}),
             ("int8_w8a8", {"per_channel": True}), ("int8_w8a16", {"group_size": 16}),
             ("int8_w8a16", {"group_size": 16, "zero_point": True}), ("int4_w4a16", {"group_size": 8}),
             ("int4_w4a16", {"group_size": 8, "zero_point": True})]
    for scheme, kw in cases:
        q1, q2, qc = quantize_weights(w1, w2, scheme, **kw)
        for w, q, which in ((w1, q1, "w1"), (w2, q2, "w2")):
            d = dequantize_weight(q, qc, which)
            err = ((d - w).norm() / w.norm()).item()
            bound = 0.1 if scheme == "int4_w4a16" else 0.04
            assert err < bound, f"{scheme} {kw} {which}: {err}"
    # layout checks (engine shapes)
    q1, q2, qc = quantize_weights(w1, w2, "int4_w4a16", group_size=8, zero_point=True)
    assert q1.shape == (3, 48, 32) and q1.dtype == torch.uint8
    assert qc.w1_scale.shape == (3, 48, 8) and qc.w1_zp.shape == (3, 24, 8)
    assert q2.shape == (3, 64, 12) and qc.w2_zp.shape == (3, 32, 3)
    q1, q2, qc = quantize_weights(w1, w2, "fp8_w8a8", block_shape=[32, 32])
    assert qc.w1_scale.shape == (3, 2, 2) and qc.w2_scale.shape == (3, 2, 1)
    assert qc.config_name("bfloat16") == "fp8_w8a8" and qc.block_shape == [32, 32]


def test_config_without_launch_options():
    # a table entry of only the block knobs (older tables / hand-written configs) runs with
    # Triton's launch defaults; unknown extra keys are ignored, a missing block knob is an error
    from moeplan.base.errors import TableError
    from moeplan.kernels.fused_moe import _config_dict
    inp = make_moe_inputs(5, 4, 24, 40, 2, "bf16", device=DEVICE, seed=seed_for("partial-config"))
    part = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "SPLIT_K": 1}
    assert _config_dict(part, 5, 4, 24, 40, 2, None, torch.bfloat16) == dict(
        BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=32, GROUP_SIZE_M=1, num_warps=4, num_stages=3)
    _run_and_check(inp, part, "block knobs only", key="bf16")
    with pytest.raises(TableError, match="BLOCK_SIZE_K"):
        fused_experts(*inp[:5], config={"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32})
