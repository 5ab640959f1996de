"""Align (sort pairs by expert, pad to BLOCK_SIZE_M tiles): Triton vs torch vs invariants.

Runs under the Triton CPU interpreter when no GPU is present (TRITON_INTERPRET=1 is set
before any kernel module is imported); on a GPU machine the same checks run on CUDA.
"""

import os

import pytest
import torch

_CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

from moeplan.kernels.align import max_padded_rows, moe_align_block_size, moe_align_block_size_torch  # noqa: E402
from moeplan.kernels.testing import seed_for  # noqa: E402

DEVICE = "cuda" if _CUDA else "cpu"


def _routing(M, E, topk, gen, avoid=()):
    """(M, topk) distinct experts per token, never using experts in `avoid`."""
    allowed = torch.tensor([e for e in range(E) if e not in avoid])
    rows = [allowed[torch.randperm(len(allowed), generator=gen)[:topk]] for _ in range(M)]
    return torch.stack(rows).to(torch.int32).to(DEVICE)


def _check_invariants(ids, s, e, n, BM, E, emap=None):
    T = ids.numel()
    s, e = s.cpu(), e.cpu()
    n = int(n.item())
    flat = ids.reshape(-1).cpu().long()
    assert s.numel() == max_padded_rows(T, E, BM)
    assert n % BM == 0 and n <= s.numel()
    # every pair appears exactly once in the used rows, sentinels (T) elsewhere
    used = s[:n]
    real = used[used < T]
    assert sorted(real.tolist()) == list(range(T))
    assert (s[n:] == T).all()
    counts = torch.bincount(flat, minlength=E)
    assert n == int(((counts + BM - 1) // BM * BM).sum())
    # each tile holds pairs of a single expert, labelled (through the map) in expert_ids
    for t in range(n // BM):
        tile = s[t * BM:(t + 1) * BM]
        tile = tile[tile < T]
        assert tile.numel() > 0, "a used tile with no pair"
        experts = flat[tile].unique()
        assert experts.numel() == 1
        want = int(experts.item()) if emap is None else int(emap.cpu()[experts.item()])
        assert int(e[t]) == want
    assert (e[n // BM:] == -1).all()


@pytest.mark.parametrize("M,E,topk,BM", [
    (1, 4, 2, 16),     # one token: T < E, most experts empty
    (7, 6, 6, 16),     # topk == E: every token to every expert
    (33, 8, 2, 16),    # runs spanning several tiles
    (5, 3, 3, 32),     # BM larger than any expert's run
    (100, 64, 8, 16),  # many experts (E_POW2 64), many tiles
    (3, 300, 2, 8),    # E not a power of two, E > T, BLOCK_SIZE_M = 8
])
@pytest.mark.parametrize("path", ["single-program", "three-kernels"])
def test_align_matches_torch_and_invariants(M, E, topk, BM, path, monkeypatch):
    # both Triton paths: one program for small T, three kernels above SMALL_T
    import moeplan.kernels.align as align_mod
    monkeypatch.setattr(align_mod, "SMALL_T", 1 << 30 if path == "single-program" else 0)
    gen = torch.Generator().manual_seed(seed_for("align", M, E, topk, BM))
    ids = _routing(M, E, topk, gen)
    s, e, n = moe_align_block_size(ids, BM, E)
    s2, e2, n2 = moe_align_block_size_torch(ids, BM, E)
    assert int(n.item()) == int(n2.item())
    assert torch.equal(e.cpu(), e2.cpu())
    # same pairs per expert run (their order inside a run, so across its tiles, may differ)
    s, s2 = s.cpu(), s2.cpu()
    for ex in e.cpu().unique().tolist():
        if ex < 0:
            continue
        rows = (e.cpu() == ex).nonzero().flatten()
        a = torch.cat([s[t * BM:(t + 1) * BM] for t in rows.tolist()])
        b = torch.cat([s2[t * BM:(t + 1) * BM] for t in rows.tolist()])
        assert sorted(a.tolist()) == sorted(b.tolist())
    _check_invariants(ids, s, e, n, BM, E)


def test_align_empty_expert_and_int64_ids():
    # experts 0 and 3 get no token at all; ids given as int64
    gen = torch.Generator().manual_seed(seed_for("align-empty"))
    ids = _routing(9, 6, 2, gen, avoid=(0, 3)).long()
    s, e, n = moe_align_block_size(ids, 16, 6)
    _check_invariants(ids, s, e, n, 16, 6)
    assert 0 not in e.cpu().tolist() and 3 not in e.cpu().tolist()


@pytest.mark.parametrize("small_t", [True, False])
def test_align_expert_map_marks_remote_experts(small_t, monkeypatch):
    import moeplan.kernels.align as align_mod
    monkeypatch.setattr(align_mod, "SMALL_T", 1 << 30 if small_t else 0)
    # EP: 8 global experts, this rank owns 2, 5, 7 (local 0, 1, 2); the others map to -1
    gen = torch.Generator().manual_seed(seed_for("align-ep"))
    emap = torch.full((8,), -1, dtype=torch.int32)
    emap[torch.tensor([2, 5, 7])] = torch.arange(3, dtype=torch.int32)
    emap = emap.to(DEVICE)
    ids = _routing(11, 8, 3, gen)
    s, e, n = moe_align_block_size(ids, 16, 8, emap)
    _check_invariants(ids, s, e, n, 16, 8, emap)
    s2, e2, n2 = moe_align_block_size_torch(ids, 16, 8, emap)
    assert torch.equal(e.cpu(), e2.cpu())


def test_align_reuses_buffers_with_stale_contents():
    # the same AlignBuffers serve two routings: nothing of the first may leak into the second
    from moeplan.kernels.align import AlignBuffers
    gen = torch.Generator().manual_seed(seed_for("align-reuse"))
    buf = AlignBuffers.allocate(12 * 2, 5, 16, DEVICE)
    for _ in range(2):
        buf.sorted_token_ids.fill_(-7)
        buf.expert_ids.fill_(-7)
        ids = _routing(12, 5, 2, gen)
        s, e, n = moe_align_block_size(ids, 16, 5, buffers=buf)
        _check_invariants(ids, s, e, n, 16, 5)
