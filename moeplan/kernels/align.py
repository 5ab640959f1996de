"""Align: sort the (token, slot) pairs by expert and pad each expert's run to a tile.

Dimension letters: M tokens, topk slots per token, T = M * topk pairs, E_g experts
(global ids, the values in topk_ids), BM = BLOCK_SIZE_M rows per tile.

Output (all int32 device tensors of STATIC size, so a call can be captured in a CUDA
graph and replayed with new topk_ids):
  sorted_token_ids  (P,)  pair indices grouped by expert; each expert's run padded up
                          to a multiple of BM with the sentinel T. P = max_padded_rows().
  expert_ids        (P // BM,)  the expert of each BM-row tile (mapped through
                          expert_map: -1 for experts another EP rank owns; -1 as well
                          for tiles past the used rows).
  num_tokens_post_padded (1,)  used rows (sum of the padded runs); tiles at or past it
                          are empty.

Two implementations:
  moe_align_block_size        Triton: for T <= SMALL_T one single-program kernel, else
                              three kernels (count with atomics, place tiles and
                              sentinels, scatter pairs); no host sync either way.
                              The order of the pairs inside one expert's run is not
                              deterministic (atomics); the set is.
  moe_align_block_size_torch  pure torch (scatter_add, stable argsort, cumsum,
                              searchsorted): the reference; also capturable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from moeplan.kernels._common import cdiv, next_pow2


def max_padded_rows(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the padded rows: T + min(E_g, T) * (BM - 1), rounded up to BM.

    At most min(E_g, T) experts are hit and each wastes at most BM - 1 rows.
    """
    rows = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return cdiv(max(rows, 1), block_m) * block_m


@dataclass
class AlignBuffers:
    """Preallocated outputs and scratch of one align call (reused across calls/replays)."""

    sorted_token_ids: torch.Tensor  # (P,) int32
    expert_ids: torch.Tensor  # (P // BM,) int32
    num_tokens_post_padded: torch.Tensor  # (1,) int32
    counts: torch.Tensor  # (E_g,) int32 scratch: pairs per expert
    offsets: torch.Tensor  # (E_g,) int32 scratch: first padded row of each expert
    ranks: torch.Tensor  # (T,) int32 scratch: position of each pair inside its expert's run
    block_m: int
    num_experts: int
    num_pairs: int

    @classmethod
    def allocate(cls, num_pairs: int, num_experts: int, block_m: int, device) -> "AlignBuffers":
        P = max_padded_rows(num_pairs, num_experts, block_m)
        i32 = dict(dtype=torch.int32, device=device)
        return cls(
            sorted_token_ids=torch.empty((P,), **i32),  # (P,) int32
            expert_ids=torch.empty((P // block_m,), **i32),  # (P // BM,) int32
            num_tokens_post_padded=torch.empty((1,), **i32),  # (1,) int32
            counts=torch.zeros((num_experts,), **i32),  # (E_g,) int32
            offsets=torch.empty((num_experts,), **i32),  # (E_g,) int32
            ranks=torch.empty((max(num_pairs, 1),), **i32),  # (T,) int32
            block_m=block_m, num_experts=num_experts, num_pairs=num_pairs,
        )

    def outputs(self):
        return self.sorted_token_ids, self.expert_ids, self.num_tokens_post_padded


@triton.jit
def _count_kernel(ids_ptr, counts_ptr, ranks_ptr, T, BLOCK: tl.constexpr):
    # One lane per (token, slot) pair: bump its expert's counter; the old value is the
    # pair's rank inside that expert's run.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < T
    e = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int32)
    rank = tl.atomic_add(counts_ptr + e, 1, mask=mask)
    tl.store(ranks_ptr + offs, rank, mask=mask)


@triton.jit
def _tiles_kernel(counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                  E, T, num_tiles,
                  BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, TILES: tl.constexpr,
                  HAS_MAP: tl.constexpr):
    # Every program recomputes the (cheap) exclusive scan of the padded counts, then
    # labels TILES tiles with their expert and writes the sentinel into their padding
    # rows. Program 0 also publishes the offsets and the used row count.
    pid = tl.program_id(0)
    e_offs = tl.arange(0, E_POW2)
    e_mask = e_offs < E
    cnt = tl.load(counts_ptr + e_offs, mask=e_mask, other=0)  # (E_POW2,)
    padded = (cnt + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)  # inclusive
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    if pid == 0:
        tl.store(offsets_ptr + e_offs, starts, mask=e_mask)
        tl.store(ntpp_ptr, total)

    tiles = pid * TILES + tl.arange(0, TILES)  # (TILES,)
    row0 = tiles * BLOCK_M
    # expert of a tile = number of experts whose padded run ends at or before its row
    ends_m = tl.where(e_mask, ends, 2147483647)
    e_tile = tl.sum((ends_m[None, :] <= row0[:, None]).to(tl.int32), axis=1)  # (TILES,)
    in_use = row0 < total
    onehot = (e_offs[None, :] == e_tile[:, None]) & in_use[:, None]
    t_start = tl.sum(tl.where(onehot, starts[None, :], 0), axis=1)  # (TILES,)
    t_count = tl.sum(tl.where(onehot, cnt[None, :], 0), axis=1)
    if HAS_MAP:
        e_out = tl.load(expert_map_ptr + e_tile, mask=in_use, other=-1)
    else:
        e_out = e_tile
    e_out = tl.where(in_use, e_out, -1)
    tl.store(expert_ids_ptr + tiles, e_out, mask=tiles < num_tiles)

    # rows of these tiles that hold no pair get the sentinel T
    j = tl.arange(0, BLOCK_M)
    rows = row0[:, None] + j[None, :]  # (TILES, BM)
    pos = rows - t_start[:, None]
    pad = (pos >= t_count[:, None]) | (~in_use[:, None])
    tl.store(sorted_ptr + rows, tl.full((TILES, BLOCK_M), 0, tl.int32) + T,
             mask=pad & (tiles[:, None] < num_tiles))


@triton.jit
def _align_small_kernel(ids_ptr, counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                        E, T, num_tiles,
                        BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, BLOCK_T: tl.constexpr,
                        TILES: tl.constexpr, HAS_MAP: tl.constexpr):
    # The whole align in ONE program (small T): zero the counters, count with atomics
    # (ranks), scan, label tiles and write sentinels, scatter. The block-wide barriers
    # order the global-memory phases among this program's threads; one launch instead of
    # four matters at decode batch sizes, where each graph node costs microseconds.
    e_offs = tl.arange(0, E_POW2)
    e_mask = e_offs < E
    tl.store(counts_ptr + e_offs, tl.zeros((E_POW2,), dtype=tl.int32), mask=e_mask)
    tl.debug_barrier()
    t = tl.arange(0, BLOCK_T)
    t_mask = t < T
    e = tl.load(ids_ptr + t, mask=t_mask, other=0).to(tl.int32)
    rank = tl.atomic_add(counts_ptr + e, 1, mask=t_mask)
    tl.debug_barrier()
    cnt = tl.load(counts_ptr + e_offs, mask=e_mask, other=0, volatile=True)
    padded = (cnt + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    tl.store(offsets_ptr + e_offs, starts, mask=e_mask)
    tl.store(ntpp_ptr, total)
    ends_m = tl.where(e_mask, ends, 2147483647)
    j = tl.arange(0, BLOCK_M)
    for tile0 in range(0, num_tiles, TILES):
        tiles = tile0 + tl.arange(0, TILES)
        row0 = tiles * BLOCK_M
        e_tile = tl.sum((ends_m[None, :] <= row0[:, None]).to(tl.int32), axis=1)
        in_use = row0 < total
        onehot = (e_offs[None, :] == e_tile[:, None]) & in_use[:, None]
        t_start = tl.sum(tl.where(onehot, starts[None, :], 0), axis=1)
        t_count = tl.sum(tl.where(onehot, cnt[None, :], 0), axis=1)
        if HAS_MAP:
            e_out = tl.load(expert_map_ptr + e_tile, mask=in_use, other=-1)
        else:
            e_out = e_tile
        e_out = tl.where(in_use, e_out, -1)
        tl.store(expert_ids_ptr + tiles, e_out, mask=tiles < num_tiles)
        rows = row0[:, None] + j[None, :]
        pad = ((rows - t_start[:, None]) >= t_count[:, None]) | (~in_use[:, None])
        tl.store(sorted_ptr + rows, tl.full((TILES, BLOCK_M), 0, tl.int32) + T,
                 mask=pad & (tiles[:, None] < num_tiles))
    tl.debug_barrier()
    start = tl.load(offsets_ptr + e, mask=t_mask, other=0, volatile=True)
    tl.store(sorted_ptr + start + rank, t, mask=t_mask)


SMALL_T = 4096  # up to this many pairs, align runs as one single-program kernel


@triton.jit
def _scatter_kernel(ids_ptr, offsets_ptr, ranks_ptr, sorted_ptr, T, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < T
    e = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int32)
    start = tl.load(offsets_ptr + e, mask=mask, other=0)
    rank = tl.load(ranks_ptr + offs, mask=mask, other=0)
    tl.store(sorted_ptr + start + rank, offs, mask=mask)


def moe_align_block_size(
    topk_ids: torch.Tensor,
    block_m: int,
    num_experts: int,
    expert_map: Optional[torch.Tensor] = None,
    buffers: Optional[AlignBuffers] = None,
):
    """Triton align. topk_ids (M, topk) int32/int64 global expert ids in [0, E_g).

    Returns (sorted_token_ids (P,), expert_ids (P // BM,), num_tokens_post_padded (1,)).
    `buffers` (from AlignBuffers.allocate) makes the call allocation-free.
    """
    T = topk_ids.numel()
    if buffers is None:
        buffers = AlignBuffers.allocate(T, num_experts, block_m, topk_ids.device)
    elif (buffers.block_m, buffers.num_experts, buffers.num_pairs) != (block_m, num_experts, T):
        raise ValueError("align buffers were allocated for another (T, E, BLOCK_SIZE_M)")
    ids = topk_ids.reshape(-1)
    b = buffers
    num_tiles = b.expert_ids.numel()
    e_pow2 = next_pow2(num_experts)
    tiles = max(1, min(64, 8192 // e_pow2))
    tiles = 1 << (tiles.bit_length() - 1)  # power of two
    emap = expert_map if expert_map is not None else b.counts
    if 0 < T <= SMALL_T:
        _align_small_kernel[(1,)](
            ids, b.counts, b.offsets, emap, b.sorted_token_ids, b.expert_ids, b.num_tokens_post_padded,
            num_experts, T, num_tiles,
            BLOCK_M=block_m, E_POW2=e_pow2, BLOCK_T=next_pow2(T), TILES=tiles,
            HAS_MAP=expert_map is not None, num_warps=8 if T > 1024 else 4)
        return b.outputs()
    b.counts.zero_()
    BLOCK = 1024 if T > 256 else 256
    if T > 0:
        _count_kernel[(cdiv(T, BLOCK),)](ids, b.counts, b.ranks, T, BLOCK=BLOCK, num_warps=4)
    _tiles_kernel[(cdiv(num_tiles, tiles),)](
        b.counts, b.offsets, emap,
        b.sorted_token_ids, b.expert_ids, b.num_tokens_post_padded,
        num_experts, T, num_tiles,
        BLOCK_M=block_m, E_POW2=e_pow2, TILES=tiles, HAS_MAP=expert_map is not None, num_warps=4)
    if T > 0:
        _scatter_kernel[(cdiv(T, BLOCK),)](ids, b.offsets, b.ranks, b.sorted_token_ids, T,
                                            BLOCK=BLOCK, num_warps=4)
    return b.outputs()


def moe_align_block_size_torch(
    topk_ids: torch.Tensor,
    block_m: int,
    num_experts: int,
    expert_map: Optional[torch.Tensor] = None,
):
    """Pure-torch align with the same outputs (pairs inside an expert's run in index order).

    No host sync (no bincount/nonzero/.item()), so it is capturable too.
    """
    device = topk_ids.device
    ids = topk_ids.reshape(-1).to(torch.int64)  # (T,)
    T = ids.numel()
    P = max_padded_rows(T, num_experts, block_m)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)  # (E_g,)
    counts.scatter_add_(0, ids, torch.ones_like(ids))
    padded = (counts + block_m - 1) // block_m * block_m  # (E_g,)
    ends = torch.cumsum(padded, 0)  # (E_g,) inclusive
    starts = ends - padded
    first_pair = torch.cumsum(counts, 0) - counts  # (E_g,) first sorted index of each expert
    order = torch.argsort(ids, stable=True)  # (T,) pairs sorted by expert
    e_sorted = ids[order]
    rank = torch.arange(T, device=device) - first_pair[e_sorted]
    sorted_ids = torch.full((P,), T, dtype=torch.int32, device=device)  # (P,)
    sorted_ids[starts[e_sorted] + rank] = order.to(torch.int32)
    total = ends[-1:].to(torch.int32)  # (1,)
    tile_rows = torch.arange(P // block_m, device=device) * block_m  # (P // BM,)
    e_tile = torch.searchsorted(ends, tile_rows, right=True)  # (P // BM,)
    in_use = tile_rows < ends[-1]
    e_tile = e_tile.clamp(max=num_experts - 1)
    if expert_map is not None:
        e_tile = expert_map.to(torch.int64)[e_tile]
    expert_ids = torch.where(in_use, e_tile, torch.full_like(e_tile, -1)).to(torch.int32)
    return sorted_ids, expert_ids, total
