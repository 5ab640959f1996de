"""The faithful kernel under SGLang's launch rules (profiles sglang-0.4.10 / sglang-0.5.23).

  * EP bucket align: E + 1 buckets, bucket 0 (other ranks' pairs, id -1) first and padded to
    BM, its tiles labelled -1 and writing zeros in both GEMMs;
  * GEMM2's own config (`down_config`, SGLang's `_down` table), BLOCK_SIZE_M tied to GEMM1's;
  * the operand swap decided per GEMM ("sm9x") against vLLM's one decision ("sm90");
  * no BLOCK_SIZE_K clamp: a BK spanning two scale blocks runs with the step's first scale
    (wrong, as in the engine), and the tuner's correctness gate rejects it;
  * no naive assignment, BLOCK_SIZE_M from 16 in the space (8 still runs).
Interpreter shapes are tiny (E <= 8, N, K <= 128, M <= 16); block shapes are scaled down
([32, 32] stands for [128, 128]). Outputs are poisoned with NaN before each run.
"""

import io
import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from moeplan.engines.knobs import KernelConfig  # noqa: E402
from moeplan.engines.launch import (ShapeInfo, effective_block_k, max_padded_rows, plan_launch,  # noqa: E402
                                    smem_bytes)
from moeplan.engines.registry import PROFILES  # noqa: E402
from moeplan.kernels import fused_experts, fused_experts_ref, make_moe_inputs  # noqa: E402
from moeplan.kernels.align import moe_align_block_size, moe_align_block_size_torch  # noqa: E402
from moeplan.kernels.fused_moe import LayerPlan, LayerShape  # noqa: E402
from moeplan.kernels.testing import (check_close, check_rel, config, poisoned, rel_err, seed_for,  # noqa: E402
                                     tol_key)
from test_kernel_engine import _ep_inputs as _engine_ep_inputs  # noqa: E402 (sets the interpreter up alike)

DEVICE = "cuda" if _CUDA else "cpu"
SGL, SGL4, VLLM = PROFILES["sglang-0.5.23"], PROFILES["sglang-0.4.10"], PROFILES["vllm-0.33"]


def _run(inp, cfg, what, key, **kw):
    M, K = inp.x.shape
    out = poisoned((M, K), inp.x.dtype, DEVICE)
    fused_experts(*inp[:5], config=cfg, quant=inp.quant, out=out, **kw)
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, expert_map=kw.get("expert_map"))
    return check_close(out, ref, key, what)


def _plan(inp, cfg, expert_map=None, **kw) -> LayerPlan:
    M, K = inp.x.shape
    E, N = inp.w1.shape[0], inp.w2.shape[2]
    E_g = expert_map.numel() if expert_map is not None else E
    shape = LayerShape(M, E, E_g, N, K, inp.topk_ids.shape[1], expert_map is not None)
    return LayerPlan(shape, inp.x.dtype, DEVICE, cfg, inp.quant, **kw)


def _ep_inputs(M, scheme, kw, seed, N=32, K=64):
    # SGLang places experts contiguously: this rank holds global 2, 3, 4 (test_kernel_engine's
    # inputs otherwise: the last token large and routed to other ranks' experts only)
    return _engine_ep_inputs(M, scheme, kw, seed, N, K, local=(2, 3, 4), remote=(0, 5, 7))


# ---- 1. EP bucket align ------------------------------------------------------------------

def _brute_bucket_layout(ids, emap, E, BM):
    """The bucket layout by hand: (bucket of each pair, padded start of each bucket, used rows)."""
    flat = ids.reshape(-1).cpu().long()
    local = emap.cpu().long()[flat] if emap is not None else flat
    bucket = local + 1  # (T,) 0 = another rank's expert
    counts = [int((bucket == b).sum()) for b in range(E + 1)]
    starts, row = [], 0
    for c in counts:
        starts.append(row)
        row += -(-c // BM) * BM
    return bucket, starts, counts, row


@pytest.mark.parametrize("n_tok,BM,with_map", [(5, 4, True), (1, 16, True), (40, 8, False), (1100, 16, True)],
                         ids=["small", "M1", "nomap", "multi-kernel"])
def test_bucket_align_vs_torch_and_brute_force(n_tok, BM, with_map):
    # 1100 tokens x 4 slots > SMALL_T: the count / scan / scatter kernels; else the one-program one
    g = torch.Generator().manual_seed(seed_for("bucket-align", n_tok, BM))
    E_g, topk = 16, 4
    ids = torch.stack([torch.randperm(E_g, generator=g)[:topk] for _ in range(n_tok)]).to(torch.int32)  # (M, topk)
    if with_map:
        emap = torch.full((E_g,), -1, dtype=torch.int32)  # (E_g,) int32
        emap[4:8] = torch.arange(4, dtype=torch.int32)  # this rank: global 4..7
        E = 4
        ids[0] = torch.tensor([0, 1, 2, 3], dtype=torch.int32)  # one token with no local expert
    else:
        emap, E = None, E_g
    ids, emap = ids.to(DEVICE), None if emap is None else emap.to(DEVICE)
    T = ids.numel()
    P = max_padded_rows(T, E + 1, BM)
    # the engine's buffer: T * BM rows if T < E + 1, else T + (E + 1) * (BM - 1) (rounded up to BM here)
    engine_rows = T * BM if T < E + 1 else T + (E + 1) * (BM - 1)
    assert P == -(-engine_rows // BM) * BM
    bucket, starts, counts, used = _brute_bucket_layout(ids, emap, E, BM)
    outs = [moe_align_block_size(ids, BM, E, emap, bucket=True), moe_align_block_size_torch(ids, BM, E, emap, bucket=True)]
    for name, (s, e, n) in zip(("triton", "torch"), outs):
        s, e = s.cpu(), e.cpu()
        assert s.shape == (P,) and e.shape == (P // BM,), name
        assert int(n) == used, name
        for b in range(E + 1):  # bucket 0 first, each run its pairs then sentinels up to BM
            run = s[starts[b]:starts[b] + counts[b]]
            assert sorted(run.tolist()) == sorted(torch.nonzero(bucket == b).flatten().tolist()), (name, b)
            end = starts[b] + -(-counts[b] // BM) * BM
            assert (s[starts[b] + counts[b]:end] == T).all(), (name, b)
            assert (e[starts[b] // BM:end // BM] == b - 1).all(), (name, b)  # bucket 0's tiles: -1
        assert (s[used:] == T).all() and (e[used // BM:] == -1).all(), name
    if with_map:
        assert counts[0] > 0 and int(outs[1][1][0]) == -1  # the -1 bucket exists and comes first
    # the two implementations agree exactly except for the order inside a run (atomics)
    torch.testing.assert_close(outs[0][1].cpu(), outs[1][1].cpu())


def test_bucket_mode_in_plan_launch():
    # pure: the profile picks the align mode and the padded-row bound counts E_local + 1 buckets
    ep = ShapeInfo(E=3, N=32, K=64, topk=3, E_global=8)
    plain = ShapeInfo(E=8, N=32, K=64, topk=3)
    for prof in (SGL, SGL4):
        for shape in (ep, plain):
            L = plan_launch(prof, shape, 5, 16, 32)
            assert L.ep_bucket and L.ep_align == "bucket" and not L.ep_drop and not L.naive
            assert L.align_experts == shape.E and L.align_buckets == shape.E + 1
            assert L.padded_rows == max_padded_rows(15, shape.E + 1, 16)
    assert plan_launch(VLLM, ep, 5, 16, 32).ep_align == "drop"
    assert plan_launch(PROFILES["vllm-0.12"], ep, 5, 16, 32).ep_align == "pad"
    L = plan_launch(VLLM, plain, 5, 16, 32)
    assert L.ep_align is None and L.align_buckets == L.align_experts == 8


@pytest.mark.parametrize("engine", ["sglang-0.5.23", "sglang-0.4.10"])
@pytest.mark.parametrize("M,bm,scheme,kw", [
    (7, 16, None, {}),
    (9, 16, "fp8_w8a8", {"block_shape": [32, 32]}),
    (6, 32, "fp8_w8a8", {}),                           # per-tensor dynamic scale over GEMM1's rows
])
def test_ep_bucket_layer_matches_reference(engine, M, bm, scheme, kw):
    inp, emap = _ep_inputs(M, scheme, kw, seed_for("ep-bucket", engine, M, scheme))
    cfg = config(bm, 32, 32)
    plan = _plan(inp, cfg, expert_map=emap, engine=engine)
    assert plan.launch.ep_bucket and not plan.launch.naive
    # GEMM1's and GEMM2's outputs poisoned: the -1 tiles must write zeros into every non-local
    # pair's row of both (no zero-fill in bucket mode), the local rows must be real
    plan.c1.fill_(float("nan"))
    plan.c2.fill_(float("nan"))
    out = poisoned((M, inp.x.shape[1]), inp.x.dtype, DEVICE)
    plan.run(inp.x, inp.w1, inp.w2, inp.topk_weights, inp.topk_ids, emap, out)
    remote = (emap[inp.topk_ids.long()].reshape(-1) < 0)  # (T,) pairs of other ranks' experts
    assert remote.any() and (~remote).any()
    assert (plan.c1[remote] == 0).all() and (plan.c2[remote] == 0).all()
    assert torch.isfinite(plan.c1[~remote]).all() and (plan.c2[~remote] != 0).any()
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, expert_map=emap)
    check_close(out, ref, tol_key("bf16", scheme), f"ep bucket {engine} M{M} {scheme}")
    assert (out[-1] == 0).all()  # the token routed to other ranks only adds nothing


def test_ep_bucket_fast_variant():
    # the fast variant follows the profile's EP rule too (atomic top-k sum: -1 tiles add nothing)
    inp, emap = _ep_inputs(5, None, {}, seed_for("ep-bucket-fast"))
    assert _plan(inp, config(16, 32, 32), expert_map=emap, engine=SGL, variant="fast").launch.ep_bucket
    _run(inp, config(16, 32, 32), "ep bucket fast", "bf16", expert_map=emap, engine=SGL, variant="fast")


# ---- 2. GEMM2's own config ------------------------------------------------------------------

class _Spy:
    """Records (gemm, config, swap) of every invoke_moe_gemm call of the layer."""

    def __init__(self, monkeypatch):
        import moeplan.kernels.fused_moe as fm
        self.calls, real = [], fm.invoke_moe_gemm

        def spy(*args, **kw):
            cfg = args[12]
            self.calls.append((kw["gemm"], dict(cfg), kw["launch"].swap_of(kw["gemm"])))
            return real(*args, **kw)
        monkeypatch.setattr(fm, "invoke_moe_gemm", spy)


def test_down_config_runs_gemm2_and_ties_block_m(monkeypatch):
    spy = _Spy(monkeypatch)
    inp = make_moe_inputs(9, 4, 32, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("down"),
                          block_shape=[32, 32])
    up = config(16, 32, 32, gm=1)
    down = dict(config(64, 64, 16, gm=2, warps=2, stages=3), USE_TMA=True)  # BM 64 -> 16; USE_TMA ignored
    plan = _plan(inp, up, engine=SGL, down_config=down)
    assert plan.config2 == dict(config(16, 64, 16, gm=2, warps=2, stages=3))
    assert plan.config is up
    _run(inp, up, "down_config", "fp8_w8a8", engine=SGL, down_config=down)
    gemm1, gemm2 = spy.calls[-2], spy.calls[-1]
    assert gemm1[0] == 1 and gemm1[1] == up
    assert gemm2[0] == 2 and gemm2[1] == plan.config2
    # USE_TMA in the up entry is ignored too (moeplan does not model the TMA paths)
    assert _plan(inp, dict(up, USE_TMA=True), engine=SGL, down_config=down).config2 == plan.config2
    # None: GEMM2 runs the up config (today's behaviour); a KernelConfig is accepted too
    assert _plan(inp, up, engine=SGL).config2 is up
    assert _plan(inp, up, engine=SGL, down_config=KernelConfig(32, 64, 32, 1, 4, 2)).config2["BLOCK_SIZE_M"] == 16


@pytest.mark.parametrize("engine", ["vllm-0.33", "vllm-0.12", "sglang-0.4.10"])
def test_down_config_refused_without_down_tables(engine):
    inp = make_moe_inputs(5, 4, 32, 64, 2, "bf16", device=DEVICE, seed=seed_for("down-refused", engine))
    up = config(16, 32, 32)
    with pytest.raises(ValueError, match=engine):
        _plan(inp, up, engine=engine, down_config=config(16, 64, 32))
    with pytest.raises(ValueError, match=engine):
        _plan(inp, up, engine=engine, down_config=config(32, 32, 32))  # BLOCK_SIZE_M alone differs
    # the same knobs (USE_TMA and absent BLOCK_SIZE_M aside) are the one config
    same = {k: v for k, v in up.items() if k != "BLOCK_SIZE_M"}
    assert _plan(inp, up, engine=engine, down_config=dict(same, USE_TMA=False)).config2 == up


# ---- 3. operand swap per GEMM ---------------------------------------------------------------

FP8_BLOCK = ShapeInfo(E=4, N=32, K=64, topk=2, scheme="fp8_w8a8", block_shape=(32, 32))


@pytest.mark.parametrize("cap,sgl,vllm", [
    ((9, 0), (True, False), (True, True)),    # sm_90: SGLang per GEMM, vLLM one decision from the up config
    ((9, 1), (True, False), (False, False)),  # any 9.x for SGLang; exactly 9.0 for vLLM
    ((8, 0), (False, False), (False, False)),
    ((10, 0), (False, False), (False, False)),
    (None, (False, False), (False, False)),   # the interpreter: no capability
])
def test_swap_per_gemm_from_plan_launch(cap, sgl, vllm):
    # up BN 64 (would swap), down BN 32 (would not), BM 16
    L = plan_launch(SGL, FP8_BLOCK, 4, 16, 64, cap, down_block_n=32)
    assert (L.swap, L.swap2) == sgl and (L.swap_of(1), L.swap_of(2)) == sgl
    L = plan_launch(VLLM, FP8_BLOCK, 4, 16, 64, cap, down_block_n=32)
    assert (L.swap, L.swap2) == vllm
    # the other way round: only GEMM2 swaps under SGLang
    L = plan_launch(SGL, FP8_BLOCK, 4, 16, 32, cap, down_block_n=64)
    assert (L.swap, L.swap2) == sgl[::-1]
    # forced: both GEMMs; older SGLang never swaps; bf16 never swaps
    assert (plan_launch(SGL, FP8_BLOCK, 4, 16, 32, cap, swap=True, down_block_n=64).swap2,
            plan_launch(SGL, FP8_BLOCK, 4, 16, 64, cap, swap=False, down_block_n=64).swap2) == (True, False)
    assert not plan_launch(SGL4, FP8_BLOCK, 4, 16, 64, cap, down_block_n=64).swap
    bf16 = ShapeInfo(E=4, N=32, K=64, topk=2)
    assert not plan_launch(SGL, bf16, 4, 16, 64, cap, down_block_n=64).swap2


@pytest.mark.parametrize("bn1,bn2", [(64, 32), (32, 64)], ids=["gemm1-swaps", "gemm2-swaps"])
def test_swap_differs_between_gemms_matches_reference(monkeypatch, bn1, bn2):
    # the interpreter has no capability: passing (9, 0) lets the profile's per-GEMM rule decide
    spy = _Spy(monkeypatch)
    inp = make_moe_inputs(6, 4, 32, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("swap2", bn1),
                          block_shape=[32, 32])
    up, down = config(16, bn1, 32), config(16, bn2, 32, gm=2)
    plan = _plan(inp, up, engine=SGL, capability=(9, 0), down_config=down)
    assert (plan.launch.swap, plan.launch.swap2) == (bn1 >= 64, bn2 >= 64)
    _run(inp, up, f"swap per gemm {bn1}/{bn2}", "fp8_w8a8", engine=SGL, capability=(9, 0), down_config=down)
    assert [(g, s) for g, _, s in spy.calls[-2:]] == [(1, bn1 >= 64), (2, bn2 >= 64)]
    # swap_ab= still forces both GEMMs
    assert (_plan(inp, up, engine=SGL, swap_ab=True, down_config=down).launch.swap2,
            _plan(inp, up, engine=SGL, swap_ab=False, capability=(9, 0), down_config=down).launch.swap) == (True, False)


# ---- 4. no BLOCK_SIZE_K clamp -------------------------------------------------------------

def test_bk_clamp_follows_profile_pure():
    blk = ShapeInfo(E=4, N=256, K=7168, topk=8, scheme="fp8_w8a8", block_shape=(128, 128))
    assert effective_block_k(256, (128, 128)) == 128  # the default: vLLM's clamp
    assert effective_block_k(256, (128, 128), clamp=False) == 256
    assert effective_block_k(128, (64, 128), clamp=True) == 64 and effective_block_k(128, (64, 128), clamp=False) == 128
    assert smem_bytes(16, 64, 256, 3, blk, VLLM) == smem_bytes(16, 64, 128, 3, blk, VLLM) == smem_bytes(16, 64, 256, 3, blk)
    assert smem_bytes(16, 64, 256, 3, blk, SGL) == 2 * smem_bytes(16, 64, 128, 3, blk, SGL)
    assert plan_launch(VLLM, blk, 4, 16, 64).bk_clamp and not plan_launch(SGL, blk, 4, 16, 64).bk_clamp
    assert plan_launch(SGL, blk, 4, 16, 64, bk_clamp=True).bk_clamp  # the fast variant's override
    # the SGLang search space never offers such a BK (moeplan.tune.space: block_k_ok)
    assert not SGL.block_k_ok(256, 128) and SGL.block_k_ok(64, 128) and VLLM.block_k_ok(256, 128)


def test_unclamped_bk_uses_the_steps_first_scale():
    # GEMM level: BK = 64 over [32, 32] blocks without the clamp computes exactly what BK = 32
    # computes with every odd K block's scales replaced by the even block's before it (activation
    # and weight): one scale per BK step, read at the step's first k, as the engine's kernel does
    from moeplan.kernels.moe_gemm import gemm_quant, invoke_moe_gemm
    from moeplan.kernels.quantize import quantize_activation
    M, E, N, K, topk = 5, 4, 32, 128, 2
    inp = make_moe_inputs(M, E, N, K, topk, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("bk-scale"),
                          block_shape=[32, 32])
    gq = gemm_quant(inp.quant, "w1")
    a, a_s = quantize_activation(inp.x, gq.act_dtype, "group", 32)  # (M, K) fp8, (M, K/32)
    shape = ShapeInfo(E, N, K, topk, "fp8_w8a8", (32, 32))

    def gemm(cfg, prof, a_scale, w_scale):
        c = poisoned((M * topk, 2 * N), torch.bfloat16, DEVICE)  # (T, 2N)
        q = gemm_quant(inp.quant, "w1")
        q.w_scale = w_scale
        launch = plan_launch(prof, shape, M, 16, 32)
        rows = moe_align_block_size_torch(inp.topk_ids, 16, E, bucket=launch.ep_bucket)
        invoke_moe_gemm(a, inp.w1, c, a_scale, q, None, None, *rows, False, topk, cfg, M * topk, launch=launch)
        return c.float()

    wrong = gemm(config(16, 32, 64), SGL, a_s, gq.w_scale)
    first = torch.arange(a_s.shape[1]) // 2 * 2  # K block j -> the first block of its 64-wide step
    emulated = gemm(config(16, 32, 32), VLLM, a_s[:, first].contiguous(), gq.w_scale[:, :, first].contiguous())
    right = gemm(config(16, 32, 64), VLLM, a_s, gq.w_scale)  # vLLM clamps BK 64 to 32: right
    torch.testing.assert_close(wrong, emulated, atol=2e-2, rtol=1e-2)
    assert rel_err(wrong, right) > 5e-2


def _gate_bench(engine, M, seed=0):
    """The tuner's worker-side Bench for a tiny fp8 block layer (interpreter)."""
    from moeplan.kernels.inputs import make_routing
    from moeplan.tune.measure import Bench
    g = torch.Generator().manual_seed(seed_for("gate", M))
    draws = [make_routing(M, 4, 2, "cpu", g) for _ in range(2)]
    pools = {M: (torch.stack([i for _, i in draws]), torch.stack([w for w, _ in draws]))}  # (R, M, topk) each
    buf = io.BytesIO()
    torch.save(pools, buf)
    buf.seek(0)
    job = {"interpret": True, "engine": engine, "seed": seed, "routing_path": buf,
           "shape": {"E": 4, "N": 64, "K": 128, "topk": 2, "scheme": "fp8_w8a8", "act_dtype": "bf16",
                     "block_shape": [32, 32]}}
    return Bench(job, None)


@pytest.mark.skipif(_CUDA, reason="the Bench runs the interpreter here")
def test_tuner_gate_rejects_unclamped_bk_under_sglang():
    # the tuner's own check phase (Bench.measure(..., "check")): BK = 128 over [32, 32] blocks
    # (three of four K blocks per step read the wrong scale) passes under vLLM's clamp and is
    # rejected as wrong under SGLang; a BK that divides the block passes under SGLang
    bad = KernelConfig(16, 32, 128, 1, 4, 2)
    good = KernelConfig(16, 32, 32, 1, 4, 2)
    M = 6
    sgl = _gate_bench("sglang-0.5.23", M)
    r = sgl.measure(bad, M, "check")
    assert r.status == "wrong" and "relative error" in r.error, r
    assert sgl.measure(good, M, "check").status == "ok"
    assert _gate_bench("vllm-0.33", M).measure(bad, M, "check").status == "ok"


# ---- 5. no naive assignment; BLOCK_SIZE_M ------------------------------------------------------

@pytest.mark.parametrize("engine", ["sglang-0.5.23", "sglang-0.4.10"])
def test_sglang_never_naive_at_tiny_m(engine):
    # E = 16, topk = 2, M = 1: M * topk * 4 <= E, where vLLM 0.33 skips align; SGLang aligns
    inp = make_moe_inputs(1, 16, 32, 64, 2, "bf16", device=DEVICE, seed=seed_for("sgl-naive", engine))
    assert _plan(inp, config(16, 32, 32), engine=VLLM).launch.naive
    plan = _plan(inp, config(16, 32, 32), engine=engine)
    assert not plan.launch.naive and plan.align is not None and plan.launch.ep_bucket
    assert plan.launch.padded_rows == max_padded_rows(2, 17, 16)
    _run(inp, config(16, 32, 32), f"no naive {engine}", "bf16", engine=engine)


def test_sglang_space_starts_at_bm16_but_bm8_runs():
    # SGLang's tables and tuners have no BLOCK_SIZE_M below 16, but its kernel does not refuse 8
    # (spec: no explicit ban), so a hand-written BM = 8 entry still runs; the space never offers it
    from moeplan.tune.space import engine_space
    for prof in (SGL, SGL4):
        assert min(prof.domains()["BLOCK_SIZE_M"]) == 16
        assert min(c.BLOCK_SIZE_M for c in engine_space(prof)) == 16
    inp, emap = _ep_inputs(4, None, {}, seed_for("sgl-bm8"))
    _run(inp, config(8, 32, 32), "bm8 sglang", "bf16", expert_map=emap, engine=SGL)


# ---- GPU: DeepSeek-V3-like EP layer under sglang-0.5.23 ----------------------------------------

def _dsv3_ep_inputs(M, seed):
    # DeepSeek-V3 fp8 block at EP8: 256 global experts, 32 on this rank (global 64..95,
    # contiguous), N = 256 per expert (TP1 inside EP), K = 7168, top-8
    E_g, E, N, K, topk = 256, 32, 256, 7168, 8
    g = torch.Generator(device="cuda").manual_seed(seed)
    inp = make_moe_inputs(M, E, N, K, topk, "bf16", "fp8_w8a8", block_shape=[128, 128], device="cuda", seed=seed)
    logits = torch.randn((M, E_g), generator=g, device="cuda")  # (M, E_g)
    w, ids = torch.topk(torch.softmax(logits, -1), topk, dim=-1)
    ids[0, 0] = 64  # at least one local pair at every M
    emap = torch.full((E_g,), -1, dtype=torch.int32, device="cuda")  # (E_g,) int32
    emap[64:96] = torch.arange(E, dtype=torch.int32, device="cuda")
    inp = inp._replace(topk_ids=ids.to(torch.int32).contiguous(),  # (M, topk) int32 global ids
                       topk_weights=(w / w.sum(-1, keepdim=True)).float().contiguous())  # (M, topk) float32
    return inp, emap


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("M", [1, 16, 256])
@pytest.mark.parametrize("bn1,bn2", [(128, 32), (32, 128)], ids=["gemm1-swaps", "gemm2-swaps"])
def test_gpu_dsv3_ep_sglang_per_gemm_swap(M, bn1, bn2):
    inp, emap = _dsv3_ep_inputs(M, seed_for("gpu-dsv3-sgl", M, bn1))
    cap = tuple(torch.cuda.get_device_capability())
    up = config(16, bn1, 128, gm=1, warps=4, stages=3)
    down = dict(config(32, bn2, 128, gm=16, warps=4, stages=4), USE_TMA=True)  # BM 32 -> 16
    plan = _plan(inp, up, expert_map=emap, engine=SGL, down_config=down)
    assert plan.launch.ep_bucket and plan.config2["BLOCK_SIZE_M"] == 16
    if cap[0] == 9:  # SGLang's rule on Hopper: the two GEMMs decide apart
        assert (plan.launch.swap, plan.launch.swap2) == (bn1 >= 64, bn2 >= 64)
    out = torch.full((M, inp.x.shape[1]), float("nan"), dtype=inp.x.dtype, device="cuda")
    fused_experts(*inp[:5], config=up, quant=inp.quant, expert_map=emap, out=out, engine=SGL, down_config=down)
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, expert_map=emap)
    check_rel(out, ref, "fp8_w8a8", f"dsv3 ep8 sglang M{M} up BN{bn1} down BN{bn2}")


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
def test_gpu_dsv3_unclamped_bk_is_wrong_under_sglang():
    # BK = 256 with [128, 128] blocks: vLLM clamps to 128 (right); SGLang runs 256 (wrong)
    inp, emap = _dsv3_ep_inputs(64, seed_for("gpu-dsv3-bk"))
    cfg = config(64, 128, 256, gm=1, warps=4, stages=2)
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, expert_map=emap)
    right = fused_experts(*inp[:5], config=cfg, quant=inp.quant, expert_map=emap, engine=VLLM)
    check_rel(right, ref, "fp8_w8a8", "BK 256 clamped")
    wrong = fused_experts(*inp[:5], config=cfg, quant=inp.quant, expert_map=emap, engine=SGL)
    assert rel_err(wrong, ref) > 6e-2  # above the tuner's fp8 gate tolerance
