"""The faithful kernel under the engine profiles' launch rules, against the float32 reference.

vllm-0.33 (the newest profile): the operand swap for small-M fp8 tiles, the naive
assignment for very sparse batches, EP pairs dropped by align, BLOCK_SIZE_M = 8.
vllm-0.12: align always, EP pairs padded into -1 tiles, no swap.
Under the Triton CPU interpreter (no compute capability) the swap is forced with
`swap_ab=True` or by passing `capability=(9, 0)` so the profile's own rule decides.
Outputs are poisoned with NaN before each run; every element must be written.
"""

import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from moeplan.engines.registry import PROFILES  # noqa: E402
from moeplan.kernels import MoeRunner, fused_experts, fused_experts_ref, make_moe_inputs  # noqa: E402
from moeplan.kernels.align import moe_align_block_size, moe_align_block_size_torch  # noqa: E402
from moeplan.kernels.fused_moe import LayerPlan, LayerShape  # noqa: E402
from moeplan.kernels.testing import check_close, config, poisoned, seed_for, tol_key  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"
NEW, OLD = PROFILES["vllm-0.33"], PROFILES["vllm-0.12"]

# fp8_w8a8 in each scale layout; block shapes scaled down ([32, 32] stands for [128, 128])
FP8 = [
    ("tensor", {}),
    ("token-channel", {"per_token": True, "per_channel": True}),
    ("block", {"block_shape": [32, 32]}),
]


def _run(inp, cfg, what, key, **kw):
    M, K = inp.x.shape
    out = poisoned((M, K), inp.x.dtype, DEVICE)
    fused_experts(*inp[:5], config=cfg, quant=inp.quant, out=out, **kw)
    ref = fused_experts_ref(*inp[:5], quant=inp.quant, expert_map=kw.get("expert_map"))
    return check_close(out, ref, key, what)


def _plan(inp, cfg, **kw) -> LayerPlan:
    M, K = inp.x.shape
    E, N = inp.w1.shape[0], inp.w2.shape[2]
    emap = kw.pop("expert_map", None)
    E_g = emap.numel() if emap is not None else E
    shape = LayerShape(M, E, E_g, N, K, inp.topk_ids.shape[1], emap is not None)
    return LayerPlan(shape, inp.x.dtype, DEVICE, cfg, inp.quant, **kw)


@pytest.mark.parametrize("name,kw", FP8, ids=[f[0] for f in FP8])
@pytest.mark.parametrize("bm,bn", [(8, 64), (16, 32), (32, 64)])
def test_swap_forced_matches_reference(name, kw, bm, bn):
    # the transposed tile on odd shapes: K=72 not a multiple of BK=32 (masked K tail),
    # 2N=80 and K=72 not multiples of BN, BM=8 as the dot's N side
    inp = make_moe_inputs(7, 6, 40, 72, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("swap", name, bm), **kw)
    cfg = config(bm, bn, 32, gm=2)
    assert _plan(inp, cfg, swap_ab=True).launch.swap
    _run(inp, cfg, f"swap {name} BM{bm} BN{bn}", "fp8_w8a8", swap_ab=True)


def test_swap_equals_unswapped_bits_closely():
    # the same arithmetic in another orientation: swapped and plain launches agree to rounding
    inp = make_moe_inputs(9, 5, 24, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("swap-eq"),
                          block_shape=[32, 32])
    cfg = config(16, 64, 32)
    a = fused_experts(*inp[:5], config=cfg, quant=inp.quant, swap_ab=True)
    b = fused_experts(*inp[:5], config=cfg, quant=inp.quant, swap_ab=False)
    torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("cap,bm,bn,want", [
    ((9, 0), 16, 64, True),    # the rule: sm_90, BM < 64, BN >= 64
    ((9, 0), 8, 128, True),
    ((9, 0), 64, 64, False),   # BM = 64: no swap
    ((9, 0), 16, 32, False),   # BN = 32: no swap
    ((8, 0), 16, 64, False),   # not Hopper
    ((10, 0), 16, 64, False),  # exactly 9.0 only
])
def test_swap_rule_from_capability(cap, bm, bn, want):
    inp = make_moe_inputs(5, 4, 32, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("rule", cap, bm, bn),
                          block_shape=[32, 32])
    cfg = config(bm, bn, 32)
    assert _plan(inp, cfg, capability=cap).launch.swap is want
    assert _plan(inp, cfg, capability=cap, engine="vllm-0.12").launch.swap is False  # older engines never swap
    _run(inp, cfg, f"rule {cap} BM{bm} BN{bn}", "fp8_w8a8", capability=cap)


@pytest.mark.parametrize("scheme,kw", [(None, {}), ("int8_w8a8", {}), ("int8_w8a16", {"group_size": 16})],
                         ids=["bf16", "int8", "w8a16"])
def test_swap_is_fp8_w8a8_only(scheme, kw):
    # 16-bit, int8 and weight-only layers never swap on sm_90, and forcing it is an error
    inp = make_moe_inputs(5, 4, 32, 64, 2, "bf16", scheme, device=DEVICE, seed=seed_for("noswap", scheme), **kw)
    assert not _plan(inp, config(16, 64, 32), capability=(9, 0)).launch.swap
    with pytest.raises(ValueError, match="fp8_w8a8"):
        _plan(inp, config(16, 64, 32), swap_ab=True)


@pytest.mark.parametrize("M,bm,scheme,kw", [
    (1, 8, None, {}),                                   # M = 1: one token, topk tiles
    (2, 16, None, {}),                                  # M * topk * 4 == E: the boundary
    (1, 8, "fp8_w8a8", {"block_shape": [32, 32]}),      # naive + block fp8
    (2, 16, "fp8_w8a8", {"per_token": True, "per_channel": True}),
    (1, 16, "int8_w8a16", {}),                          # per-channel weight-only still naive
])
def test_naive_assignment(M, bm, scheme, kw):
    # E = 16, topk = 2: M * 2 * 4 <= 16 for M <= 2, so align is skipped and each pair is a tile
    inp = make_moe_inputs(M, 16, 24, 40, 2, "bf16", scheme, device=DEVICE, seed=seed_for("naive", M, scheme), **kw)
    cfg = config(bm, 32, 32)
    plan = _plan(inp, cfg)
    assert plan.launch.naive and plan.align is None
    assert plan.launch.padded_rows == M * 2 * bm
    assert not _plan(inp, cfg, engine="vllm-0.12").launch.naive
    _run(inp, cfg, f"naive M{M} {scheme}", tol_key("bf16", scheme))


def test_naive_with_swap():
    # the two rules together: naive tiles computed transposed (DeepSeek-V3 decode on sm_90)
    inp = make_moe_inputs(2, 16, 24, 64, 2, "bf16", "fp8_w8a8", device=DEVICE, seed=seed_for("naive-swap"),
                          block_shape=[32, 32])
    cfg = config(8, 64, 32)
    plan = _plan(inp, cfg, capability=(9, 0))
    assert plan.launch.naive and plan.launch.swap
    _run(inp, cfg, "naive+swap", "fp8_w8a8", capability=(9, 0))


def test_naive_boundary_and_grouped_weight_only():
    # one more token than the rule allows aligns as usual; the grouped int4 path never goes naive
    inp = make_moe_inputs(3, 16, 24, 40, 2, "bf16", device=DEVICE, seed=seed_for("naive-edge"))
    assert not _plan(inp, config(16, 32, 32)).launch.naive
    grouped = make_moe_inputs(1, 16, 24, 64, 2, "bf16", "int4_w4a16", device=DEVICE, seed=seed_for("naive-g"),
                              group_size=16)
    assert not _plan(grouped, config(16, 32, 32)).launch.naive
    _run(grouped, config(16, 32, 32), "grouped int4 aligned", "int4_w4a16")


def _ep_inputs(M, scheme, kw, seed, N=24, K=64, local=(1, 4, 6), remote=(0, 2, 7)):
    # 8 global experts, this rank holds 3 (`local`, global ids); the last token is large and
    # routed to other ranks' experts only (`remote`), so a dropped or -1 pair that leaked into
    # the sum would show
    E_g, local = 8, torch.tensor(local)
    full = make_moe_inputs(M, E_g, N, K, 3, "bf16", scheme, device=DEVICE, seed=seed, **kw)
    ids = full.topk_ids.clone()  # (M, 3) int32 global ids
    ids[-1] = torch.tensor(remote, dtype=ids.dtype)
    x = full.x.clone()  # (M, K)
    x[-1] *= 50
    emap = torch.full((E_g,), -1, dtype=torch.int32)  # (E_g,) int32 global -> local or -1
    emap[local] = torch.arange(3, dtype=torch.int32)
    q = full.quant
    if q is not None:
        for d in (q.w1, q.w2):
            d.scale = d.scale[local.to(DEVICE)]
    inp = full._replace(x=x, topk_ids=ids, w1=full.w1[local.to(DEVICE)], w2=full.w2[local.to(DEVICE)])
    return inp, emap.to(DEVICE)


@pytest.mark.parametrize("engine", ["vllm-0.33", "vllm-0.12"])
@pytest.mark.parametrize("M,bm,scheme,kw", [
    (7, 8, None, {}),
    (1, 16, None, {}),                                  # M = 1 with a map: never naive
    (9, 16, "fp8_w8a8", {"block_shape": [32, 32]}),
    (6, 8, "fp8_w8a8", {}),                             # per-tensor dynamic scale over GEMM1's rows
])
def test_expert_parallel_drop_and_pad(engine, M, bm, scheme, kw):
    inp, emap = _ep_inputs(M, scheme, kw, seed_for("ep-drop", engine, M, scheme))
    cfg = config(bm, 32, 32)
    plan = _plan(inp, cfg, expert_map=emap, engine=engine)
    assert not plan.launch.naive
    assert plan.launch.ep_drop is (engine == "vllm-0.33")
    assert plan.launch.align_experts == (3 if engine == "vllm-0.33" else 8)
    _run(inp, cfg, f"ep {engine} M{M} {scheme}", tol_key("bf16", scheme), expert_map=emap, engine=engine)


def test_expert_parallel_drop_with_swap():
    inp, emap = _ep_inputs(5, "fp8_w8a8", {"block_shape": [32, 32]}, seed_for("ep-swap"))
    _run(inp, config(8, 64, 32), "ep drop + swap", "fp8_w8a8", expert_map=emap, capability=(9, 0))


def test_drop_align_lists_local_pairs_only():
    # Triton and torch align agree on the dropped layout: only local pairs, local ids, no -1
    # tile among the used ones, runs padded per local expert
    g = torch.Generator().manual_seed(seed_for("drop-align"))
    E_g, T_tok, topk, BM = 16, 40, 4, 8
    ids = torch.stack([torch.randperm(E_g, generator=g)[:topk] for _ in range(T_tok)]).to(torch.int32).to(DEVICE)
    emap = torch.full((E_g,), -1, dtype=torch.int32)
    local = torch.tensor([2, 3, 9, 15])
    emap[local] = torch.arange(4, dtype=torch.int32)
    emap = emap.to(DEVICE)
    s, e, n = moe_align_block_size(ids, BM, 4, emap, drop=True)
    s2, e2, n2 = moe_align_block_size_torch(ids, BM, 4, emap, drop=True)
    flat = ids.reshape(-1).cpu().long()
    keep = emap.cpu()[flat] >= 0
    counts = torch.bincount(emap.cpu()[flat][keep].long(), minlength=4)
    used = int(((counts + BM - 1) // BM * BM).sum())
    assert int(n) == int(n2) == used
    T = ids.numel()
    for s_, e_ in ((s, e), (s2, e2)):
        s_, e_ = s_.cpu(), e_.cpu()
        real = s_[:used][s_[:used] < T]
        assert sorted(real.tolist()) == sorted(torch.nonzero(keep).flatten().tolist())
        tiles = e_[:used // BM]
        assert ((tiles >= 0) & (tiles < 4)).all()
        for t in range(used // BM):
            rows = s_[t * BM:(t + 1) * BM]
            rows = rows[rows < T]
            assert (emap.cpu()[flat[rows]] == tiles[t]).all()
        assert (e_[used // BM:] == -1).all()


def test_runner_under_profiles():
    # the capturable runner carries the profile into every config it makes
    inp = make_moe_inputs(1, 16, 24, 40, 2, "bf16", device=DEVICE, seed=seed_for("runner-profile"))
    r = MoeRunner.from_inputs(inp, config(8, 32, 32), engine="vllm-0.33")
    assert r.plan.launch.naive
    r2 = r.with_config(config(16, 32, 32))
    assert r2.plan.engine is NEW and r2.plan.launch.naive
    old = MoeRunner.from_inputs(inp, config(16, 32, 32), engine=OLD)
    assert not old.plan.launch.naive
    torch.testing.assert_close(r.run().float(), old.run().float(), atol=3e-2, rtol=5e-2)


@pytest.mark.parametrize("block", [[32, 32], [16, 32], [32, 16]], ids=["square", "bn<bk", "bk<bn"])
@pytest.mark.parametrize("engine", ["vllm-0.33", "vllm-0.12"])
def test_launcher_and_pruner_agree(block, engine):
    # one launch geometry: the tuner's effective BLOCK_SIZE_K and M-tile count are what the
    # launcher runs, for non-square blocks too (the pruner used to clamp to bk, the launcher
    # to min(block)), under naive, aligned and EP-dropped row plans
    from moeplan.engines.knobs import KernelConfig
    from moeplan.kernels.moe_gemm import effective_block_k as launcher_bk
    from moeplan.kernels.moe_gemm import gemm_quant
    from moeplan.tune.space import SearchSpace, effective_block_k, max_m_tiles
    prof = PROFILES[engine]
    for M, emap in ((1, None), (9, None), (9, "ep")):
        if emap is None:
            inp = make_moe_inputs(M, 16, 64, 64, 2, "bf16", "fp8_w8a8", device=DEVICE,
                                  seed=seed_for("agree", M), block_shape=block)
        else:
            inp, emap = _ep_inputs(M, "fp8_w8a8", {"block_shape": block}, seed_for("agree-ep", M))
        for bm, bk in ((8, 64), (16, 32), (32, 16)):
            cfg = config(bm, 32, bk)
            plan = _plan(inp, cfg, expert_map=emap, engine=prof)
            info = plan.shape.info(inp.quant)
            kc = KernelConfig(**cfg)
            assert launcher_bk(cfg, gemm_quant(inp.quant, "w1")) == effective_block_k(kc, info)
            assert plan.launch.padded_rows == max_m_tiles(M, info, bm, prof) * bm
            sp = SearchSpace.build([kc], info, profile=prof)
            assert sp.canonical(kc, M) == kc  # G=1: nothing to collapse
