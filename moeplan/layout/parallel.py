"""TP/DP/EP layouts of the fused-MoE layer: what every device holds.

Mirrors the engine's `FusedMoEParallelConfig.make` for every device at once, with no
distributed runtime. A device is a (dp_rank, tp_rank) pair of the attention layout;
its global index is `dp_rank * tp + tp_rank`.

- Without EP the MoE weights are sharded along N over all dp*tp devices (TP is
  flattened across DP): MoE tp_size = dp*tp, tp_rank = dp_rank*tp + tp_rank.
- With EP (and dp*tp > 1) the same flattened group becomes the EP group: each device
  holds whole experts (MoE tp_size 1, N = full intermediate size).

Letters: E experts, N intermediate size per shard, K hidden size.
Pure Python: no torch/triton import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from moeplan.base.errors import LayoutError
from moeplan.base.safeio import check_int, shown

PLACEMENTS = ("linear", "round_robin")
# The largest tp, dp and tp*dp moeplan plans for: the plan lists every device (and, without
# EP, every expert on every device), so the bound keeps a typo from exhausting memory.
MAX_WORLD = 1024
ALL2ALL_BACKENDS = (
    "naive",
    "allgather_reducescatter",
    "pplx",
    "deepep_high_throughput",
    "deepep_low_latency",
    "flashinfer_all2allv",
)


@dataclass(frozen=True)
class Layout:
    """The user's parallel layout: attention TP and DP sizes, and whether MoE uses EP."""

    tp: int = 1
    dp: int = 1
    ep: bool = False
    placement: str = "linear"
    all2all_backend: str = "allgather_reducescatter"

    def __post_init__(self):
        for name in ("tp", "dp"):
            check_int(f"--{name}", getattr(self, name), 1, MAX_WORLD, LayoutError)
        if self.tp * self.dp > MAX_WORLD:
            raise LayoutError(f"--tp {self.tp} x --dp {self.dp} = {self.tp * self.dp} devices is out of range; "
                              f"valid: tp*dp in 1..{MAX_WORLD}")
        if self.placement not in PLACEMENTS:
            raise LayoutError(f"placement {shown(self.placement)} is unknown; valid: {', '.join(PLACEMENTS)}")
        if self.all2all_backend not in ALL2ALL_BACKENDS:
            raise LayoutError(
                f"all2all backend {shown(self.all2all_backend)} is unknown; valid: {', '.join(ALL2ALL_BACKENDS)}")

    @property
    def world_size(self) -> int:
        return self.tp * self.dp

    @property
    def use_ep(self) -> bool:
        # EP is only considered when there is more than one device.
        return self.ep and self.world_size > 1

    def describe(self) -> str:
        s = f"TP={self.tp} DP={self.dp}"
        s += f" EP={self.world_size} ({self.placement})" if self.use_ep else " EP=off"
        return s


@dataclass(frozen=True)
class DeviceRanks:
    """The MoE-layer ranks of one device, as the engine's FusedMoEParallelConfig has them."""

    device: int
    tp_size: int
    tp_rank: int
    dp_size: int
    dp_rank: int
    ep_size: int
    ep_rank: int
    use_ep: bool
    all2all_backend: str = "allgather_reducescatter"

    @property
    def use_all2all_kernels(self) -> bool:
        return self.dp_size > 1 and self.use_ep

    @property
    def use_pplx_kernels(self) -> bool:
        return self.use_all2all_kernels and self.all2all_backend == "pplx"

    @property
    def use_deepep_ht_kernels(self) -> bool:
        return self.use_all2all_kernels and self.all2all_backend == "deepep_high_throughput"

    @property
    def use_deepep_ll_kernels(self) -> bool:
        return self.use_all2all_kernels and self.all2all_backend == "deepep_low_latency"


def make_ranks(tp_size_: int, dp_size_: int, use_ep_flag: bool, dp_rank: int, tp_rank_: int,
               all2all_backend: str = "allgather_reducescatter") -> DeviceRanks:
    """One device's MoE ranks given its attention (dp_rank, tp_rank): the engine's `make`."""
    use_ep = dp_size_ * tp_size_ > 1 and use_ep_flag
    dp_rank = dp_rank if dp_size_ > 1 else 0
    tp_rank = 0 if tp_size_ == 1 else tp_rank_
    # Flatten TP across DP: the MoE weights are sharded over all dp*tp devices.
    flat_size = dp_size_ * tp_size_
    flat_rank = dp_rank * tp_size_ + tp_rank
    device = flat_rank
    if not use_ep:
        return DeviceRanks(device, flat_size, flat_rank, dp_size_, dp_rank, 1, 0, False, all2all_backend)
    return DeviceRanks(device, 1, 0, dp_size_, dp_rank, flat_size, flat_rank, True, all2all_backend)


def device_ranks(layout: Layout) -> list[DeviceRanks]:
    """Ranks of every device of the layout, in global device order."""
    return [
        make_ranks(layout.tp, layout.dp, layout.ep, dp_rank, tp_rank, layout.all2all_backend)
        for dp_rank in range(layout.dp)
        for tp_rank in range(layout.tp)
    ]


def local_expert_ids(num_experts: int, ep_size: int, ep_rank: int, placement: str = "linear") -> list[int]:
    """Global expert ids held by EP rank `ep_rank` (all experts when ep_size is 1).

    The first `E % ep_size` ranks hold one extra expert (the engine's code; its docstring
    says the last rank, but the code wins).
    """
    if ep_size == 1:
        return list(range(num_experts))
    base, rem = divmod(num_experts, ep_size)
    if placement == "linear":
        count = base + (1 if ep_rank < rem else 0)
        start = ep_rank * base + min(ep_rank, rem)
        return list(range(start, start + count))
    if placement == "round_robin":
        return list(range(ep_rank, num_experts, ep_size))
    raise LayoutError(f"placement {placement!r} is unknown; valid: {', '.join(PLACEMENTS)}")


def expert_map(num_experts: int, local_ids: list[int]) -> list[int]:
    """Length-E map from global expert id to local index, -1 for experts held elsewhere."""
    m = [-1] * num_experts
    for i, g in enumerate(local_ids):
        m[g] = i
    return m


def check_layout(layout: Layout, num_experts: int, intermediate_size: int,
                 block_shape: Optional[list[int]] = None, fp8_block: bool = False) -> None:
    """Raise LayoutError when the engine would refuse this layout for this model."""
    world = layout.world_size
    if layout.use_ep:
        if world > num_experts:
            raise LayoutError(
                f"EP over {world} devices (tp={layout.tp} x dp={layout.dp}) exceeds the model's {num_experts} experts: "
                f"some EP rank would hold no expert; use at most {num_experts} devices or turn EP off")
        n_local = intermediate_size
        shards = 1
    else:
        if intermediate_size % world:
            valid = [d for d in range(1, min(intermediate_size, 64) + 1) if intermediate_size % d == 0]
            raise LayoutError(
                f"tp*dp = {world} does not divide the expert intermediate size {intermediate_size} "
                f"(without EP the experts are sharded over all tp*dp devices); valid tp*dp: "
                f"{', '.join(map(str, valid))}, or use --ep")
        n_local = intermediate_size // world
        shards = world
    if fp8_block and block_shape is not None and all(block_shape):
        bn, bk = block_shape
        if n_local % bn:
            raise LayoutError(
                f"per-device intermediate size {n_local} is not divisible by weight quantization block_n = {bn}; "
                f"use a layout with N a multiple of {bn} (fewer TP shards, or --ep)")
        if shards > 1 and n_local % bk:
            raise LayoutError(
                f"per-device intermediate size {n_local} is not divisible by weight quantization block_k = {bk}; "
                f"use a layout with N a multiple of {bk}")
