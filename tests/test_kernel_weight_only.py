"""Weight-only fp8 (fp8_w8a16) and MXFP4 (gpt-oss) layers against the float32 reference.

Under the Triton CPU interpreter (TRITON_INTERPRET=1 when no GPU is present), like
test_kernel_fused.py. The reference dequantizes the same quantized weights to fp32, so
the comparisons measure the kernel (tile dequantization, 16-bit dot, epilogue), not the
quantization noise. Shapes are small but odd: K not a multiple of BLOCK_SIZE_K, M = 1,
experts without tokens, EP maps with -1 experts, biases. Outputs are poisoned with NaN
before each run and every element must be written. Plus the E2M1 / E8M0 codecs, the
MXFP4 packing round trip and the shape errors.
"""

import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from moeplan.base.errors import QuantError  # noqa: E402
from moeplan.kernels import (  # noqa: E402
    MoeRunner, dequantize_weight, fused_experts, fused_experts_ref, make_moe_inputs, quantize_weights,
)
from moeplan.kernels.moe_gemm import _e2m1_to_f32, _e8m0_to_f32  # noqa: E402
from moeplan.kernels.quantize import (  # noqa: E402
    E2M1_VALUES, SCHEMES, e2m1_decode, e2m1_encode, e8m0_to_float, pack_fp4, unpack_fp4,
)
from moeplan.kernels.testing import config, poisoned, rel_err, seed_for  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"

# bf16-level bounds (relative norm, atol, rtol) on unit-scale outputs: the kernel's weights
# are exactly the reference's (fp8 -> bf16 is exact; E2M1 * 2^k is exact), so what remains
# is the bf16 rounding of the GEMM1 output / activation and of the result (~4e-3 relative).
BF16_TOL = (1.2e-2, 3e-2, 5e-2)
# fp16 activations round 8x finer
FP16_TOL = (3e-3, 5e-3, 2e-2)


def _check(out, ref, tol, what):
    rel_bound, atol, rtol = tol
    assert torch.isfinite(out).all(), f"{what}: output has NaN/inf (unwritten or poisoned elements)"
    err = rel_err(out, ref)
    assert err <= rel_bound, f"{what}: relative error {err:.3e} > {rel_bound:.1e}"
    torch.testing.assert_close(out.float(), ref.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")
    return err


def _run(inp, cfg, tol, what, activation="silu", expert_map=None):
    M, K = inp.x.shape
    out = poisoned((M, K), inp.x.dtype, DEVICE)
    res = fused_experts(*inp[:5], config=cfg, quant=inp.quant, activation=activation, expert_map=expert_map,
                        out=out)
    assert res.data_ptr() == out.data_ptr()
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, activation=activation, expert_map=expert_map)
    return _check(out, ref, tol, what)


def _ep_slice(full, local):
    """Keep the local experts' weights, scales and biases (EP rank view)."""
    q = full.quant
    for d in (q.w1, q.w2):
        if d.scale is not None and d.scale.dim() > 0 and d.scale.shape[0] == full.w1.shape[0]:
            d.scale = d.scale[local]
        if d.bias is not None:
            d.bias = d.bias[local]
    return full._replace(w1=full.w1[local], w2=full.w2[local])


def _empty_expert_ids(M, allowed, topk, seed):
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(allowed)
    ids = torch.stack([allowed[torch.randperm(len(allowed), generator=g)[:topk]] for _ in range(M)])
    return ids.to(torch.int32).to(DEVICE)


def test_schemes_are_tunable():
    # the tuner (`moeplan tune`) accepts exactly the schemes in quantize.SCHEMES
    assert "fp8_w8a16" in SCHEMES and "mxfp4" in SCHEMES and "nvfp4" not in SCHEMES


# ---- E2M1 / E8M0 codecs and the MXFP4 layout ----------------------------------------------------

def test_e2m1_codes_roundtrip_and_rounding():
    codes = torch.arange(16, dtype=torch.uint8)
    vals = e2m1_decode(codes)
    assert vals.tolist() == list(E2M1_VALUES)
    # every representable value encodes back to its code (-0 encodes as +0: same value)
    back = e2m1_encode(vals)
    assert torch.equal(e2m1_decode(back), vals)
    assert torch.equal(back[1:8], codes[1:8]) and torch.equal(back[9:], codes[9:])
    # ties go to the even mantissa; saturation at +-6; signs kept
    v = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.26, 5.01, 7.0, 1e9, -0.75, -5.0, -100.0])
    want = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 0.5, 6.0, 6.0, 6.0, -1.0, -4.0, -6.0]
    assert e2m1_decode(e2m1_encode(v)).tolist() == want


def test_e8m0_bytes():
    s = torch.tensor([1, 100, 127, 128, 254, 255], dtype=torch.uint8)
    f = e8m0_to_float(s)
    assert f[:5].tolist() == [2.0 ** -126, 2.0 ** -27, 1.0, 2.0, 2.0 ** 127] and torch.isnan(f[5])
    if hasattr(torch, "float8_e8m0fnu"):  # the engine may hand over torch's e8m0 dtype
        assert torch.equal(e8m0_to_float(s.view(torch.float8_e8m0fnu))[:5], f[:5])


@triton.jit
def _decode_kernel(codes_ptr, scales_ptr, vals_ptr, pow_ptr, NC: tl.constexpr, NS: tl.constexpr):
    c = tl.load(codes_ptr + tl.arange(0, NC))
    tl.store(vals_ptr + tl.arange(0, NC), _e2m1_to_f32(c))
    s = tl.load(scales_ptr + tl.arange(0, NS))
    tl.store(pow_ptr + tl.arange(0, NS), _e8m0_to_f32(s))


def test_kernel_decoders_match_tables():
    # the in-kernel arithmetic decode equals the host tables for all 16 codes and for the
    # scale bytes 1..254 (0 -> 0 instead of 2^-127 and 255 -> inf instead of NaN, by design)
    codes = torch.arange(16, dtype=torch.uint8, device=DEVICE)
    scales = torch.arange(256, dtype=torch.int32).to(torch.uint8).to(DEVICE)
    vals = torch.empty(16, dtype=torch.float32, device=DEVICE)
    pows = torch.empty(256, dtype=torch.float32, device=DEVICE)
    _decode_kernel[(1,)](codes, scales, vals, pows, NC=16, NS=256)
    assert torch.equal(vals.cpu(), e2m1_decode(codes.cpu()))
    assert torch.equal(torch.signbit(vals.cpu()), torch.signbit(e2m1_decode(codes.cpu())))
    assert torch.equal(pows[1:255].cpu(), e8m0_to_float(scales[1:255].cpu()))
    assert pows[0].item() == 0.0 and pows[255].item() == float("inf")


def test_mxfp4_packing_roundtrip_and_layout():
    g = torch.Generator().manual_seed(seed_for("mx-pack"))
    # nibble order: even index in the low nibble
    codes = torch.tensor([[1, 2, 15, 8]], dtype=torch.uint8)
    assert pack_fp4(codes).tolist() == [[0x21, 0x8F]]
    assert torch.equal(unpack_fp4(pack_fp4(codes)), codes)
    rnd = torch.randint(0, 16, (3, 5, 64), generator=g, dtype=torch.uint8)
    assert torch.equal(unpack_fp4(pack_fp4(rnd)), rnd)
    # engine shapes: w1 (E, 2N, K//2) + (E, 2N, K//32), w2 (E, K, N//2) + (E, K, N//32)
    E, N, K = 3, 32, 96
    w1 = torch.randn((E, 2 * N, K), generator=g) / 8
    w2 = torch.randn((E, K, N), generator=g) / 5
    q1, q2, qc = quantize_weights(w1, w2, "mxfp4")
    assert q1.shape == (E, 2 * N, K // 2) and q1.dtype == torch.uint8
    assert qc.w1_scale.shape == (E, 2 * N, K // 32) and qc.w1_scale.dtype == torch.uint8
    assert q2.shape == (E, K, N // 2) and qc.w2_scale.shape == (E, K, N // 32)
    assert qc.use_mxfp4_w4a16 and qc.weight_group_size == 32 and qc.config_name("bfloat16") is None
    for w, q, which in ((w1, q1, "w1"), (w2, q2, "w2")):
        d = dequantize_weight(q, qc, which)
        # FP4 with power-of-two scales on Gaussian data: ~11% relative error
        assert rel_err(d, w) < 0.15, which
        # the scale rule: smallest 2^e with amax / 2^e <= 6 (nothing saturates)
        amax = w.abs().view(*w.shape[:2], -1, 32).amax(-1)
        sc = qc.w1_scale if which == "w1" else qc.w2_scale
        assert torch.equal(sc.long(), torch.ceil(torch.log2(amax / 6)).long() + 127)
        # dequantized values are representable: quantizing them again gives the same values
        # (not always the same bytes: a group whose max rounded down to 3 * 2^e gets 2^(e-1))
        q1b, q2b, qcb = quantize_weights(d if which == "w1" else w1, d if which == "w2" else w2, "mxfp4")
        assert torch.equal(dequantize_weight(q1b if which == "w1" else q2b, qcb, which), d)
    # exact grid values times powers of two come back bit-exact
    grid = torch.tensor(E2M1_VALUES[:8]).repeat(4)  # 32 values, amax 6 -> scale 2^0
    w = torch.stack([grid * 2.0 ** -3, -grid * 2.0 ** 5]).reshape(1, 2, 32)
    q, _, qc = quantize_weights(w, torch.zeros((1, 32, 32)), "mxfp4")
    assert qc.w1_scale.flatten().tolist() == [124, 132]
    assert torch.equal(dequantize_weight(q, qc, "w1"), w)


def test_fp8_w8a16_layouts():
    g = torch.Generator().manual_seed(seed_for("fp8w16-layout"))
    w1 = torch.randn((3, 48, 64), generator=g) / 8
    w2 = torch.randn((3, 64, 24), generator=g) / 5
    for kw, s1_shape, s2_shape in (({}, (3, 48, 1), (3, 64, 1)), ({"per_tensor": True}, (3,), (3,)),
                                   ({"block_shape": [32, 32]}, (3, 2, 2), (3, 2, 1))):
        q1, q2, qc = quantize_weights(w1, w2, "fp8_w8a16", **kw)
        assert q1.dtype == torch.float8_e4m3fn and q1.shape == w1.shape and q2.shape == w2.shape
        assert qc.w1_scale.shape == s1_shape and qc.w2_scale.shape == s2_shape and qc.w1_scale.dtype == torch.float32
        assert qc.use_fp8_w8a16 and qc.config_name("bfloat16") == "fp8_w8a16"
        assert qc.block_shape == kw.get("block_shape")
        for w, q, which in ((w1, q1, "w1"), (w2, q2, "w2")):
            assert rel_err(dequantize_weight(q, qc, which), w) < 0.04, (kw, which)


# ---- the layer ----------------------------------------------------------------------------------

# (id, dtype, scheme, make_moe_inputs kwargs, shape (M, E, N, K, topk), config, activation, tolerance)
# fp8_w8a16 uses the odd shape of test_kernel_fused (K=72, 2N=80: partial K and N tiles, N=40
# not a multiple of the 32-wide scale blocks); mxfp4 needs K, N multiples of 32, so K=96 with
# BK=64 leaves a partial K tile.
LAYER_CASES = [
    # per-channel scales in the epilogue; GROUP_SIZE_M=2 reorders M tiles
    ("fp8w16-channel-bf16", "bf16", "fp8_w8a16", {}, (7, 6, 40, 72, 2), config(16, 32, 32, gm=2), "silu", BF16_TOL),
    # per-tensor (E,) scales with fp16 activations: only fp16 rounding remains
    ("fp8w16-tensor-fp16", "fp16", "fp8_w8a16", {"per_tensor": True}, (7, 6, 40, 72, 2), config(16, 32, 32), "silu",
     FP16_TOL),
    # block scales [32, 32], BK=32: one scale row per K tile; w*s is rounded to bf16 in the tile
    ("fp8w16-block-bf16", "bf16", "fp8_w8a16", {"block_shape": [32, 32]}, (7, 6, 40, 72, 2), config(16, 32, 32),
     "silu", BF16_TOL),
    # block [16, 32] with BK=64 > bk: per-element scale gather, masked partial K tile (K=72)
    ("fp8w16-block-bk64", "bf16", "fp8_w8a16", {"block_shape": [16, 32]}, (7, 6, 40, 72, 2), config(16, 32, 64),
     "silu", BF16_TOL),
    # gpt-oss-like: interleaved clamped SwiGLU with biases on both GEMMs, BK=32 = the MX group
    ("mxfp4-swigluoai-bias", "bf16", "mxfp4", {"bias": True}, (7, 6, 64, 96, 2), config(16, 32, 32, gm=2),
     "swigluoai", BF16_TOL),
    # BK=64 spans two MX groups (a (2, BN) scale tile broadcast over the rows), K=96: a
    # masked partial K tile whose second scale group lies past K
    ("mxfp4-fp16-bk64", "fp16", "mxfp4", {}, (7, 6, 64, 96, 2), config(16, 32, 64), "silu", FP16_TOL),
    # BK=128 spans four MX groups, K=160: the last K tile holds one valid group of four
    ("mxfp4-bf16-bk128", "bf16", "mxfp4", {}, (5, 4, 64, 160, 2), config(16, 32, 128), "silu", BF16_TOL),
    # BK=16 < the MX group, BLOCK_SIZE_M=8 (padded 16-row dot)
    ("mxfp4-bk16-bm8", "bf16", "mxfp4", {}, (9, 4, 32, 64, 2), config(8, 32, 16), "silu", BF16_TOL),
]


@pytest.mark.parametrize("name,dtype,scheme,kw,shape,cfg,act,tol", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer(name, dtype, scheme, kw, shape, cfg, act, tol):
    M, E, N, K, topk = shape
    inp = make_moe_inputs(M, E, N, K, topk, dtype, scheme, device=DEVICE, seed=seed_for(name), **kw)
    _run(inp, cfg, tol, name, activation=act)


@pytest.mark.parametrize("scheme,kw,act", [("fp8_w8a16", {"block_shape": [32, 32], "bias": True}, "silu"),
                                           ("mxfp4", {"bias": True}, "swigluoai")], ids=["fp8w16-block", "mxfp4"])
def test_m1_and_empty_experts(scheme, kw, act):
    N, K = (24, 40) if scheme == "fp8_w8a16" else (32, 64)
    # a single token (one M tile, mostly sentinel rows): bf16 bounds
    inp = make_moe_inputs(1, 5, N, K, 2, "bf16", scheme, device=DEVICE, seed=seed_for("m1", scheme), **kw)
    _run(inp, config(16, 32, 32), BF16_TOL, f"{scheme} M=1", activation=act)
    # experts 0 and 2 get no token (their tiles are never launched): bf16 bounds
    inp = make_moe_inputs(6, 5, N, K, 2, "bf16", scheme, device=DEVICE, seed=seed_for("empty", scheme), **kw)
    inp = inp._replace(topk_ids=_empty_expert_ids(6, [1, 3, 4], 2, seed_for("empty-ids", scheme)))
    _run(inp, config(16, 32, 32), BF16_TOL, f"{scheme} empty experts", activation=act)


@pytest.mark.parametrize("scheme,kw,act", [("fp8_w8a16", {"bias": True}, "silu"),
                                           ("mxfp4", {"bias": True}, "swigluoai")], ids=["fp8w16-channel", "mxfp4"])
def test_expert_parallel_map(scheme, kw, act):
    # EP: 8 global experts, this rank holds global 1, 4, 6; tiles of the other experts
    # (expert id -1) must write zeros and the sum covers only local experts. Scales and
    # biases are sliced with the weights. bf16 bounds.
    E_g, local = 8, torch.tensor([1, 4, 6], device=DEVICE)
    N, K = (24 if scheme == "fp8_w8a16" else 32), 64
    full = make_moe_inputs(7, E_g, N, K, 3, "bf16", scheme, device=DEVICE, seed=seed_for("ep", scheme), **kw)
    emap = torch.full((E_g,), -1, dtype=torch.int32)
    emap[local.cpu()] = torch.arange(3, dtype=torch.int32)
    inp = _ep_slice(full, local)
    _run(inp, config(16, 32, 32), BF16_TOL, f"ep-{scheme}", activation=act, expert_map=emap.to(DEVICE))


def test_mxfp4_swigluoai_clamps_bite():
    # inputs scaled so gpt-oss's +-7 clamps are active on the dequantized weights: bf16 bounds
    inp = make_moe_inputs(4, 4, 32, 64, 2, "bf16", "mxfp4", device=DEVICE, seed=seed_for("mx-clamp"), bias=True)
    inp = inp._replace(x=(inp.x.float() * 6).to(torch.bfloat16))
    gate_up = torch.einsum("mk,eok->meo", inp.x.float(), dequantize_weight(inp.w1, inp.quant, "w1"))
    assert gate_up.abs().max() > 7.0, "test data should exercise the clamps"
    # outputs have std ~11 here (not 1): bf16 rounding of GEMM1 outputs near +-7 and of the
    # result grows with them, so atol is scaled ~10x; relative norm and rtol stay bf16-level
    _run(inp, config(16, 16, 32), (1.2e-2, 0.3, 5e-2), "mxfp4 clamps", activation="swigluoai")


@pytest.mark.parametrize("scheme,kw", [("mxfp4", {"bias": True}), ("fp8_w8a16", {"block_shape": [32, 32]})],
                         ids=["mxfp4", "fp8w16-block"])
def test_same_as_bf16_layer_on_dequantized_weights(scheme, kw):
    # mxfp4 tiles (E2M1 * 2^k) and fp8 block tiles (rounded w * s) are exactly the bf16 values of
    # the dequantized weights, so the layer must equal the unquantized bf16 layer fed those
    # weights: bit for bit under the interpreter (same dots in the same order)
    inp = make_moe_inputs(7, 5, 32, 64, 2, "bf16", scheme, device=DEVICE, seed=seed_for("same", scheme), **kw)
    cfg = config(16, 32, 32)
    q = inp.quant
    a = fused_experts(*inp[:5], config=cfg, quant=q, activation="swigluoai")
    W1 = dequantize_weight(inp.w1, q, "w1").to(torch.bfloat16)
    W2 = dequantize_weight(inp.w2, q, "w2").to(torch.bfloat16)
    b = fused_experts(inp.x, W1, W2, inp.topk_weights, inp.topk_ids, config=cfg, activation="swigluoai",
                      w1_bias=q.w1_bias, w2_bias=q.w2_bias)
    if _CUDA:
        _check(a, b, BF16_TOL, f"{scheme} vs bf16 layer")
    else:
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_mxfp4_e8m0_dtype_scales():
    # scales handed over as torch.float8_e8m0fnu give the same bits as uint8 scales
    if not hasattr(torch, "float8_e8m0fnu"):
        pytest.skip("torch has no float8_e8m0fnu")
    inp = make_moe_inputs(3, 4, 32, 64, 2, "bf16", "mxfp4", device=DEVICE, seed=seed_for("mx-e8m0"))
    cfg = config(16, 32, 32)
    a = fused_experts(*inp[:5], config=cfg, quant=inp.quant)
    q = inp.quant
    q.w1.scale, q.w2.scale = q.w1.scale.view(torch.float8_e8m0fnu), q.w2.scale.view(torch.float8_e8m0fnu)
    b = fused_experts(*inp[:5], config=cfg, quant=q)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_runner_poisoned_buffers_mxfp4():
    # the preallocated runner (tuner path) with every intermediate poisoned: equals
    # fused_experts bit for bit, with a fresh routing written in place
    r = MoeRunner.from_shape(5, 4, 32, 64, 2, config=config(16, 32, 32), scheme="mxfp4", device=DEVICE,
                             seed=seed_for("mx-runner"), activation="swigluoai", bias=True)
    gen = torch.Generator(device=DEVICE).manual_seed(seed_for("mx-runner-routing"))
    for _ in range(2):
        for t in (r.plan.c1, r.plan.c2, r.plan.a2, r.out):
            t.fill_(float("nan"))
        out = r.run().clone()
        ref = fused_experts(r.x, r.w1, r.w2, r.topk_weights, r.topk_ids, config=r.config, quant=r.quant,
                            activation="swigluoai")
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
        w, ids = r.new_routing(gen)
        r.set_routing(ids, w)


# ---- errors -------------------------------------------------------------------------------------

def test_shape_errors():
    g = torch.Generator().manual_seed(0)
    # mxfp4 needs K and N multiples of 32
    with pytest.raises(QuantError, match="multiples of 32"):
        quantize_weights(torch.randn((2, 64, 48), generator=g), torch.randn((2, 48, 32), generator=g), "mxfp4")
    with pytest.raises(QuantError, match="multiples of 32"):
        quantize_weights(torch.randn((2, 40, 64), generator=g), torch.randn((2, 64, 20), generator=g), "mxfp4")
    with pytest.raises(QuantError, match="fixed group size"):
        quantize_weights(torch.randn((2, 64, 64)), torch.randn((2, 64, 32)), "mxfp4", group_size=16)
    # a layer whose packed weights stand for K = 48 is refused before any launch
    inp = make_moe_inputs(2, 2, 32, 64, 1, "bf16", "mxfp4", device=DEVICE, seed=1)
    x = torch.zeros((2, 48), dtype=torch.bfloat16, device=DEVICE)
    w1 = inp.w1[:, :, :24]
    w2 = torch.zeros((2, 48, 16), dtype=torch.uint8, device=DEVICE)
    with pytest.raises(ValueError, match="multiples of 32"):
        fused_experts(x, w1, w2, inp.topk_weights, inp.topk_ids, quant=inp.quant)
    # fp8_w8a16: a block shape needs two positive sizes; scales of the wrong shape are refused
    with pytest.raises(QuantError):
        quantize_weights(torch.randn((2, 32, 32)), torch.randn((2, 32, 16)), "fp8_w8a16", block_shape=[0, 32])
    inp = make_moe_inputs(2, 2, 16, 32, 1, "bf16", "fp8_w8a16", device=DEVICE, seed=1)
    inp.quant.w1.scale = inp.quant.w1.scale[:, :8]
    with pytest.raises(ValueError, match="per channel"):
        fused_experts(*inp[:5], config=config(16, 32, 32), quant=inp.quant)
