"""The evidence rule (interleaved A/B against the default config) and deterministic ties, on
synthetic stores: the strategy's rounds answered by a test landscape (no kernel)."""

import math
import statistics

import pytest

from moeplan.engines.knobs import KernelConfig
from moeplan.engines.vllm import default_config
from moeplan.tune.checkpoint import Record, ResultStore
from moeplan.tune.evidence import (AB_ROUNDS, INCONCLUSIVE, MIN_MARGIN, SPREAD_FACTOR, TIE_BAND, ab_order, ab_stats,
                                   distance,
                                   tie_ordered)
from moeplan.tune.search import ExhaustiveSearch, SearchParams
from moeplan.tune.space import SearchSpace, ShapeInfo

MIXTRAL = ShapeInfo(8, 7168, 4096, 2, "bf16")
M = 2
D = default_config(M, 8, 7168, 4096, 2, None, None)  # the engine's default at M=2
A = KernelConfig(16, 64, 64, 1, 4, 4)  # one knob from D (BK 128 -> 64)
B = KernelConfig(16, 128, 128, 1, 4, 4)  # one knob from D (BN 64 -> 128)
F = KernelConfig(16, 32, 64, 1, 4, 3)  # three knobs from D
SLOW = KernelConfig(64, 128, 64, 1, 8, 3)


def test_the_default_is_what_the_configs_here_assume():
    assert D == KernelConfig(16, 64, 128, 1, 4, 4)
    assert distance(A, D) == (1, 1.0) and distance(B, D) == (1, 1.0) and distance(F, D) == (3, 2.0)


def test_ab_stats_by_hand():
    rounds = [(98.0, 100.0), (99.0, 101.0), (97.0, 99.0), (98.5, 100.0)]
    st = ab_stats(rounds)
    a, b = [x for x, _ in rounds], [y for _, y in rounds]
    sa = statistics.stdev(a) / statistics.fmean(a)
    sb = statistics.stdev(b) / statistics.fmean(b)
    ratios = sorted(x / y for x, y in rounds)
    assert st.candidate_us == pytest.approx((98.0 + 98.5) / 2) and st.default_us == pytest.approx(100.0)
    assert st.candidate_spread == pytest.approx(sa) and st.default_spread == pytest.approx(sb)
    assert st.pooled_spread == pytest.approx(math.sqrt((sa ** 2 + sb ** 2) / 2))
    assert st.margin == pytest.approx(1 - (ratios[1] + ratios[2]) / 2)
    assert st.threshold == pytest.approx(max(MIN_MARGIN, SPREAD_FACTOR * st.pooled_spread))
    assert st.rounds == 4
    assert ab_stats([]) is None and ab_stats([(float("inf"), 1.0)]) is None


def test_abba_order():
    assert [ab_order(i) for i in range(4)] == [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]


def test_tie_order_only_reorders_inside_the_band():
    ranked = [(F, 100.0), (A, 100.5), (SLOW, 100.0 * (1 + TIE_BAND) + 0.1), (B, 200.0)]
    assert tie_ordered(ranked, [D]) == [A, F, SLOW, B]
    # a config outside the band never moves ahead, however close to the default
    assert tie_ordered([(SLOW, 100.0), (A, 102.0)], [D]) == [SLOW, A]


# ---- the strategy, driven by a landscape ------------------------------------------------------------

def rounds_of(a_us: float, b_us: float, noise_a: float = 0.0):
    """AB_ROUNDS pairs; the candidate's times swing by +-noise_a (alternating)."""
    return tuple((a_us * (1 + noise_a * (1 if i % 2 else -1)), b_us) for i in range(AB_ROUNDS))


def run(times: dict, ab: dict, space=(D, A, B, F, SLOW), store=None, wrong=(), crash_ab=False, ab_more=None):
    """Drive an exhaustive search over `space` at M: times[cfg] answers screen/confirm, ab[cfg]
    (candidate's, default's us, noise) the A/B and ab_more[cfg] its second batch of rounds (default:
    the same as the first); returns the strategy and the points measured."""
    sp = SearchSpace.build(list(space), MIXTRAL)
    st = ExhaustiveSearch(sp, [M], store or ResultStore(), {M: D}, None, SearchParams())
    asked = []
    for pts in st.rounds():
        for p in pts:
            asked.append(p)
            if p.phase == "check":
                st.store.add(Record("check", p.M, p.config, "wrong" if p.config in wrong else "ok"))
            elif p.phase in ("ab", "ab_more"):
                if crash_ab:
                    st.store.add(Record(p.phase, p.M, p.config, "crash", error="worker died"))
                    continue
                r = rounds_of(*(ab if p.phase == "ab" or ab_more is None else ab_more)[p.config])
                a = [x for x, _ in r]
                st.store.add(Record(p.phase, p.M, p.config, "ok", statistics.median(a), min(a), max(a), len(r),
                                    rounds=r))
            else:
                t = times.get(p.config, 300.0)
                st.store.add(Record(p.phase, p.M, p.config, "ok", t, t, t, 1))
    return st, asked


def test_a_candidate_ahead_by_less_than_the_threshold_gives_the_default():
    # confirm says A is 3% ahead; the interleaved A/B says 0.7%: inside the 1% floor
    st, asked = run({D: 100.0, A: 97.0}, {A: (99.3, 100.0, 0.0)})
    assert st.gated[M] == A and st.winners[M] == D
    dec = st.decisions[M]
    assert dec.kind == "default" and dec.replaced and dec.text == "default: margin 0.7% < threshold 1.0%"
    # the default entry passed the gate before it was written
    assert any(p.phase == "check" and p.config == D for p in asked)
    assert st.store.get("check", M, D).ok


def test_a_candidate_clearly_ahead_is_written():
    st, _ = run({D: 100.0, A: 96.0}, {A: (96.8, 100.0, 0.0)})
    assert st.winners[M] == A
    dec = st.decisions[M]
    assert dec.kind == "winner" and dec.text == "winner: margin 3.2% >= 1.0%"
    assert dec.stats.margin == pytest.approx(0.032) and dec.stats.threshold == MIN_MARGIN


def test_a_noisy_candidate_gives_the_default():
    # 3% ahead on the median, but its rounds swing +-3%: threshold 2 x pooled spread > 3%
    st, _ = run({D: 100.0, A: 96.0}, {A: (97.0, 100.0, 0.03)})
    dec = st.decisions[M]
    assert dec.stats.margin > MIN_MARGIN  # it would pass on the 1% floor alone
    assert dec.stats.threshold > dec.stats.margin
    assert st.winners[M] == D and dec.kind == "default"
    assert dec.text.startswith("default: margin ") and "< threshold" in dec.text


def test_an_inconclusive_ab_is_measured_again_and_decided_on_all_rounds():
    # first batch: 3% ahead with rounds swinging +-3% (threshold ~6%: short, but by less than half);
    # the second batch is quiet and 4% ahead: sixteen rounds, half of them swinging, clear the bar
    st, asked = run({D: 100.0, A: 96.0}, {A: (97.0, 100.0, 0.03)}, ab_more={A: (96.0, 100.0, 0.0)})
    assert [p.phase for p in asked].count("ab_more") == 1
    dec = st.decisions[M]
    assert dec.stats.rounds == 2 * AB_ROUNDS and dec.stats.margin >= dec.stats.threshold
    assert st.winners[M] == A and dec.text.endswith(f" over {2 * AB_ROUNDS} rounds")
    first = ab_stats(st.store.get("ab", M, A).rounds)
    assert first.threshold > first.margin >= INCONCLUSIVE * first.threshold  # why it was extended


def test_a_clear_loss_is_not_measured_again():
    # 0.3% ahead against a 1% threshold: short by more than half, decided on one batch
    st, asked = run({D: 100.0, A: 97.0}, {A: (99.7, 100.0, 0.0)})
    assert "ab_more" not in [p.phase for p in asked]
    assert st.winners[M] == D and st.decisions[M].stats.rounds == AB_ROUNDS


def test_a_failed_ab_keeps_the_default():
    st, _ = run({D: 100.0, A: 90.0}, {}, crash_ab=True)
    assert st.winners[M] == D and st.decisions[M].text == "default: the A/B failed (crash)"


def test_a_default_that_fails_the_gate_leaves_the_gated_pick():
    st, _ = run({D: 100.0, A: 97.0}, {A: (99.5, 100.0, 0.0)}, wrong={D})
    assert st.winners[M] == A and "default config failed the gate (wrong)" in st.decisions[M].text


def test_the_default_needs_no_ab_when_it_wins_or_ties():
    st, asked = run({D: 100.0, A: 101.0}, {})
    assert st.winners[M] == D and st.decisions[M].text == "default: is the fastest"
    assert not any(p.phase == "ab" for p in asked)
    # A 0.5% ahead on confirm: inside the tie band, the default is the closest to itself
    st, asked = run({D: 100.0, A: 99.5}, {})
    assert st.winners[M] == D and st.decisions[M].text == "default: within the 1.0% tie band of the fastest"
    assert not any(p.phase == "ab" for p in asked)


@pytest.mark.parametrize("ta, tf", [(95.0, 95.4), (95.4, 95.0)])
def test_ties_resolve_the_same_whatever_the_noise_order(ta, tf):
    # A and F within the band, either one ahead by noise: A (one knob from the default) is picked
    st, _ = run({D: 100.0, A: ta, F: tf}, {A: (95.0, 100.0, 0.0), F: (95.0, 100.0, 0.0)})
    assert st.gated[M] == A and st.winners[M] == A


@pytest.mark.parametrize("ta, tb", [(95.0, 95.3), (95.3, 95.0)])
def test_equally_close_ties_fall_back_to_config_order(ta, tb):
    st, _ = run({D: 100.0, A: ta, B: tb}, {A: (95.0, 100.0, 0.0), B: (95.0, 100.0, 0.0)})
    assert st.gated[M] == min(A, B) == A


def test_a_space_without_the_default_writes_its_best_and_says_it_is_slower():
    st, _ = run({D: 100.0, A: 103.0, F: 104.0}, {A: (103.0, 100.0, 0.0)}, space=(A, F, SLOW))
    assert st.winners[M] == A
    dec = st.decisions[M]
    assert dec.kind == "excluded" and dec.slower and dec.text == "space excludes default: 3.0% slower than the default"
    # ... faster: said too, not flagged
    st, _ = run({D: 100.0, A: 97.0}, {A: (97.9, 100.0, 0.0)}, space=(A, F, SLOW))
    assert st.winners[M] == A and not st.decisions[M].slower
    assert st.decisions[M].text == "space excludes default: 2.1% faster than the default"


def test_resume_inside_the_ab_phase_makes_the_same_decisions():
    sizes = [2, 16, 64]
    defaults = {m: default_config(m, 8, 7168, 4096, 2, None, None) for m in sizes}
    sp = SearchSpace.build([D, A, B, F, SLOW, *defaults.values()], MIXTRAL)

    def drive(st):
        n = 0
        for pts in st.rounds():
            for p in pts:
                n += 1
                if p.phase == "check":
                    st.store.add(Record("check", p.M, p.config, "ok"))
                elif p.phase == "ab":
                    margin = {2: 0.005, 16: 0.03, 64: 0.02}[p.M]
                    r = rounds_of(100 * (1 - margin), 100.0, 0.002)
                    st.store.add(Record("ab", p.M, p.config, "ok", r[0][0], r[0][0], r[0][0], len(r), rounds=r))
                else:
                    t = 100.0 if p.config == defaults[p.M] else 95.0 + (p.config.BLOCK_SIZE_N / 64) + p.config.num_stages / 10
                    st.store.add(Record(p.phase, p.M, p.config, "ok", t, t, t, 1))
        return n

    full = ExhaustiveSearch(sp, sizes, ResultStore(), defaults, None, SearchParams())
    drive(full)
    recs = list(full.store)
    first_ab = next(i for i, r in enumerate(recs) if r.phase == "ab")
    assert sum(r.phase == "ab" for r in recs) >= 2  # the cut falls inside the A/B round
    resumed = ExhaustiveSearch(sp, sizes, ResultStore(recs[:first_ab + 1]), defaults, None, SearchParams())
    n = drive(resumed)
    assert resumed.winners == full.winners and resumed.decisions == full.decisions
    assert n == len(recs) - first_ab - 1
    kinds = {m: full.decisions[m].kind for m in sizes}
    assert kinds[2] == "default" and kinds[16] == "winner"
