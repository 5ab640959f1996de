"""Search space pruning and the search strategies, on synthetic landscapes (no kernel)."""

import json
import math
import zlib

import pytest

from moeplan.engines.registry import PROFILES
from moeplan.base.errors import TuneError
from moeplan.engines.knobs import KernelConfig
from moeplan.engines.vllm import default_config
from moeplan.tune.checkpoint import Record, ResultStore
from moeplan.tune.search import ExhaustiveSearch, FastSearch, Point, SearchParams, tile_representatives
from moeplan.tune.space import (SearchSpace, ShapeInfo, engine_space, max_m_tiles, parse_search_space,
                                smem_bytes)

MIXTRAL = ShapeInfo(8, 7168, 4096, 2, "bf16")
DSV3_BLOCK = ShapeInfo(256, 256, 7168, 8, "fp8_w8a8", (128, 128))
SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]
OLD, NEW = PROFILES["vllm-0.12"], PROFILES["vllm-0.33"]


def test_engine_space_per_profile():
    # the engine's tuning script: 1,920 configs; profiles whose kernel runs BLOCK_SIZE_M = 8 add 384
    assert len(engine_space(OLD)) == 1920
    assert len(engine_space(NEW)) == len(engine_space()) == 2304
    assert {c.BLOCK_SIZE_M for c in engine_space(NEW)} == {8, 16, 32, 64, 128, 256}


def test_engine_space_and_quant_block_rule():
    space = engine_space(OLD)
    # the spec's rule alone (BK % bk, BN % bn) leaves 640 for [128,128] ...
    blk = [c for c in space if c.BLOCK_SIZE_K % 128 == 0 and c.BLOCK_SIZE_N % 128 == 0]
    assert len(blk) == 640
    sp = SearchSpace.build(space, DSV3_BLOCK, profile=OLD)
    # ... and BK=256 runs as 128 under the kernel's clamp: those twins are dropped too
    # (a BK=256 twin of a config pruned for shared memory counts as pruned for shared memory)
    assert sp.report.quant_block == 1280 and sp.report.clamped_k == 288 and sp.report.smem == 64
    assert sp.report.kept == 288
    assert all(c.BLOCK_SIZE_K == 128 and c.BLOCK_SIZE_N in (128, 256) for c in sp.configs)
    assert all(smem_bytes(c, DSV3_BLOCK) <= sp.smem_limit for c in sp.configs)


def test_smem_pruning_matches_formula():
    sp = SearchSpace.build(engine_space(), MIXTRAL)
    big = KernelConfig(128, 128, 128, 1, 8, 4)  # 4 stages x (32 KiB + 32 KiB) = 256 KiB > 227 KiB
    assert smem_bytes(big, MIXTRAL) == 4 * (128 * 128 * 2 * 2)
    assert big not in sp.configs
    assert KernelConfig(128, 128, 64, 1, 8, 4) in sp.configs
    assert sp.report.smem > 0 and sp.report.kept == len(sp.configs)


def test_pruning_never_empties():
    huge = [KernelConfig(256, 256, 256, 1, 8, 5)]
    sp = SearchSpace.build(huge, MIXTRAL, smem_limit=1024)
    assert sp.configs == huge and sp.report.fallback
    assert sp.candidates(1) == [KernelConfig(256, 256, 256, 1, 8, 5)]
    # a quant-block violation in every config: still one config left
    sp = SearchSpace.build([KernelConfig(16, 32, 64, 1, 4, 2)], DSV3_BLOCK)
    assert len(sp.configs) == 1


def test_block_tiles_that_divide_the_block_under_newer_profiles():
    # vllm-0.25+ keeps BN / BK tiles that divide the quant block (BN 32 / 64 with bn = 128: the
    # engine's decode tiles); vllm-0.12 keeps multiples only
    new = SearchSpace.build(engine_space(NEW), DSV3_BLOCK, profile=NEW)
    old = SearchSpace.build(engine_space(OLD), DSV3_BLOCK, profile=OLD)
    assert {c.BLOCK_SIZE_N for c in new.configs} == {32, 64, 128, 256}
    assert {c.BLOCK_SIZE_K for c in new.configs} == {64, 128}  # 256 runs as 128: a twin
    assert {c.BLOCK_SIZE_N for c in old.configs} == {128, 256}
    assert new.report.quant_block == 0 and old.report.quant_block == 1280
    assert NEW.block_tile_ok(64, 128) and not OLD.block_tile_ok(64, 128) and not NEW.block_tile_ok(96, 128)


def test_non_square_block_prunes_as_the_launcher_runs():
    # block [64, 128]: the kernel runs BK = min(BK, 64, 128) = 64, so BK 128 and 256 are one
    # program (the old pruner clamped to 128 and kept both, with a 128-wide smem estimate)
    shape = ShapeInfo(32, 512, 1024, 4, "fp8_w8a8", (64, 128))
    sp = SearchSpace.build(engine_space(OLD), shape, profile=OLD)
    assert {c.BLOCK_SIZE_K for c in sp.configs} == {128}
    assert sp.report.clamped_k > 0
    c = KernelConfig(64, 128, 128, 1, 4, 3)
    assert smem_bytes(c, shape) == 3 * (64 * 64 + 64 * 128)


def test_candidates_cap_block_m_and_collapse_groups():
    sp = SearchSpace.build(engine_space(OLD), MIXTRAL, profile=OLD)
    c1 = sp.candidates(1)
    assert {c.BLOCK_SIZE_M for c in c1} == {16}
    # M=1: at most 2 + 8*15 rows -> 8 tiles: GROUP_SIZE_M 16/32/64 are the same program order
    assert {c.GROUP_SIZE_M for c in c1} == {1, 16}
    big = sp.candidates(4096)
    assert {c.BLOCK_SIZE_M for c in big} == {16, 32, 64, 128, 256}
    assert len(big) == len(sp.configs)
    # exhaustive keeps every BLOCK_SIZE_M
    assert {c.BLOCK_SIZE_M for c in sp.candidates(1, prune_cannot_win=False)} == {16, 32, 64, 128, 256}


def test_group_collapse_is_exact():
    """The grouped pid -> (pid_m, pid_n) mapping is identical for every G >= the M tile count."""
    def mapping(G, num_pid_m, num_pid_n):
        out = []
        for pid in range(num_pid_m * num_pid_n):
            in_group = G * num_pid_n
            first = (pid // in_group) * G
            size = min(num_pid_m - first, G)
            out.append((first + (pid % in_group) % size, (pid % in_group) // size))
        return out
    for M in (1, 3, 8, 40):
        tiles = max_m_tiles(M, MIXTRAL, 16)
        ref = mapping(tiles, tiles, 5)
        for G in (tiles, tiles + 1, 64):
            assert mapping(G, tiles, 5) == ref


def test_max_m_tiles_matches_the_kernels_align():
    from moeplan.kernels.align import max_padded_rows
    for M in (1, 7, 64, 4096):
        for bm in (16, 64, 256):
            assert max_m_tiles(M, DSV3_BLOCK, bm, OLD) * bm == max_padded_rows(M * 8, 256, bm)
            # vllm-0.33: no align for M * topk * 4 <= E (M <= 8 here): one tile per pair
            want = M * 8 if M * 8 * 4 <= 256 else max_padded_rows(M * 8, 256, bm) // bm
            assert max_m_tiles(M, DSV3_BLOCK, bm, NEW) == want
    # EP under vllm-0.33: align sorts into the local experts only
    ep = ShapeInfo(32, 2048, 7168, 8, "fp8_w8a8", (128, 128), E_global=256)
    assert max_m_tiles(64, ep, 16, NEW) * 16 == max_padded_rows(64 * 8, 32, 16)
    assert max_m_tiles(64, ep, 16, OLD) * 16 == max_padded_rows(64 * 8, 256, 16)


@pytest.mark.parametrize("text, needle", [
    ("[]", "is empty"),
    ("{", "not valid JSON"),
    ('[{"BLOCK_SIZE_M": 16}]', "lacks BLOCK_SIZE_N"),
    ('[{"BLOCK_SIZE_M": 24, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 2}]',
     "BLOCK_SIZE_M=24 is not a power of two"),
    ('[{"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 3, "num_stages": 2}]',
     "num_warps=3"),
    ('{"BLOCK_SIZE_M": [16]}', "missing BLOCK_SIZE_N"),
    ('"x"', "expected a JSON list"),
])
def test_search_space_file_errors(text, needle):
    with pytest.raises(TuneError, match=needle.replace("(", r"\(")):
        parse_search_space(text, "f.json")


def test_search_space_product_form():
    obj = {"BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [64], "BLOCK_SIZE_K": [64, 128], "GROUP_SIZE_M": [1],
           "num_warps": [4], "num_stages": [2, 3]}
    assert len(parse_search_space(json.dumps(obj), "f")) == 8


# ---- strategies on a synthetic landscape ----------------------------------------------------

def landscape(c: KernelConfig, M: int, shape: ShapeInfo) -> float:
    """Roofline-like cost with tile efficiency and a deterministic 0-10% roughness."""
    tpe = max(1.0, M * shape.topk / shape.E)
    pad = math.ceil(tpe / c.BLOCK_SIZE_M) * c.BLOCK_SIZE_M / tpe
    eff = min(1.0, c.BLOCK_SIZE_M * c.BLOCK_SIZE_N / 16384) ** 0.5
    eff *= 1.0 if c.num_warps == (8 if c.BLOCK_SIZE_M * c.BLOCK_SIZE_N >= 16384 else 4) else 0.85
    eff *= {2: 0.8, 3: 1.0, 4: 0.97, 5: 0.93}[c.num_stages] * (1.0 if c.BLOCK_SIZE_K in (64, 128) else 0.9)
    mem = shape.E * 3 * shape.N * shape.K * 2 / 3e12 * 1e6
    comp = 2 * M * shape.topk * 3 * shape.N * shape.K * pad / (700e12 * eff) * 1e6
    rough = zlib.crc32(f"{c.short()}|{M}".encode()) % 1000 / 1e4
    return max(mem * (1 + 0.1 * (c.BLOCK_SIZE_N < 64)), comp) * (1 + rough)


def drive(strategy, shape, fail=None, wrong=None):
    """Run a strategy's rounds, answering from the landscape; returns points measured."""
    n = 0
    for pts in strategy.rounds():
        assert pts, "a round must request something"
        for p in pts:
            n += 1
            if fail and p.config == fail:
                strategy.store.add(Record(p.phase, p.M, p.config, "compile_error", error="x"))
            elif p.phase == "check":
                bad = wrong is not None and p.config in wrong
                strategy.store.add(Record("check", p.M, p.config, "wrong" if bad else "ok"))
            elif p.phase == "ab":  # the pick and the default, interleaved: the landscape has no noise
                t, td = landscape(p.config, p.M, shape), landscape(strategy.defaults[p.M], p.M, shape)
                strategy.store.add(Record("ab", p.M, p.config, "ok", t, t, t, 8, rounds=((t, td),) * 8))
            else:
                t = landscape(p.config, p.M, shape)
                strategy.store.add(Record(p.phase, p.M, p.config, "ok", t, t, t, 1))
    return n


def make(cls, shape, sizes, store=None):
    sp = SearchSpace.build(engine_space(), shape)
    d = {M: default_config(M, shape.E, shape.N, shape.K, shape.topk,
                           "fp8_w8a8" if shape.scheme == "fp8_w8a8" else None, shape.block_shape) for M in sizes}
    return cls(sp, sizes, store or ResultStore(), d, None, SearchParams())


@pytest.mark.parametrize("shape", [MIXTRAL, DSV3_BLOCK], ids=["mixtral", "dsv3-fp8-block"])
def test_fast_lands_within_3pct_of_exhaustive(shape):
    sizes = [1, 16, 128, 1024, 4096]
    fast = make(FastSearch, shape, sizes)
    n_fast = drive(fast, shape)
    ex = make(ExhaustiveSearch, shape, sizes)
    n_ex = drive(ex, shape)
    assert n_fast < n_ex / 2
    for M in sizes:
        tf = landscape(fast.winners[M], M, shape)
        te = landscape(ex.winners[M], M, shape)
        assert tf <= te * 1.03, (M, fast.winners[M], ex.winners[M])


def test_replay_from_a_partial_store_gives_the_same_decisions():
    sizes = [2, 64, 2048]
    full = make(FastSearch, MIXTRAL, sizes)
    drive(full, MIXTRAL)
    # keep only the first half of the records (a run killed midway), then resume
    recs = list(full.store)[: len(full.store) // 2]
    resumed = make(FastSearch, MIXTRAL, sizes, ResultStore(recs))
    n = drive(resumed, MIXTRAL)
    assert resumed.winners == full.winners
    assert n == len(full.store) - len(recs)  # nothing measured twice
    assert set(resumed.store) == set(full.store)  # ... and exactly the same points
    # a finished job replayed from its complete store asks for nothing at all
    replay = make(FastSearch, MIXTRAL, sizes, ResultStore(list(full.store)))
    assert list(replay.rounds()) == []
    assert replay.winners == full.winners


def test_replay_ignores_records_of_later_rounds():
    """Decisions see only the points asked for so far, not what a later round measured."""
    sizes = [64]
    full = make(FastSearch, MIXTRAL, sizes)
    drive(full, MIXTRAL)
    # a record a later round would have produced, made to look like the best config: in a
    # resumed run it is in the store from the start, yet the early rounds must not react to it
    sp = full.space
    outsider = next(c for c in sp.candidates(64) if not full.store.has("screen", 64, c))
    store = ResultStore(list(full.store) + [Record("screen", 64, outsider, "ok", 1e-3, 1e-3, 1e-3, 1)])
    again = make(FastSearch, MIXTRAL, sizes, store)
    assert list(again.rounds()) == []
    assert again.winners == full.winners


def test_gate_disqualifies_wrong_configs_and_failures_score_infinity():
    sizes = [256]
    first = make(FastSearch, MIXTRAL, sizes)
    drive(first, MIXTRAL)
    best = first.winners[256]
    again = make(FastSearch, MIXTRAL, sizes)
    drive(again, MIXTRAL, wrong={best})
    assert again.winners[256] not in (None, best)
    assert again.store.get("check", 256, best).status == "wrong"
    # a config that fails to compile is measured once, ranks last, and the search goes on
    failing = make(FastSearch, MIXTRAL, sizes)
    drive(failing, MIXTRAL, fail=best)
    assert failing.winners[256] not in (None, best)
    assert failing.store.get("screen", 256, best).score == float("inf")


def test_tile_representatives_cover_every_tile_shape():
    sp = SearchSpace.build(engine_space(), MIXTRAL)
    reps = tile_representatives(sp.configs)
    shapes = {(c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, c.BLOCK_SIZE_K) for c in sp.configs}
    assert len(reps) == len(shapes)
    assert Point("screen", 1, reps[0]) < Point("screen", 2, reps[0])
