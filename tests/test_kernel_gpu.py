"""The fused-MoE layer at real model shapes on a GPU (skipped without CUDA).

Every scheme against the float32 reference by relative norm ||out - ref|| / ||ref||,
outputs poisoned with NaN first; M in {1, a middle size, 4096}. Run with
`python3 -m pytest -m gpu tests/test_kernel_gpu.py -q`.
"""

import os

import pytest
import torch

pytestmark = pytest.mark.gpu

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"

if _CUDA:
    from moeplan.kernels import MoeRunner, fused_experts, fused_experts_ref, make_moe_inputs
    from moeplan.kernels.testing import check_rel, poisoned, seed_for, tol_key

# name: (E, N, K, topk, dtype, scheme, make_moe_inputs kwargs)
SHAPES = {
    "mixtral-tp2-bf16": (8, 7168, 4096, 2, "bf16", None, {}),
    "qwen3-30b-a3b-bf16": (128, 768, 2048, 8, "bf16", None, {}),
    "dsv3-tp8-fp8-block": (256, 256, 7168, 8, "bf16", "fp8_w8a8", {"block_shape": [128, 128]}),
    "dsv3-tp4-fp8-block": (256, 512, 7168, 8, "bf16", "fp8_w8a8", {"block_shape": [128, 128]}),
    "mixtral-tp2-fp8-tensor": (8, 7168, 4096, 2, "bf16", "fp8_w8a8", {}),
    "mixtral-tp2-fp8-token": (8, 7168, 4096, 2, "bf16", "fp8_w8a8", {"per_token": True, "per_channel": True}),
    "qwen3-int8-w8a8": (128, 768, 2048, 8, "bf16", "int8_w8a8", {"per_token": True, "per_channel": True}),
    "qwen3-int8-w8a16-g128": (128, 768, 2048, 8, "bf16", "int8_w8a16", {"group_size": 128}),
    "mixtral-tp2-int4-g128": (8, 7168, 4096, 2, "fp16", "int4_w4a16", {"group_size": 128}),
    "qwen3-int4-g128-zp": (128, 768, 2048, 8, "bf16", "int4_w4a16", {"group_size": 128, "zero_point": True}),
    "qwen3-fp16": (128, 768, 2048, 8, "fp16", None, {}),
}
CASES = [(s, m) for s in SHAPES for m in (1, 4096)] + [
    ("mixtral-tp2-bf16", 64), ("qwen3-30b-a3b-bf16", 257), ("dsv3-tp4-fp8-block", 96)]


def _check(inp, what, key, **kw):
    M, K = inp.x.shape
    out = poisoned((M, K), inp.x.dtype, "cuda")
    fused_experts(*inp[:5], quant=inp.quant, out=out, **kw)
    ref = fused_experts_ref(*inp[:5], quant=inp.quant,
                            **{k: v for k, v in kw.items() if k not in ("config", "variant", "engine")})
    return check_rel(out, ref, key, what)


@pytest.mark.parametrize("shape,M", CASES, ids=[f"{s}-M{m}" for s, m in CASES])
def test_real_shapes(shape, M):
    E, N, K, topk, dtype, scheme, kw = SHAPES[shape]
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device="cuda", seed=seed_for(shape, M), **kw)
    err = _check(inp, f"{shape} M={M}", tol_key(dtype, scheme))
    print(f"{shape} M={M}: rel err {err:.2e}")


# weight-only schemes (16-bit activations, weights dequantized per tile in the kernel):
# name: (E, N, K, topk, dtype, scheme, make_moe_inputs kwargs, activation)
WEIGHT_ONLY_SHAPES = {
    # gpt-oss-20b: MXFP4 experts, clamped interleaved SwiGLU, expert biases (K = N = 2880 = 90 * 32)
    "gpt-oss-20b-mxfp4": (32, 2880, 2880, 4, "bf16", "mxfp4", {"bias": True}, "swigluoai"),
    # Mixtral-8x7B TP2 with fp8 weights: per-channel scales, and DeepSeek-style [128, 128] blocks
    "mixtral-tp2-fp8_w8a16-channel": (8, 7168, 4096, 2, "bf16", "fp8_w8a16", {}, "silu"),
    "mixtral-tp2-fp8_w8a16-block": (8, 7168, 4096, 2, "bf16", "fp8_w8a16", {"block_shape": [128, 128]}, "silu"),
}
WEIGHT_ONLY_CASES = [(s, m) for s in WEIGHT_ONLY_SHAPES for m in (1, 256)]


@pytest.mark.parametrize("shape,M", WEIGHT_ONLY_CASES, ids=[f"{s}-M{m}" for s, m in WEIGHT_ONLY_CASES])
def test_weight_only_real_shapes(shape, M):
    E, N, K, topk, dtype, scheme, kw, act = WEIGHT_ONLY_SHAPES[shape]
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device="cuda", seed=seed_for(shape, M), **kw)
    err = _check(inp, f"{shape} M={M}", scheme, activation=act)
    print(f"{shape} M={M}: rel err {err:.2e}")


def test_runner_cuda_graph_mxfp4():
    # the tuner's path for gpt-oss: capture the mxfp4 layer (biases, swigluoai) in a CUDA
    # graph, write a new routing in place, replay: equal to an eager call, bit for bit
    r = MoeRunner.from_shape(64, 32, 2880, 2880, 4, scheme="mxfp4", device="cuda", seed=seed_for("mx-graph"),
                             activation="swigluoai", bias=True)
    g = r.capture(num_calls=2)
    gen = torch.Generator(device="cuda").manual_seed(seed_for("mx-graph-routing"))
    w, ids = r.new_routing(gen)
    r.set_routing(ids, w)
    r.out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref = fused_experts(r.x, r.w1, r.w2, r.topk_weights, r.topk_ids, config=r.config, quant=r.quant,
                        activation="swigluoai")
    torch.testing.assert_close(r.out, ref, atol=0, rtol=0)


def test_explicit_configs_mixtral():
    # a few explicit configs incl. GROUP_SIZE_M > 1 and 8 warps (not only the defaults)
    inp = make_moe_inputs(512, 8, 7168, 4096, 2, "bf16", device="cuda", seed=seed_for("cfgs"))
    for cfg in ({"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 16, "num_warps": 8, "num_stages": 4},
                {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 256, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3},
                {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 32, "num_warps": 8, "num_stages": 3}):
        _check(inp, f"cfg {cfg}", "bf16", config=cfg)


def test_swigluoai_bias_gpt_oss_shape():
    # gpt-oss-20b-like: E=32, K=N=2880 (not a multiple of 128), top4, biases, clamped SwiGLU
    inp = make_moe_inputs(300, 32, 2880, 2880, 4, "bf16", device="cuda", seed=seed_for("oai"), bias=True)
    _check(inp, "swigluoai", "bf16", activation="swigluoai")


def test_expert_parallel_dsv3():
    # EP=8: 256 global experts, 32 local; tiles of remote experts write zeros
    E_g = 256
    full = make_moe_inputs(333, E_g, 256, 7168, 8, "bf16", "fp8_w8a8", device="cuda",
                           seed=seed_for("ep"), block_shape=[128, 128])
    local = torch.arange(64, 96, device="cuda")
    emap = torch.full((E_g,), -1, dtype=torch.int32, device="cuda")
    emap[local] = torch.arange(32, dtype=torch.int32, device="cuda")
    q = full.quant
    for d in (q.w1, q.w2):
        d.scale = d.scale[local]
    inp = full._replace(w1=full.w1[local], w2=full.w2[local])
    _check(inp, "ep", "fp8_w8a8", expert_map=emap)


@pytest.mark.parametrize("gemms_only", [False, True])
def test_runner_cuda_graph_replay_fresh_routing(gemms_only):
    # capture 3 calls in one CUDA graph, write a new routing in place, replay: the result
    # must equal an eager fused_experts call on that routing, bit for bit
    inp = make_moe_inputs(64, 128, 768, 2048, 8, "bf16", device="cuda", seed=seed_for("graph"))
    r = MoeRunner.from_inputs(inp)
    g = r.capture(num_calls=3, gemms_only=gemms_only)
    gen = torch.Generator(device="cuda").manual_seed(seed_for("graph-routing"))
    for _ in range(3):
        w, ids = r.new_routing(gen)
        r.set_routing(ids, w)
        r.out.fill_(float("nan"))
        if gemms_only:
            r.plan.run_align(r.topk_ids, None)  # align outside the graph
            r.plan.run_input_quant(r.x)
            g.replay()
            r.plan.run_activation()  # the graph's GEMM2 read the previous activation:
            r.plan.run_gemm2(r.w2, r.topk_weights)  # redo it eagerly and sum
            r.plan.run_sum(r.out)
        else:
            g.replay()
        torch.cuda.synchronize()
        ref = fused_experts(r.x, r.w1, r.w2, r.topk_weights, r.topk_ids, config=r.config)
        torch.testing.assert_close(r.out, ref, atol=0, rtol=0)


# the fast variant (split-K at small M, top-k sum fused into GEMM2 by fp32 atomics) at real
# shapes: M = 1 and 8 split K on every shape here, M = 4096 takes the unsplit path
FAST_CASES = [(s, m) for s in ("mixtral-tp2-bf16", "qwen3-30b-a3b-bf16", "dsv3-tp4-fp8-block",
                               "mixtral-tp2-fp8-tensor", "qwen3-int4-g128-zp") for m in (1, 8, 4096)]


@pytest.mark.parametrize("shape,M", FAST_CASES, ids=[f"{s}-M{m}" for s, m in FAST_CASES])
def test_fast_variant_real_shapes(shape, M):
    E, N, K, topk, dtype, scheme, kw = SHAPES[shape]
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device="cuda", seed=seed_for("fast", shape, M), **kw)
    err = _check(inp, f"fast {shape} M={M}", tol_key(dtype, scheme), variant="fast")
    print(f"fast {shape} M={M}: rel err {err:.2e}")


def test_fast_variant_graph_replay():
    # the fast layer captured in a CUDA graph: its memset re-zeroes the atomic outputs, so
    # two replays with a new routing between them equal an eager call
    r = MoeRunner.from_shape(1, 256, 512, 7168, 8, scheme="fp8_w8a8", block_shape=[128, 128], device="cuda",
                             seed=seed_for("fast-graph"))
    fast = MoeRunner(r.x, r.w1, r.w2, r.topk_weights, r.topk_ids, None, r.quant, variant="fast")
    assert fast.plan.fast.split1 > 1 and fast.plan.fast.fuse_sum
    g = fast.capture(num_calls=2)
    w, ids = fast.new_routing(torch.Generator(device="cuda").manual_seed(5))
    fast.set_routing(ids, w)
    g.replay()
    torch.cuda.synchronize()
    ref = fused_experts_ref(fast.x, fast.w1, fast.w2, w, ids, quant=fast.quant)
    check_rel(fast.out, ref, "fp8_w8a8", "fast graph replay")


# ---- engine profile launch rules at real shapes (vllm-0.33 on sm_90) -------------------------
ENGINE_CASES = [
    # (shape, M, config, expect swap, expect naive): the DeepSeek-V3 TP8 decode configs of the
    # engine's H200 table, BLOCK_SIZE_M = 8 with and without the swap, mid-M swapped tiles
    ("dsv3-tp8-fp8-block", 1, (8, 64, 128, 1, 4, 4), True, True),
    ("dsv3-tp8-fp8-block", 4, (8, 32, 128, 64, 4, 5), False, True),
    ("dsv3-tp8-fp8-block", 32, (16, 128, 128, 1, 4, 3), True, False),
    ("dsv3-tp8-fp8-block", 4096, (64, 128, 128, 32, 4, 3), False, False),
    ("mixtral-tp2-fp8-token", 1, (16, 64, 128, 1, 4, 4), True, True),
    ("mixtral-tp2-fp8-tensor", 48, (32, 128, 128, 1, 4, 3), True, False),
    ("qwen3-30b-a3b-bf16", 4, (8, 64, 64, 1, 4, 4), False, True),  # bf16: never swapped
]


@pytest.mark.parametrize("shape,M,cfg,swap,naive", ENGINE_CASES,
                         ids=[f"{c[0]}-M{c[1]}-BM{c[2][0]}" for c in ENGINE_CASES])
def test_engine_rules_real_shapes(shape, M, cfg, swap, naive):
    E, N, K, topk, dtype, scheme, kw = SHAPES[shape]
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device="cuda", seed=seed_for("engine", shape, M), **kw)
    conf = dict(zip(("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages"), cfg))
    r = MoeRunner.from_inputs(inp, conf, engine="vllm-0.33")
    assert torch.cuda.get_device_capability() != (9, 0) or (r.plan.launch.swap, r.plan.launch.naive) == (swap, naive)
    assert r.plan.launch.naive == naive
    _check(inp, f"engine rules {shape} M={M}", tol_key(dtype, scheme), config=conf, engine="vllm-0.33")


def test_expert_parallel_drop_dsv3_ep8():
    # DeepSeek-V3 EP8 rank 3 (32 local experts of 256), vllm-0.33 drops non-local pairs
    E_g, E = 256, 32
    full = make_moe_inputs(64, E_g, 2048, 7168, 8, "bf16", "fp8_w8a8", device="cuda", seed=seed_for("ep8-drop"),
                           block_shape=[128, 128])
    local = torch.arange(96, 128, device="cuda")
    emap = torch.full((E_g,), -1, dtype=torch.int32, device="cuda")
    emap[local] = torch.arange(E, dtype=torch.int32, device="cuda")
    q = full.quant
    for d in (q.w1, q.w2):
        d.scale = d.scale[local]
    inp = full._replace(w1=full.w1[local], w2=full.w2[local])
    for cfg in ((16, 128, 128, 1, 4, 3), (8, 64, 128, 1, 4, 4)):
        conf = dict(zip(("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages"), cfg))
        r = MoeRunner.from_inputs(inp, conf, engine="vllm-0.33", expert_map=emap)
        assert r.plan.launch.ep_drop and r.plan.launch.align_experts == E
        _check(inp, f"ep8 drop {cfg}", "fp8_w8a8", config=conf, engine="vllm-0.33", expert_map=emap)
