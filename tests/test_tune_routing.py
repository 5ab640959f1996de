"""Routing pools (uniform, zipf, captured ids) and the checkpoint's record log."""

import json

import pytest
import torch

from moeplan.base.errors import TuneError
from moeplan.engines.knobs import KernelConfig
from moeplan.tune.checkpoint import Checkpoint, Record
from moeplan.tune.routing import make_pools, parse_routing, routing_stats


def test_uniform_and_zipf_pools_are_deterministic_and_valid():
    for spec in (parse_routing("uniform"), parse_routing("zipf:1.5")):
        a = make_pools(spec, [1, 64], 16, 4, seed=3, draws=4)
        b = make_pools(spec, [1, 64], 16, 4, seed=3, draws=4)
        for M in (1, 64):
            ids, w = a[M]
            assert ids.shape == (4, M, 4) and ids.dtype == torch.int32 and w.dtype == torch.float32
            assert torch.equal(ids, b[M][0])
            assert int(ids.min()) >= 0 and int(ids.max()) < 16
            # top-k ids of a token are distinct experts
            assert all(len(set(row.tolist())) == 4 for row in ids.reshape(-1, 4))
            assert torch.allclose(w.sum(-1), torch.ones(4, M), atol=1e-5)
    # zipf concentrates the load: its busiest expert gets more than uniform's
    u = routing_stats(make_pools(parse_routing("uniform"), [256], 64, 2, draws=4)[256][0], None, 64)
    z = routing_stats(make_pools(parse_routing("zipf:1.2"), [256], 64, 2, draws=4)[256][0], None, 64)
    assert z.max_tokens_per_expert > u.max_tokens_per_expert


def test_captured_ids_file(tmp_path):
    ids = torch.randint(0, 8, (100, 2))
    ids[:, 1] = (ids[:, 0] + 1) % 8
    p = tmp_path / "ids.pt"
    torch.save(ids, p)
    pools = make_pools(parse_routing(str(p)), [5], 8, 2, draws=3)
    got = pools[5][0]
    rows = {tuple(r) for r in ids.tolist()}
    assert all(tuple(r) in rows for r in got.reshape(-1, 2).tolist())
    j = tmp_path / "ids.json"
    j.write_text(json.dumps([[0, 9]]))
    with pytest.raises(TuneError, match="expert ids span 0..9; valid: 0..7"):
        make_pools(parse_routing(str(j)), [1], 8, 2)
    j.write_text(json.dumps([[0, 1, 2]]))
    with pytest.raises(TuneError, match=r"expected \(tokens, 2\)"):
        make_pools(parse_routing(str(j)), [1], 8, 2)


def test_routing_stats_under_ep():
    ids = torch.tensor([[[0, 1], [2, 3], [0, 5]]], dtype=torch.int32)  # one draw, 3 tokens, top-2
    st = routing_stats(ids, local=[0, 1], num_experts=8)
    assert st.max_tokens_per_expert == 2 and st.mean_experts_hit == 2 and st.mean_local_pairs == 3


def test_checkpoint_ignores_a_torn_last_line(tmp_path):
    ck = Checkpoint(tmp_path / "ck")
    ck.start({"a": 1})
    r1 = Record("screen", 8, KernelConfig(16, 32, 64, 1, 4, 2), "ok", 1.0, 1.0, 1.0, 1)
    r2 = Record("screen", 8, KernelConfig(16, 64, 64, 1, 4, 2), "crash", error="died")
    ck.append([r1, r2])
    ck.close()
    with open(ck.records_path, "a") as f:
        f.write('{"phase": "screen", "M": 8, "con')  # kill -9 in the middle of a write
    assert ck.load_records() == [r1, r2]
    ck2 = Checkpoint(tmp_path / "ck")
    ck2.append([r1])  # the next record starts on a fresh line
    ck2.close()
    assert ck2.load_records() == [r1, r2, r1]


def test_merged_shared_expert_is_hit_by_every_token_and_routed_part_stays_uniform():
    from moeplan.tune.routing import RoutingSpec, make_pools
    E, k = 16, 4  # 16 routed + 1 merged shared (id 16), top-(4+1)
    pools = make_pools(RoutingSpec("uniform"), [64], E + 1, k + 1, seed=3, draws=8, merged_shared=1)
    ids, w = pools[64]
    assert ids.shape == (8, 64, k + 1) and w.shape == (8, 64, k + 1)
    # every token hits the shared expert exactly once, in its last slot
    assert ((ids == E).sum(dim=-1) == 1).all()
    assert (ids[..., -1] == E).all()
    # the routed part: ids over the E routed experts only, distinct per token, close to uniform
    routed = ids[..., :k]
    assert int(routed.min()) >= 0 and int(routed.max()) < E
    assert (routed.sort(dim=-1).values.diff(dim=-1) > 0).all()
    counts = torch.bincount(routed.reshape(-1).long(), minlength=E).float()
    expect = 8 * 64 * k / E
    assert float(counts.min()) > 0.6 * expect and float(counts.max()) < 1.4 * expect
    # the routed part is the plain uniform pool over E with top-k
    plain = make_pools(RoutingSpec("uniform"), [64], E, k, seed=3, draws=8)[64][0]
    assert torch.equal(routed, plain)
    assert torch.allclose(w.sum(dim=-1), torch.ones(8, 64))
