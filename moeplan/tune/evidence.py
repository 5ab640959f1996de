"""The evidence rule: when a table entry may differ from the engine's default config.

A tuned config replaces the engine's default heuristic config at batch size M only when an
interleaved A/B -- one worker timing the candidate (A) and the default (B) alternately at M
on the same inputs and routing draws, `AB_ROUNDS` rounds in ABBA order -- shows it faster by
a margin larger than the measured noise:

    margin    = 1 - median over rounds of (A_round / B_round)        (paired ratios)
    spread_X  = relative standard deviation of side X's per-round medians
    pooled    = sqrt((spread_A^2 + spread_B^2) / 2)
    threshold = max(MIN_MARGIN, SPREAD_FACTOR * pooled)
    candidate written  iff  margin >= threshold; otherwise the default config is.

An inconclusive A/B -- short of a noise-set threshold (2x pooled > 1%) by less than half of it
(margin >= INCONCLUSIVE * threshold) -- is measured again, as many rounds, and decided on all
of them (same formulas).
At large batch sizes the rounds of one side spread by 2-3% on an H200 whatever the batch
length, so one batch of rounds put a 5% gain on either side of its threshold run after run;
twice the rounds make both the margin and the spread steadier, and two tunes agree more often.

Ties: confirmed configs within `TIE_BAND` of the fastest confirmed one are ordered by a fixed
preference -- closest to the engine's default config (fewest knobs differing, then the smallest
sum of |log2| ratios of the three block sizes), then KernelConfig's own order -- never by
their (noisy) times. The default itself, inside the band, is the closest of all.

Pure Python; every number here is a named constant so that the rule is stated once.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from moeplan.engines.knobs import KNOBS, KernelConfig

AB_ROUNDS = 8  # interleaved rounds per A/B point (ABBA order: A B | B A | A B | B A)
MIN_MARGIN = 0.01  # a candidate must beat the default by at least 1% ...
SPREAD_FACTOR = 2.0  # ... and by at least twice the pooled spread of the two sides' rounds
TIE_BAND = 0.01  # confirmed configs within 1% of the best are ranked by preference, not by time
INCONCLUSIVE = 0.5  # an A/B with threshold > margin >= INCONCLUSIVE * threshold is measured again

BLOCK_KNOBS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K")


def ab_order(i: int) -> tuple[str, str]:
    """Which side runs first in round i: ABBA over every two rounds, so a linear drift cancels."""
    return ("a", "b") if i % 2 == 0 else ("b", "a")


def _rel_std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = statistics.fmean(xs)
    return statistics.stdev(xs) / m if m > 0 else 0.0


@dataclass(frozen=True)
class ABStats:
    """What one A/B point says: A = the candidate, B = the default config."""

    candidate_us: float  # median of A's per-round medians
    default_us: float
    candidate_spread: float  # relative standard deviation of A's per-round medians
    default_spread: float
    pooled_spread: float
    margin: float  # 1 - median of the paired A/B ratios: > 0 when the candidate is faster
    threshold: float
    rounds: int

    @property
    def beats(self) -> bool:
        return self.margin >= self.threshold


def ab_stats(rounds: Iterable[Sequence[float]]) -> Optional[ABStats]:
    """The A/B statistics of [(A_us, B_us), ...] per round; None when no round has two positive times."""
    pairs = [(float(a), float(b)) for a, b in rounds
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]
    if not pairs:
        return None
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    sa, sb = _rel_std(a), _rel_std(b)
    pooled = math.sqrt((sa * sa + sb * sb) / 2)
    margin = 1.0 - statistics.median(x / y for x, y in pairs)
    return ABStats(statistics.median(a), statistics.median(b), sa, sb, pooled, margin,
                   max(MIN_MARGIN, SPREAD_FACTOR * pooled), len(pairs))


def inconclusive(st: ABStats) -> bool:
    """Whether one batch of rounds left the A/B undecided: short of a threshold the noise set (not
    the 1% floor: a quiet A/B measured again says the same), by less than half of it, and not yet
    extended (AB_ROUNDS rounds only)."""
    noise_bound = SPREAD_FACTOR * st.pooled_spread > MIN_MARGIN
    return noise_bound and not st.beats and st.margin >= INCONCLUSIVE * st.threshold and st.rounds <= AB_ROUNDS


def distance(cfg: KernelConfig, default: KernelConfig) -> tuple[int, float]:
    """How far cfg is from the default: (knobs that differ, sum of |log2| block-size ratios)."""
    knobs = sum(getattr(cfg, k) != getattr(default, k) for k in KNOBS)
    blocks = sum(abs(math.log2(getattr(cfg, k) / getattr(default, k))) for k in BLOCK_KNOBS)
    return knobs, round(blocks, 9)


def preference(cfg: KernelConfig, defaults: Sequence[KernelConfig]) -> tuple:
    """The tie-break key (lower first): the distance to the nearest of the default's forms (the
    literal default and its canonical twin), then the config itself."""
    return (min(distance(cfg, d) for d in defaults), cfg)


def tie_ordered(ranked: Sequence[tuple[KernelConfig, float]], defaults: Sequence[KernelConfig]) -> list[KernelConfig]:
    """Configs ranked by time [(config, us)], fastest first; those within TIE_BAND of the fastest
    re-ordered by `preference`, the rest kept in their order (only the band is ever re-ordered)."""
    if not ranked:
        return []
    best = ranked[0][1]
    band = [c for c, t in ranked if t <= best * (1 + TIE_BAND)]
    rest = [c for c, t in ranked if t > best * (1 + TIE_BAND)]
    return sorted(band, key=lambda c: preference(c, defaults)) + rest


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@dataclass(frozen=True)
class Decision:
    """Why the entry at one batch size is what it is.

    kind: winner (the candidate cleared the margin) | default (the default config is written) |
    excluded (the search space lacks the default: its best config is written regardless) |
    none (nothing passed the gate)."""

    kind: str
    text: str
    candidate: Optional[KernelConfig] = None  # the config A/B'd against the default, if any
    stats: Optional[ABStats] = None
    slower: bool = False  # kind excluded: the written config is slower than the default
    replaced: bool = False  # kind default: a tuned candidate was replaced by the default

    def csv_fields(self) -> dict:
        s = self.stats
        r = (lambda v: None if v is None else round(v, 6))
        return {"ab_candidate": self.candidate.short() if self.candidate else None,
                "ab_candidate_us": r(s.candidate_us) if s else None, "ab_default_us": r(s.default_us) if s else None,
                "ab_candidate_spread": r(s.candidate_spread) if s else None,
                "ab_default_spread": r(s.default_spread) if s else None,
                "ab_pooled_spread": r(s.pooled_spread) if s else None, "ab_margin": r(s.margin) if s else None,
                "ab_threshold": r(s.threshold) if s else None, "decision": self.text}
