"""The fast variant of the layer (split-K, top-k sum fused into GEMM2) against the float32
reference, under the Triton CPU interpreter on small odd shapes (or on a GPU if present).

The fast variant adds fp32 partial tiles atomically, so its summation order differs from
the faithful kernel's; it must still match the reference within each scheme's tolerance.
Outputs are poisoned with NaN before each run.
"""

import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from moeplan.kernels import fused_experts, fused_experts_ref, make_moe_inputs  # noqa: E402
from moeplan.kernels.fused_moe import FastPlan, LayerShape, fast_plan  # noqa: E402
from moeplan.kernels.moe_gemm import gemm_quant  # noqa: E402
from moeplan.kernels.runner import MoeRunner  # noqa: E402
from moeplan.kernels.testing import check_close, config, poisoned, seed_for, tol_key  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"

# (id, dtype, scheme, make_moe_inputs kwargs); block shapes scaled down ([32, 32] for [128, 128])
SCHEMES = [
    ("bf16", "bf16", None, {}),
    ("fp16", "fp16", None, {}),
    ("fp8-tensor", "bf16", "fp8_w8a8", {}),
    ("fp8-token-channel", "bf16", "fp8_w8a8", {"per_token": True, "per_channel": True}),
    ("fp8-block", "bf16", "fp8_w8a8", {"block_shape": [32, 32]}),
    ("int8-token-channel", "bf16", "int8_w8a8", {"per_token": True, "per_channel": True}),
    ("w8a16-group-zp", "fp16", "int8_w8a16", {"group_size": 16, "zero_point": True}),
    ("w4a16-group", "bf16", "int4_w4a16", {"group_size": 32}),
]

# K = 136 is not a multiple of BLOCK_SIZE_K = 32 (a partial last K step lands in the last
# split); 2N = 80 is not a multiple of BLOCK_SIZE_N = 32.
SHAPE = (5, 6, 40, 136, 2)  # M, E, N, K, topk


def _layer(inp, cfg, fast, activation="silu", expert_map=None, biases=(None, None)):
    """Run the fast layer with an explicit FastPlan through MoeRunner; returns (M, K)."""
    r = MoeRunner(*inp[:5], config=cfg, quant=inp.quant, activation=activation, expert_map=expert_map,
                  w1_bias=biases[0], w2_bias=biases[1], variant="fast", fast=fast)
    r.out.copy_(poisoned(r.out.shape, r.out.dtype, DEVICE))
    return r.run()


def _ref(inp, activation="silu", expert_map=None, biases=(None, None)):
    return fused_experts_ref(*inp[:5], quant=inp.quant, activation=activation, expert_map=expert_map,
                             w1_bias=biases[0], w2_bias=biases[1])


@pytest.mark.parametrize("name,dtype,scheme,kw", SCHEMES, ids=[s[0] for s in SCHEMES])
@pytest.mark.parametrize("fast", [FastPlan(3, 1, False), FastPlan(1, 1, True), FastPlan(2, 2, True, tma=True),
                                  FastPlan(1, 1, False, tma=True)],
                         ids=["splitk-gemm1", "fused-sum", "splitk-both-tma", "tma-only"])
def test_fast_schemes(name, dtype, scheme, kw, fast):
    M, E, N, K, topk = SHAPE
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device=DEVICE, seed=seed_for("fast", name), **kw)
    out = _layer(inp, config(16, 32, 32), fast)
    check_close(out, _ref(inp), tol_key(dtype, scheme), f"fast {name} {fast}")


# tile-ordered rows: x gathered before GEMM1 (sort1), GEMM1's output / the activation in
# tile order (sort2), alone, together, with descriptors for A and B, and with split-K into a
# tile-ordered fp32 workspace
SORTED_PLANS = [FastPlan(sort1=True), FastPlan(sort2=True), FastPlan(tma=True, sort1=True, sort2=True),
                FastPlan(2, 1, False, tma=True, sort1=True, sort2=True)]


@pytest.mark.parametrize("name,dtype,scheme,kw", SCHEMES, ids=[s[0] for s in SCHEMES])
@pytest.mark.parametrize("fast", SORTED_PLANS, ids=["sort1", "sort2", "sorted-tma", "sorted-splitk-tma"])
def test_fast_tile_ordered_rows(name, dtype, scheme, kw, fast):
    M, E, N, K, topk = SHAPE
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device=DEVICE, seed=seed_for("sorted", name), **kw)
    out = _layer(inp, config(16, 32, 32), fast)
    check_close(out, _ref(inp), tol_key(dtype, scheme), f"fast {name} {fast}")


@pytest.mark.parametrize("bm", [8, 32])
def test_fast_tile_ordered_block_m_edges(bm):
    # BLOCK_SIZE_M = 8 runs a 16-row dot whose extra rows lie in the next tile (or past P);
    # BLOCK_SIZE_M = 32 > the pairs of any expert: mostly sentinel rows, written as zeros;
    # expert 0 gets no token
    M, E, N, K, topk = 7, 5, 24, 72, 2
    inp = make_moe_inputs(M, E, N, K, topk, "fp16", device=DEVICE, seed=seed_for("sorted-bm", bm))
    ids = (torch.arange(M * topk) % (E - 1) + 1).view(M, topk).to(torch.int32)
    inp = inp._replace(topk_ids=ids.to(DEVICE))
    r = MoeRunner(*inp[:5], config=config(bm, 16, 32), quant=inp.quant, variant="fast",
                  fast=FastPlan(tma=True, sort1=True, sort2=True))
    r.plan.c1.copy_(poisoned(r.plan.c1.shape, r.plan.c1.dtype, DEVICE))  # every row must be written
    out = r.run()
    check_close(out, _ref(inp), "fp16", f"tile-ordered BM={bm}")
    assert torch.isfinite(r.plan.c1).all()  # sentinel rows and unused tiles are zeros, not poison


def test_fast_more_splits_than_k_steps():
    # split 8 over 2 K steps (K = 40, BK = 32): the empty splits must add nothing
    inp = make_moe_inputs(3, 4, 24, 40, 2, "bf16", device=DEVICE, seed=seed_for("fast", "empty-splits"))
    out = _layer(inp, config(16, 32, 32), FastPlan(8, 8, True, tma=True))
    check_close(out, _ref(inp), "bf16", "more splits than K steps")


def test_fast_biases_added_once_swigluoai():
    # biases must be added by one split only; gpt-oss activation on fp32 GEMM1 partials
    inp = make_moe_inputs(4, 4, 24, 96, 2, "bf16", device=DEVICE, seed=seed_for("fast", "bias"), bias=True)
    assert inp.quant is not None and inp.quant.w1_bias is not None  # biases travel in the quant config
    out = _layer(inp, config(16, 16, 32), FastPlan(3, 3, True), activation="swigluoai")
    check_close(out, _ref(inp, activation="swigluoai"), "bf16", "fast swigluoai + biases")


@pytest.mark.parametrize("scheme,fast", [(None, FastPlan(2, 2, True)),
                                         ("fp8_w8a8", FastPlan(tma=True, sort1=True, sort2=True))],
                         ids=["bf16-splitk-sum", "fp8-tensor-tile-ordered"])
def test_fast_expert_map(scheme, fast):
    # EP: half of the experts belong to another rank (-1): their pairs add nothing, and a
    # token whose experts are all remote gets exact zeros. With tile-ordered rows and a
    # dynamic per-tensor fp8 scale, the zero rows (remote experts, sentinels) written into
    # the poisoned GEMM1 buffer must leave the activation's scale as over the pairs alone.
    M, E_g, N, K, topk = 6, 8, 24, 64, 2
    routing = make_moe_inputs(M, E_g, N, K, topk, "bf16", device=DEVICE, seed=seed_for("fast", "ep"))
    local = make_moe_inputs(M, 4, N, K, topk, "bf16", scheme, device=DEVICE, seed=seed_for("sorted", "ep-w"))
    emap = torch.full((E_g,), -1, dtype=torch.int32)
    emap[torch.tensor([1, 4, 5, 6])] = torch.arange(4, dtype=torch.int32)
    emap = emap.to(DEVICE)
    ids = routing.topk_ids.clone().cpu()
    ids[0] = torch.tensor([0, 2])  # token 0: no local expert
    # the last token, remote too, is 10x larger: sentinel rows gather its x row, so
    # sentinels that were not written as zeros would dominate a per-tensor amax
    ids[M - 1] = torch.tensor([7, 3])
    ids = ids.to(DEVICE)
    x = routing.x.clone()
    x[M - 1] *= 10
    routing = routing._replace(x=x)
    r = MoeRunner(routing.x, local.w1, local.w2, routing.topk_weights, ids, config=config(16, 32, 32),
                  quant=local.quant, expert_map=emap, variant="fast", fast=fast)
    r.plan.c1.copy_(poisoned(r.plan.c1.shape, r.plan.c1.dtype, DEVICE))
    out = r.run()
    ref = fused_experts_ref(routing.x, local.w1, local.w2, routing.topk_weights, ids, quant=local.quant,
                            expert_map=emap)
    check_close(out, ref, tol_key("bf16", scheme), f"fast EP map {scheme} {fast}")
    assert torch.all(out[0] == 0) and torch.all(out[M - 1] == 0)
    if fast.split1 > 1 or fast.fuse_sum:
        return  # fp32 partial sums round at other points than the faithful kernel
    # the same activation scale as the faithful kernel's (a scale taken over stray rows
    # would move every quantized value): only the summation order may differ
    faithful = MoeRunner(routing.x, local.w1, local.w2, routing.topk_weights, ids, config=config(16, 32, 32),
                         quant=local.quant, expert_map=emap).run()
    check_close(out, faithful, (2e-3, 1e-2, 1e-2), f"fast EP map {scheme} vs faithful")


def test_fused_experts_fast_heuristic_and_chunks():
    # the public entry point with variant="fast": heuristic FastPlan per chunk, 3 chunks
    inp = make_moe_inputs(11, 5, 40, 72, 2, "bf16", device=DEVICE, seed=seed_for("fast", "public"))
    out = poisoned((11, 72), torch.bfloat16, DEVICE)
    fused_experts(*inp[:5], config=config(16, 32, 32), out=out, chunk_tokens=4, variant="fast")
    check_close(out, _ref(inp), "bf16", "fused_experts(variant='fast')")


def test_unknown_variant_is_a_value_error():
    inp = make_moe_inputs(2, 4, 24, 32, 2, "bf16", device=DEVICE, seed=1)
    with pytest.raises(ValueError, match="unknown kernel variant 'turbo'; valid: faithful, fast"):
        fused_experts(*inp[:5], variant="turbo")


def test_fast_plan_heuristic():
    # decode (few programs): K is split; large M: no split, and no fused sum once the fp32
    # output passes FAST_SUM_BYTES; the faithful GemmQuant of an unquantized layer
    q = gemm_quant(None, "w1")
    cfg = config(16, 64, 128)
    small = fast_plan(LayerShape(1, 256, 256, 128, 7168, 8), cfg, q, q, sms=132)
    assert small.split1 > 1 and small.fuse_sum
    assert small.split1 <= 7168 // 128 // 4  # at least 4 K steps per split
    big = fast_plan(LayerShape(4096, 256, 256, 128, 7168, 8), config(64, 128, 128), q, q, sms=132)
    # 4096 * 7168 * 4 bytes > FAST_SUM_BYTES (2 MiB); 128 pairs per expert of 16-bit
    # activations: pair order (tile order from FAST_SORT_ROWS = 1024)
    assert big == FastPlan(1, 1, False, tma=True)
    mid = fast_plan(LayerShape(64, 8, 8, 7168, 4096, 2), config(64, 128, 64), q, q, sms=132)
    assert mid.split1 == 1 and mid.fuse_sum  # enough programs; fp32 (64, 4096) output is 1 MiB
    assert not mid.sort2  # 16 pairs per expert
    m256 = fast_plan(LayerShape(256, 8, 8, 7168, 4096, 2), config(64, 128, 64), q, q, sms=132)
    assert not m256.fuse_sum and not m256.sort2  # 64 pairs per expert
    assert not fast_plan(LayerShape(1024, 8, 8, 14336, 4096, 2), config(128, 256, 64), q, q, sms=132).sort2
    # Mixtral at 1024 pairs per expert: tile-ordered rows, and x gathered (112 column tiles)
    mix = fast_plan(LayerShape(4096, 8, 8, 14336, 4096, 2), config(128, 256, 64), q, q, sms=132)
    assert mix.sort2 and mix.sort1
    # Qwen3-like: 1024 pairs per expert but only 6 column tiles: tile order without the gather
    qw = fast_plan(LayerShape(16384, 128, 128, 768, 2048, 8), config(128, 256, 64), q, q, sms=132)
    assert qw.sort2 and not qw.sort1
    # per-tensor fp8 activations: never tile order, even at 1024 pairs per expert
    qt = gemm_quant(make_moe_inputs(2, 4, 64, 128, 2, "bf16", "fp8_w8a8", device="cpu").quant, "w2")
    assert not fast_plan(LayerShape(4096, 8, 8, 7168, 4096, 2), config(128, 256, 128), qt, qt, sms=132).sort2
    # block-quantized activations: tile order from 128 pairs per expert; never gather fp8 x
    qb = gemm_quant(make_moe_inputs(2, 4, 64, 128, 2, "bf16", "fp8_w8a8", device="cpu",
                                    block_shape=[32, 32]).quant, "w2")
    ds = fast_plan(LayerShape(4096, 256, 256, 512, 7168, 8), config(64, 128, 128), qb, qb, sms=132)
    assert ds.sort2 and not ds.sort1
    assert not fast_plan(LayerShape(1024, 256, 256, 512, 7168, 8), config(64, 128, 128), qb, qb, sms=132).sort2


def test_fast_plan_validation():
    with pytest.raises(ValueError, match="split2 > 1 needs fuse_sum"):
        FastPlan(1, 2, False)
    with pytest.raises(ValueError, match=">= 1"):
        FastPlan(0, 1, True)


def test_tma_eligibility():
    # descriptors only for unpacked 8/16-bit weights with 16-byte rows; packed int4, weight-only
    # dequantized tiles and odd row lengths keep the pointer loads
    from moeplan.kernels.moe_gemm import Q_WEIGHT_ONLY, GemmQuant, tma_eligible
    none = GemmQuant()
    w = torch.empty((4, 64, 136), dtype=torch.bfloat16)  # rows of 272 bytes
    assert tma_eligible(w, none, 32, 32)
    assert not tma_eligible(torch.empty((4, 64, 36), dtype=torch.bfloat16), none, 32, 32)  # 72-byte rows
    assert not tma_eligible(w.transpose(1, 2), none, 32, 32)  # not contiguous
    assert not tma_eligible(w, GemmQuant(kind=Q_WEIGHT_ONLY), 32, 32)
    assert not tma_eligible(w, none, 512, 32)  # a box side over 256


def test_fast_tma_partial_n_tile_reads_next_expert():
    # 2N = 80 rows per expert with BLOCK_SIZE_N = 64: the second N tile's descriptor box runs
    # into the next expert's rows (and past the last expert: zero fill); none of it is stored
    inp = make_moe_inputs(6, 3, 40, 64, 2, "bf16", device=DEVICE, seed=seed_for("fast", "tma-n"))
    out = _layer(inp, config(16, 64, 32), FastPlan(1, 1, False, tma=True))
    check_close(out, _ref(inp), "bf16", "tma partial N tile")


@pytest.mark.parametrize("one_acc", [True, False], ids=["one-acc", "two-tiles"])
def test_fast_block_fp8_accumulator_forms(one_acc):
    # block fp8 over 5 K groups (K = 160, [32, 32] blocks), split in two: the single rescaled
    # accumulator and the per-step product form both match the reference
    inp = make_moe_inputs(6, 4, 64, 160, 2, "bf16", "fp8_w8a8", device=DEVICE, block_shape=[32, 32],
                          seed=seed_for("fast", "one-acc"))
    out = _layer(inp, config(16, 32, 32), FastPlan(2, 1, False, tma=True, one_acc=one_acc))
    check_close(out, _ref(inp), "fp8_w8a8", f"block fp8 one_acc={one_acc}")


def test_fast_block_fp8_zero_scale_falls_back():
    # a zero weight-block scale would make the rescaled accumulator divide by zero: such
    # weights take the two-tile path (checked once per scale tensor), still finite and right
    from moeplan.kernels.moe_gemm import positive_scales
    inp = make_moe_inputs(5, 4, 64, 96, 2, "bf16", "fp8_w8a8", device=DEVICE, block_shape=[32, 32],
                          seed=seed_for("fast", "zero-scale"))
    s1 = inp.quant.w1_scale
    assert positive_scales(s1)
    s1[1, 0, 1] = 0.0  # in place: a new tensor version, checked again
    assert not positive_scales(s1)
    out = _layer(inp, config(16, 32, 32), FastPlan(1, 1, False, tma=True, one_acc=True))
    check_close(out, _ref(inp), "fp8_w8a8", "zero block scale")
