"""Layouts: the engine docstring's seven cases device by device, placement, validity."""

import pytest
from hypothesis import given, settings, strategies as st

from moeplan.base.errors import LayoutError
from moeplan.layout.parallel import Layout, check_layout, device_ranks, expert_map, local_expert_ids


def ranks(layout):
    """(TP, DP, EP) as {size, rank} triples per device, the docstring's notation."""
    return [((r.tp_size, r.tp_rank), (r.dp_size, r.dp_rank), (r.ep_size, r.ep_rank)) for r in device_ranks(layout)]


# The seven examples of FusedMoEParallelConfig.make's docstring.
@pytest.mark.parametrize("tp,dp,ep,expected", [
    # no parallelism: sizes as given, ranks 0
    (1, 1, False, [((1, 0), (1, 0), (1, 0))]),
    # TP=2: tensors sharded across 2 devices
    (2, 1, False, [((2, 0), (1, 0), (1, 0)), ((2, 1), (1, 0), (1, 0))]),
    # DP=2 without EP: TP is flattened across DP
    (1, 2, False, [((2, 0), (2, 0), (1, 0)), ((2, 1), (2, 1), (1, 0))]),
    # TP=2 DP=2 without EP: sharded over 4 devices
    (2, 2, False, [((4, 0), (2, 0), (1, 0)), ((4, 1), (2, 0), (1, 0)),
                   ((4, 2), (2, 1), (1, 0)), ((4, 3), (2, 1), (1, 0))]),
    # TP=2 with EP: experts split between 2 devices
    (2, 1, True, [((1, 0), (1, 0), (2, 0)), ((1, 0), (1, 0), (2, 1))]),
    # DP=2 with EP
    (1, 2, True, [((1, 0), (2, 0), (2, 0)), ((1, 0), (2, 1), (2, 1))]),
    # TP=2 DP=2 with EP: experts over 4 devices
    (2, 2, True, [((1, 0), (2, 0), (4, 0)), ((1, 0), (2, 0), (4, 1)),
                  ((1, 0), (2, 1), (4, 2)), ((1, 0), (2, 1), (4, 3))]),
])
def test_docstring_layouts(tp, dp, ep, expected):
    assert ranks(Layout(tp=tp, dp=dp, ep=ep)) == expected
    assert [r.use_ep for r in device_ranks(Layout(tp=tp, dp=dp, ep=ep))] == [ep and tp * dp > 1] * (tp * dp)


def test_ep_on_single_device_is_off():
    # EP is only considered when tp*dp > 1
    (r,) = device_ranks(Layout(tp=1, dp=1, ep=True))
    assert (r.use_ep, r.ep_size, r.tp_size) == (False, 1, 1)


def test_all2all_flags_follow_backend():
    rs = device_ranks(Layout(tp=1, dp=2, ep=True, all2all_backend="deepep_low_latency"))
    assert all(r.use_all2all_kernels and r.use_deepep_ll_kernels and not r.use_pplx_kernels for r in rs)
    rs = device_ranks(Layout(tp=2, dp=1, ep=True, all2all_backend="pplx"))
    assert not any(r.use_all2all_kernels or r.use_pplx_kernels for r in rs)  # dp == 1: no all2all
    rs = device_ranks(Layout(tp=1, dp=2, ep=False, all2all_backend="pplx"))
    assert not any(r.use_pplx_kernels for r in rs)  # no EP: no all2all


@given(tp=st.integers(1, 8), dp=st.integers(1, 8), ep=st.booleans())
def test_every_device_once(tp, dp, ep):
    rs = device_ranks(Layout(tp=tp, dp=dp, ep=ep))
    assert len(rs) == tp * dp
    assert [r.device for r in rs] == list(range(tp * dp))
    pairs = {(r.dp_rank, r.tp_rank if not r.use_ep else r.ep_rank) for r in rs}
    assert len(pairs) == tp * dp
    if ep and tp * dp > 1:
        assert sorted(r.ep_rank for r in rs) == list(range(tp * dp))
    else:
        assert sorted(r.tp_rank for r in rs) == list(range(tp * dp))


@settings(max_examples=200)
@given(E=st.integers(1, 300), ep=st.integers(1, 64), placement=st.sampled_from(["linear", "round_robin"]))
def test_ep_ranks_partition_experts(E, ep, placement):
    ep = min(ep, E)
    owned = [local_expert_ids(E, ep, r, placement) for r in range(ep)]
    flat = sorted(g for ids in owned for g in ids)
    assert flat == list(range(E))  # each expert exactly once
    counts = [len(ids) for ids in owned]
    base, rem = divmod(E, ep)
    if placement == "linear":  # the first E % ep ranks get one extra
        assert counts == [base + 1] * rem + [base] * (ep - rem)
    assert max(counts) - min(counts) <= 1


def test_linear_uneven_split():
    # 10 experts on 4 ranks: 3,3,2,2 with contiguous ids
    assert [local_expert_ids(10, 4, r) for r in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


def test_round_robin():
    assert local_expert_ids(10, 4, 1, "round_robin") == [1, 5, 9]


def test_expert_map():
    assert expert_map(6, [2, 3]) == [-1, -1, 0, 1, -1, -1]


@pytest.mark.parametrize("kwargs,needle", [
    (dict(tp=0), "--tp 0"),
    (dict(dp=-1), "--dp -1"),
    (dict(placement="zigzag"), "placement 'zigzag'"),
    (dict(all2all_backend="x"), "all2all backend 'x'"),
])
def test_bad_layout_values(kwargs, needle):
    with pytest.raises(LayoutError, match=needle):
        Layout(**kwargs)


def test_validity_rules():
    # tp*dp must divide N without EP
    with pytest.raises(LayoutError, match="does not divide the expert intermediate size 14336"):
        check_layout(Layout(tp=3), 8, 14336)
    # more EP ranks than experts
    with pytest.raises(LayoutError, match="exceeds the model's 8 experts"):
        check_layout(Layout(tp=16, ep=True), 8, 14336)
    # fp8 block: per-device N must be a multiple of block_n (DeepSeek-V3 N=2048 on TP32 -> 64)
    with pytest.raises(LayoutError, match="= 64 is not divisible by weight quantization block_n = 128|64 is not divisible"):
        check_layout(Layout(tp=32), 256, 2048, [128, 128], fp8_block=True)
    # split N must also be a multiple of block_k
    with pytest.raises(LayoutError, match="block_k = 96"):
        check_layout(Layout(tp=4), 256, 2048, [128, 96], fp8_block=True)
    check_layout(Layout(tp=1), 256, 2000, [125, 96], fp8_block=True)  # one shard: block_k not needed
    check_layout(Layout(tp=8, ep=True), 256, 2048, [128, 128], fp8_block=True)
