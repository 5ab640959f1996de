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
Three EP modes (moeplan.engines.launch names them; the profile picks one):
  pad (default, with an expert_map): runs over the E_g global experts, tiles of other
      ranks' experts labelled -1 (the kernel writes zeros for them).
  `drop=True` (with an expert_map; vLLM's current rule): pairs whose expert is not local
      (map value -1) are not counted, ranked or padded; the runs are over the E local
      experts and expert_ids holds local ids (the GEMM2 output must then be zero-filled:
      dropped pairs get no row).
  `bucket=True` (SGLang; with or without an expert_map): E + 1 buckets over the local ids
      (topk_ids mapped through the expert_map when there is one): bucket 0 holds every pair
      whose id is -1 (another rank's expert), placed first and padded to BM like any run, its
      tiles labelled -1; local expert e is bucket e + 1, its tiles labelled e. Every pair gets
      a row (the -1 tiles write zeros into them), so nothing needs zero-filling. Without a
      map bucket 0 is empty; P still counts E + 1 buckets, as the engine sizes its buffers.
  num_tokens_post_padded (1,)  used rows (sum of the padded runs); tiles at or past it
                          are empty.

Two implementations:
  moe_align_block_size        Triton: for T <= SMALL_T one single-program kernel, else
                              a memset and three kernels (count with atomics; scan +
                              label tiles + write sentinels; scatter pairs); no host
                              sync either way.
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
from moeplan.engines.launch import max_padded_rows  # noqa: F401 - the one rule, re-exported for the kernel package


@dataclass
class AlignBuffers:
    """Preallocated outputs and scratch of one align call (reused across calls/replays)."""

    sorted_token_ids: torch.Tensor  # (P,) int32
    expert_ids: torch.Tensor  # (P // BM,) int32
    num_tokens_post_padded: torch.Tensor  # (1,) int32
    counts: torch.Tensor  # (B,) int32 scratch: pairs per bucket
    offsets: torch.Tensor  # (B,) int32 scratch: first padded row of each bucket
    ranks: torch.Tensor  # (T,) int32 scratch: position of each pair inside its bucket's run
    block_m: int
    num_experts: int  # B: buckets align counts into (E_g padding, E dropping, E + 1 bucketing)
    num_pairs: int

    @classmethod
    def allocate(cls, num_pairs: int, num_experts: int, block_m: int, device) -> "AlignBuffers":
        P = max_padded_rows(num_pairs, num_experts, block_m)
        i32 = dict(dtype=torch.int32, device=device)
        return cls(
            sorted_token_ids=torch.empty((P,), **i32),  # (P,) int32
            expert_ids=torch.empty((P // block_m,), **i32),  # (P // BM,) int32
            num_tokens_post_padded=torch.empty((1,), **i32),  # (1,) int32
            counts=torch.zeros((num_experts,), **i32),  # (B,) int32
            offsets=torch.empty((num_experts,), **i32),  # (B,) int32
            ranks=torch.empty((max(num_pairs, 1),), **i32),  # (T,) int32
            block_m=block_m, num_experts=num_experts, num_pairs=num_pairs,
        )

    def outputs(self):
        return self.sorted_token_ids, self.expert_ids, self.num_tokens_post_padded


@triton.jit
def _expert_of(ids_ptr, map_ptr, offs, mask, MAP_IDS: tl.constexpr, DROP: tl.constexpr, SHIFT: tl.constexpr):
    # the bucket each pair is sorted into, and whether it takes part: MAP_IDS reads the local
    # id from the EP map (-1: another rank's expert); DROP leaves the -1 pairs out; SHIFT
    # (bucket mode) moves every id up by one, so the -1 pairs land in bucket 0
    e = tl.load(ids_ptr + offs, mask=mask, other=0).to(tl.int32)
    if MAP_IDS:
        e = tl.load(map_ptr + e, mask=mask, other=-1)
    if DROP:
        mask = mask & (e >= 0)
        e = tl.where(mask, e, 0)
    if SHIFT:
        e = tl.where(mask, e + 1, 0)
    return e, mask


@triton.jit
def _count(ids_ptr, map_ptr, counts_ptr, offs, mask, MAP_IDS: tl.constexpr, DROP: tl.constexpr,
           SHIFT: tl.constexpr):
    # bump each pair's bucket counter; the old value is the pair's rank in the bucket's run
    e, mask = _expert_of(ids_ptr, map_ptr, offs, mask, MAP_IDS, DROP, SHIFT)
    # relaxed: only the returned ranks matter; kernel ends / block barriers order the rest
    rank = tl.atomic_add(counts_ptr + e, 1, mask=mask, sem="relaxed")
    return e, rank, mask


@triton.jit
def _scan_and_label(counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                    E, T, num_tiles, BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, ROWS: tl.constexpr,
                    JB: tl.constexpr, HAS_MAP: tl.constexpr, SHIFT: tl.constexpr):
    # From the final counts: padded runs, their first rows (offsets, for the scatter), the
    # used row count, the expert of every tile and the sentinels of every padding row.
    # Stores only, expert by expert: no dependent loads (latency) and no per-tile search.
    # E counts buckets; HAS_MAP labels tiles through the EP map (pad mode), SHIFT labels
    # bucket b with b - 1 (bucket mode: bucket 0's tiles get -1).
    e_offs = tl.arange(0, E_POW2)
    e_mask = e_offs < E
    cnt = tl.load(counts_ptr + e_offs, mask=e_mask, other=0, volatile=True)
    padded = (cnt + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded
    total = tl.sum(padded, axis=0)
    tl.store(offsets_ptr + e_offs, starts, mask=e_mask)
    tl.store(ntpp_ptr, total)
    # expert e owns tiles starts/BM .. ends/BM (its id mapped through the EP map)
    if HAS_MAP:
        e_val = tl.load(expert_map_ptr + e_offs, mask=e_mask, other=-1)
    elif SHIFT:
        e_val = e_offs - 1
    else:
        e_val = e_offs
    n_tiles = padded // BLOCK_M
    first_tile = starts // BLOCK_M
    for j in range(0, tl.max(n_tiles, axis=0)):
        tl.store(expert_ids_ptr + first_tile + j, e_val, mask=e_mask & (j < n_tiles))
    # sentinels in the padding rows of each expert's last tile
    fill = starts + cnt
    for j0 in tl.static_range(0, BLOCK_M, JB):
        jj = j0 + tl.arange(0, JB)
        rows = fill[:, None] + jj[None, :]  # (E_POW2, JB)
        tl.store(sorted_ptr + rows, tl.full((E_POW2, JB), 0, tl.int32) + T,
                 mask=e_mask[:, None] & (rows < ends[:, None]))
    # rows and tiles past the used ones
    P = num_tiles * BLOCK_M
    for r0 in range(0, P, ROWS):
        rr = r0 + tl.arange(0, ROWS)
        tl.store(sorted_ptr + rr, tl.full((ROWS,), 0, tl.int32) + T, mask=(rr >= total) & (rr < P))
    for t0 in range(0, num_tiles, ROWS):
        tt = t0 + tl.arange(0, ROWS)
        tl.store(expert_ids_ptr + tt, tl.full((ROWS,), -1, tl.int32),
                 mask=(tt * BLOCK_M >= total) & (tt < num_tiles))


@triton.jit
def _align_small_kernel(ids_ptr, counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr,
                        ntpp_ptr, E, T, num_tiles,
                        BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, BLOCK_T: tl.constexpr,
                        ROWS: tl.constexpr, JB: tl.constexpr, HAS_MAP: tl.constexpr, MAP_IDS: tl.constexpr,
                        DROP: tl.constexpr, SHIFT: tl.constexpr):
    # The whole align in ONE program (small T): zero the counters, count with atomics,
    # scan and label, scatter. Block-wide barriers order the global-memory phases among
    # this program's threads (volatile loads skip L1). One launch instead of four matters
    # at decode sizes, where each graph node costs microseconds.
    e_offs = tl.arange(0, E_POW2)
    tl.store(counts_ptr + e_offs, tl.zeros((E_POW2,), dtype=tl.int32), mask=e_offs < E)
    tl.debug_barrier()
    t = tl.arange(0, BLOCK_T)
    t_mask = t < T
    e, rank, t_mask = _count(ids_ptr, expert_map_ptr, counts_ptr, t, t_mask, MAP_IDS, DROP, SHIFT)
    tl.debug_barrier()
    _scan_and_label(counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                    E, T, num_tiles, BLOCK_M, E_POW2, ROWS, JB, HAS_MAP, SHIFT)
    tl.debug_barrier()
    start = tl.load(offsets_ptr + e, mask=t_mask, other=0, volatile=True)
    tl.store(sorted_ptr + start + rank, t, mask=t_mask)


@triton.jit
def _count_kernel(ids_ptr, map_ptr, counts_ptr, ranks_ptr, T, BLOCK: tl.constexpr, MAP_IDS: tl.constexpr,
                  DROP: tl.constexpr, SHIFT: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < T
    e, rank, mask = _count(ids_ptr, map_ptr, counts_ptr, offs, mask, MAP_IDS, DROP, SHIFT)
    tl.store(ranks_ptr + offs, rank, mask=mask)


@triton.jit
def _scan_kernel(counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                 E, T, num_tiles, BLOCK_M: tl.constexpr, E_POW2: tl.constexpr, ROWS: tl.constexpr,
                 JB: tl.constexpr, HAS_MAP: tl.constexpr, SHIFT: tl.constexpr):
    _scan_and_label(counts_ptr, offsets_ptr, expert_map_ptr, sorted_ptr, expert_ids_ptr, ntpp_ptr,
                    E, T, num_tiles, BLOCK_M, E_POW2, ROWS, JB, HAS_MAP, SHIFT)


@triton.jit
def _scatter_kernel(ids_ptr, map_ptr, offsets_ptr, ranks_ptr, sorted_ptr, T, BLOCK: tl.constexpr,
                    MAP_IDS: tl.constexpr, DROP: tl.constexpr, SHIFT: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < T
    e, mask = _expert_of(ids_ptr, map_ptr, offs, mask, MAP_IDS, DROP, SHIFT)
    start = tl.load(offsets_ptr + e, mask=mask, other=0)
    rank = tl.load(ranks_ptr + offs, mask=mask, other=0)
    tl.store(sorted_ptr + start + rank, offs, mask=mask)


SMALL_T = 4096  # up to this many pairs, align runs as one single-program kernel


def _buckets(num_experts: int, expert_map, drop: bool, bucket: bool) -> tuple[int, bool, bool]:
    """(counters align sorts into, drop, bucket) after checking the mode."""
    if drop and bucket:
        raise ValueError("align: drop and bucket are two EP modes; pick one")
    drop = bool(drop and expert_map is not None)
    return num_experts + (1 if bucket else 0), drop, bool(bucket)


def moe_align_block_size(
    topk_ids: torch.Tensor,
    block_m: int,
    num_experts: int,
    expert_map: Optional[torch.Tensor] = None,
    buffers: Optional[AlignBuffers] = None,
    drop: bool = False,
    bucket: bool = False,
):
    """Triton align. topk_ids (M, topk) int32/int64 global expert ids in [0, E_g).

    Returns (sorted_token_ids (P,), expert_ids (P // BM,), num_tokens_post_padded (1,)).
    `buffers` (from AlignBuffers.allocate with the bucket count: num_experts, + 1 with
    `bucket`) makes the call allocation-free. With `drop` or `bucket`, `num_experts` is the
    local expert count (module doc).
    """
    B, drop, bucket = _buckets(num_experts, expert_map, drop, bucket)
    T = topk_ids.numel()
    if buffers is None:
        buffers = AlignBuffers.allocate(T, B, block_m, topk_ids.device)
    elif (buffers.block_m, buffers.num_experts, buffers.num_pairs) != (block_m, B, T):
        raise ValueError("align buffers were allocated for another (T, buckets, BLOCK_SIZE_M)")
    ids = topk_ids.reshape(-1)
    b = buffers
    num_tiles = b.expert_ids.numel()
    e_pow2 = next_pow2(B)
    emap = expert_map if expert_map is not None else b.counts
    # dropped / bucketed pairs are mapped while counting: the tiles then carry local ids (or
    # -1 for bucket 0), no map needed; only the pad mode labels tiles through the map
    map_ids = expert_map is not None and (drop or bucket)
    modes = dict(MAP_IDS=map_ids, DROP=drop, SHIFT=bucket)
    common = dict(BLOCK_M=block_m, E_POW2=e_pow2, ROWS=1024, JB=max(1, min(block_m, 4096 // e_pow2)),
                  HAS_MAP=expert_map is not None and not map_ids, SHIFT=bucket)
    if T <= SMALL_T:
        _align_small_kernel[(1,)](
            ids, b.counts, b.offsets, emap, b.sorted_token_ids, b.expert_ids, b.num_tokens_post_padded,
            B, T, num_tiles, BLOCK_T=next_pow2(max(T, 1)), num_warps=4 if T <= 1024 else 8,
            MAP_IDS=map_ids, DROP=drop, **common)
        return b.outputs()
    BLOCK = 1024
    b.counts.zero_()
    _count_kernel[(cdiv(T, BLOCK),)](ids, emap, b.counts, b.ranks, T, BLOCK=BLOCK, num_warps=4, **modes)
    _scan_kernel[(1,)](b.counts, b.offsets, emap, b.sorted_token_ids, b.expert_ids, b.num_tokens_post_padded,
                       B, T, num_tiles, num_warps=8, **common)
    _scatter_kernel[(cdiv(T, BLOCK),)](ids, emap, b.offsets, b.ranks, b.sorted_token_ids, T, BLOCK=BLOCK,
                                       num_warps=4, **modes)
    return b.outputs()


def moe_align_block_size_torch(
    topk_ids: torch.Tensor,
    block_m: int,
    num_experts: int,
    expert_map: Optional[torch.Tensor] = None,
    drop: bool = False,
    bucket: bool = False,
):
    """Pure-torch align with the same outputs (pairs inside an expert's run in index order).

    No host sync (no bincount/nonzero/.item()), so it is capturable too. `drop` / `bucket`:
    as `moe_align_block_size` (num_experts local; non-local pairs left out / in bucket 0).
    """
    device = topk_ids.device
    ids = topk_ids.reshape(-1).to(torch.int64)  # (T,)
    T = ids.numel()
    B, drop, bucket = _buckets(num_experts, expert_map, drop, bucket)
    P = max_padded_rows(T, B, block_m)
    if drop or (bucket and expert_map is not None):
        local = expert_map.to(torch.int64)[ids]  # (T,) local ids or -1
    else:
        local = ids
    if drop:
        # dropped pairs go to an extra bucket E that gets no rows
        ids = torch.where(local >= 0, local, torch.full_like(local, num_experts))
    elif bucket:
        ids = local + 1  # bucket 0: the -1 pairs; bucket e + 1: local expert e
    buckets = B + (1 if drop else 0)
    counts = torch.zeros(buckets, dtype=torch.int64, device=device)  # (B,) (+1 dropped)
    counts.scatter_add_(0, ids, torch.ones_like(ids))
    padded = (counts + block_m - 1) // block_m * block_m  # (B,) (+1)
    if drop:
        padded[num_experts] = 0
    ends = torch.cumsum(padded, 0)  # (B,) inclusive
    starts = ends - padded
    first_pair = torch.cumsum(counts, 0) - counts  # (B,) first sorted index of each bucket
    order = torch.argsort(ids, stable=True)  # (T,) pairs sorted by bucket
    e_sorted = ids[order]
    rank = torch.arange(T, device=device) - first_pair[e_sorted]
    sorted_ids = torch.full((P + (T if drop else 0),), T, dtype=torch.int32, device=device)  # (P,) (+ spill)
    # dropped pairs are written past P (starts[E] = used rows) and cut off below
    sorted_ids[starts[e_sorted] + rank] = order.to(torch.int32)
    sorted_ids = sorted_ids[:P]
    total = ends[-1:].to(torch.int32)  # (1,)
    tile_rows = torch.arange(P // block_m, device=device) * block_m  # (P // BM,)
    e_tile = torch.searchsorted(ends, tile_rows, right=True)  # (P // BM,) bucket of each tile
    in_use = tile_rows < ends[-1]
    e_tile = e_tile.clamp(max=B - 1)
    if bucket:
        e_tile = e_tile - 1  # bucket 0's tiles: -1
    elif expert_map is not None and not drop:
        e_tile = expert_map.to(torch.int64)[e_tile]
    expert_ids = torch.where(in_use, e_tile, torch.full_like(e_tile, -1)).to(torch.int32)
    return sorted_ids, expert_ids, total
