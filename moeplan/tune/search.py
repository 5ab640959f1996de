"""Search strategies: which (config, batch size) points to measure, and the pick per batch size.

A strategy is a generator of rounds. Each round is a list of `Point`s; the job measures
all of them, puts the records in the shared `ResultStore`, and resumes the generator.
Every decision depends only on the store, in a fixed order, so replaying the rounds
from a checkpoint repeats the same decisions (same table after a resume).

Phases of a point:
  screen   a short measurement (few CUDA-graph replays) to rank candidates
  confirm  the full measurement (more replays, median) of the leaders and of the default
  check    the correctness gate: output vs the float32 reference
  ab       the evidence rule (moeplan.tune.evidence): one worker times the gate's pick and the
           engine's default config alternately at M, AB_ROUNDS rounds in ABBA order; the pick is
           written only when it beats the default by max(1%, 2x the pooled spread), otherwise
           the default config is (checked by the gate first when it was not yet)

`fast` (default) -- a seeded, multi-start coordinate search on the knob lattice, shared
across batch sizes:
  round 0   per batch size: one representative of every tile shape (BM, BN, BK) that
            survives pruning, plus the engine's default config;
  round r   per batch size: every single-knob move (any value of one knob; stages cut
            to fit shared memory) around its leaders (the `top_t` fastest configs and the
            fastest config of each of the `top_shapes` best tile shapes), plus the best
            configs of the neighbouring batch sizes; until no batch size's leaders change;
  confirm   the screened configs within `confirm_margin` of the best (at most
            `confirm_max`, at least 2) and the default config, measured in full;
  gate      the fastest confirmed config is checked against the reference; a wrong one
            is disqualified and the next is checked. Confirmed configs within TIE_BAND (1%) of
            the fastest are tried in a fixed preference order (closest to the default config
            first, then KernelConfig order), not in the order their noisy times give;
  evidence  the gate's pick, when it is not the default config, is A/B'd against it (`ab`); an
            inconclusive A/B is measured as long again (`ab_more`) and decided on all its rounds.
`exhaustive` -- screen every candidate (no "cannot win" pruning), then confirm, gate and evidence.

GEMM2's own table (SGLang's `_down`, `gemm="down"`): the same search and rules over the configs
that keep the up entry's BLOCK_SIZE_M, each timed as the whole layer with GEMM1 running the up
entry; the "default" of every phase is then the up entry itself (what SGLang's GEMM2 runs when
the down table repeats it or is missing), so a down entry differs from its up entry only on the
same evidence. Its phases are stored as `down_screen`, `down_confirm`, `down_check`, `down_ab`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generator, Iterable, Optional, Sequence

from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.tune.checkpoint import DOWN_PREFIX, ResultStore
from moeplan.tune.evidence import AB_ROUNDS, TIE_BAND, Decision, ab_stats, inconclusive, pct, tie_ordered
from moeplan.tune.space import SearchSpace

STRATEGIES = ("fast", "exhaustive")
# "both": one config for GEMM1 and GEMM2 (every vLLM table, SGLang's up table); "down": GEMM2's own
# config (SGLang's `_down` table) with GEMM1 fixed to the up entry, whose BLOCK_SIZE_M it keeps
GEMMS = ("both", "down")


@dataclass(frozen=True, order=True)
class Point:
    phase: str
    M: int
    config: KernelConfig


Rounds = Generator[list[Point], None, None]


@dataclass
class SearchParams:
    top_t: int = 3  # leaders expanded per batch size and round
    top_shapes: int = 3  # ... plus the best config of each of this many best tile shapes
    max_rounds: int = 8  # expansion rounds after the seeds
    confirm_max: int = 5
    confirm_min: int = 2
    confirm_margin: float = 0.08  # confirm screened configs within 8% of the best
    max_checks: int = 8  # gate: configs checked per batch size before giving up


def _with(cfg: KernelConfig, knob: str, value: int) -> KernelConfig:
    return replace(cfg, **{knob: value})


def _rep_score(cfg: KernelConfig) -> tuple:
    """How typical a config is for its tile shape (lower = chosen as the shape's representative)."""
    big = cfg.BLOCK_SIZE_M * cfg.BLOCK_SIZE_N >= 128 * 128
    want_w = 8 if big else 4
    return (abs(cfg.num_stages - 3) + (cfg.num_stages < 3) * 0.5, abs(cfg.num_warps.bit_length() - want_w.bit_length()),
            abs(cfg.GROUP_SIZE_M - 16), cfg)


def tile_representatives(cands: Sequence[KernelConfig]) -> list[KernelConfig]:
    """One config per (BM, BN, BK) tile shape present in `cands`."""
    groups: dict[tuple[int, int, int], list[KernelConfig]] = {}
    for c in cands:
        groups.setdefault((c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, c.BLOCK_SIZE_K), []).append(c)
    return [min(g, key=_rep_score) for _, g in sorted(groups.items())]


class Strategy:
    """Common parts: candidates per batch size, confirm and gate phases."""

    name = "base"

    def __init__(self, space: SearchSpace, batch_sizes: Sequence[int], store: ResultStore,
                 defaults: dict[int, KernelConfig], tokens_per_expert: Optional[dict[int, int]] = None,
                 params: Optional[SearchParams] = None, gemm: str = "both"):
        if gemm not in GEMMS:
            raise ValueError(f"unknown gemm {gemm!r}; valid: {', '.join(GEMMS)}")
        self.space = space
        self.batch_sizes = list(batch_sizes)
        self.store = store
        self.defaults = defaults
        self.params = params or SearchParams()
        self.gemm = gemm
        self.prefix = DOWN_PREFIX if gemm == "down" else ""
        # what an entry that did not win is, in its decision's words (kind "default" either way)
        self.baseline = "up entry" if gemm == "down" else "default"
        tpe = tokens_per_expert or {}
        self.cands = {M: self._candidates(M, tpe.get(M)) for M in self.batch_sizes}
        if gemm == "down":  # GEMM2 runs with GEMM1's BLOCK_SIZE_M (one align serves both)
            self.cands = {M: [c for c in cs if c.BLOCK_SIZE_M == defaults[M].BLOCK_SIZE_M]
                          for M, cs in self.cands.items()}
        self.candset = {M: set(c) for M, c in self.cands.items()}
        self.space_set = set(space.configs)
        self.gated: dict[int, Optional[KernelConfig]] = {}  # the gate's pick per M
        self.winners: dict[int, Optional[KernelConfig]] = {}  # the entry written per M (after the evidence rule)
        self.decisions: dict[int, Decision] = {}  # why each entry is what it is
        self.seen: set[Point] = set()
        self.asked = 0

    def _candidates(self, M: int, tpe: Optional[int]) -> list[KernelConfig]:
        raise NotImplementedError

    def search_rounds(self) -> Rounds:
        raise NotImplementedError
        yield []  # pragma: no cover

    def ph(self, phase: str) -> str:
        """The store's name of a phase of this search (`down_screen`... for GEMM2's own table)."""
        return self.prefix + phase

    # ---- shared ------------------------------------------------------------------
    # Decisions may only use the records of points this strategy has asked for so far (`seen`):
    # a resumed run's store already holds later rounds' records, and looking at those would
    # change earlier decisions, so the replay would drift from the run it resumes.
    def _unmeasured(self, phase: str, pts: Iterable[Point]) -> list[Point]:
        """Ask for `pts`: the new ones join `seen` (self.asked counts them); returns those to measure."""
        out, batch = [], set()
        self.asked = 0
        dead = self._dead()
        for p in pts:
            if p in batch or p in self.seen:
                continue
            batch.add(p)
            if p.config in dead:
                continue  # crashed or hung earlier: never tried again
            self.seen.add(p)
            self.asked += 1
            if not self.store.has(p.phase, p.M, p.config):
                out.append(p)
        return sorted(out, key=lambda p: (p.config, p.M, p.phase))

    def _visible(self, phase: str, M: int) -> list:
        return [r for r in self.store.at(phase, M) if Point(phase, M, r.config) in self.seen]

    def _ranked(self, phase: str, M: int) -> list:
        return sorted((r for r in self._visible(phase, M) if r.ok), key=lambda r: (r.score, r.config))

    def _dead(self) -> set:
        return {r.config for r in self.store if r.status in ("crash", "timeout")
                and Point(r.phase, r.M, r.config) in self.seen}

    def screened(self, M: int) -> list:
        return self._ranked(self.ph("screen"), M)

    def confirm_set(self, M: int) -> list[KernelConfig]:
        ranked = self.screened(M)
        if not ranked:
            return []
        best = ranked[0].score
        p = self.params
        picked = [r.config for r in ranked if r.score <= best * (1 + p.confirm_margin)][:p.confirm_max]
        for r in ranked[:p.confirm_min]:
            if r.config not in picked:
                picked.append(r.config)
        return picked

    def rounds(self) -> Rounds:
        """All rounds: search, confirm (leaders + default), gate, evidence (A/B vs the default)."""
        yield from self.search_rounds()
        pts = []
        for M in self.batch_sizes:
            for c in self.confirm_set(M):
                pts.append(Point(self.ph("confirm"), M, c))
            pts.append(Point(self.ph("confirm"), M, self.defaults[M]))
        todo = self._unmeasured(self.ph("confirm"), pts)
        if todo:
            yield todo
        yield from self.gate_rounds()
        yield from self.evidence_rounds()

    def writable(self, M: int, cfg: KernelConfig) -> bool:
        """Only configs of the search space may enter a table: the default heuristic's config is
        timed as the baseline, but written only if the space holds it too."""
        if self.gemm == "down" and cfg == self.defaults[M]:
            return True  # the up entry itself: what GEMM2 runs when the down entry repeats it
        return cfg in self.candset[M] or cfg in self.space_set

    def default_forms(self, M: int) -> list[KernelConfig]:
        """The default config at M and its canonical twin (the same program), once each."""
        d = self.defaults[M]
        c = self.space.canonical(d, M)
        return [d] if c == d else [d, c]

    def is_default(self, M: int, cfg: KernelConfig) -> bool:
        return cfg in self.default_forms(M)

    def default_entry(self, M: int) -> Optional[KernelConfig]:
        """The default config as a table entry (None: the search space excludes it)."""
        return next((c for c in self.default_forms(M) if self.writable(M, c)), None)

    def ranking(self, M: int) -> list[KernelConfig]:
        """Configs in the order the gate tries them: confirmed (fastest first; those within the tie
        band of the fastest in preference order), then the rest of the screen; writable ones only."""
        conf = tie_ordered([(r.config, r.score) for r in self._ranked(self.ph("confirm"), M) if self.writable(M, r.config)],
                           self.default_forms(M))
        rest = [r.config for r in self.screened(M) if r.config not in conf and self.writable(M, r.config)]
        return conf + rest

    def gate_rounds(self) -> Rounds:
        pending = {M: self.ranking(M)[:self.params.max_checks] for M in self.batch_sizes}
        while True:
            pts = []
            dead = self._dead()
            for M in self.batch_sizes:
                if M in self.gated:
                    continue
                for c in pending[M]:
                    if c in dead:
                        continue
                    p = Point(self.ph("check"), M, c)
                    if p not in self.seen:
                        pts.append(p)
                        break
                    rec = self.store.get(self.ph("check"), M, c)
                    if rec is not None and rec.ok:
                        self.gated[M] = c
                        break
                else:
                    self.gated[M] = None  # nothing passed
            if not pts:
                return
            todo = self._unmeasured(self.ph("check"), pts)
            if todo:
                yield todo

    # ---- the evidence rule (moeplan.tune.evidence) -------------------------------------------
    def _seen_record(self, phase: str, M: int, cfg: Optional[KernelConfig]):
        if cfg is None or Point(phase, M, cfg) not in self.seen:
            return None
        return self.store.get(phase, M, cfg)

    def _confirmed_ratio(self, M: int, cfg: KernelConfig) -> Optional[float]:
        """cfg's confirmed time over the default's (None when either is missing)."""
        a = self._seen_record(self.ph("confirm"), M, cfg)
        b = self._seen_record(self.ph("confirm"), M, self.defaults[M])
        if a is None or b is None or not a.ok or not b.ok or not b.median_us:
            return None
        return a.median_us / b.median_us

    def evidence_rounds(self) -> Rounds:
        """A/B every gated pick that is not the default config against it; the entry is the pick
        only on evidence, otherwise the default (gated first when it was not yet)."""
        todo = self._unmeasured(self.ph("ab"), [Point(self.ph("ab"), M, w) for M, w in sorted(self.gated.items())
                                       if w is not None and not self.is_default(M, w)])
        if todo:
            yield todo
        # an inconclusive A/B (short of the threshold, but by less than half of it) gets as many
        # rounds again, and is decided on all of them: a noisy batch size then decides the same
        # way run after run instead of by which side of the threshold one batch of rounds fell
        more = []
        for M, w in sorted(self.gated.items()):
            rec = self._seen_record(self.ph("ab"), M, w) if w is not None and not self.is_default(M, w) else None
            st = ab_stats(rec.rounds) if rec is not None and rec.ok and rec.rounds else None
            if st is not None and inconclusive(st):
                more.append(Point(self.ph("ab_more"), M, w))
        todo = self._unmeasured(self.ph("ab_more"), more)
        if todo:
            yield todo
        fallback: dict[int, Decision] = {}  # M -> the decision if the default passes the gate
        for M in self.batch_sizes:
            w = self.gated.get(M)
            if w is None:
                self.winners[M], self.decisions[M] = None, Decision("none", "no config passed the gate")
                continue
            if self.is_default(M, w):
                best = next((r.config for r in self._ranked(self.ph("confirm"), M) if self.writable(M, r.config)), None)
                why = "is the fastest" if best == w else f"within the {pct(TIE_BAND)} tie band of the fastest"
                self.winners[M], self.decisions[M] = w, Decision("default", f"{self.baseline}: {why}")
                continue
            rec = self._seen_record(self.ph("ab"), M, w)
            st = ab_stats(rec.rounds) if rec is not None and rec.ok and rec.rounds else None
            extra = self._seen_record(self.ph("ab_more"), M, w)
            if st is not None and extra is not None and extra.ok and extra.rounds:
                st = ab_stats(tuple(rec.rounds) + tuple(extra.rounds))
            failed = "not measured" if rec is None else (rec.status if not rec.ok else "no usable rounds")
            d = self.default_entry(M)
            if d is None:  # the user's space lacks the default: its best is written regardless
                ratio = (1 - st.margin) if st is not None else self._confirmed_ratio(M, w)
                src = "" if st is not None else f"A/B {failed}; confirmed "
                if ratio is None:
                    text, slower = f"space excludes default: A/B {failed}, no comparison", False
                elif ratio > 1:
                    text, slower = f"space excludes default: {src}{pct(ratio - 1)} slower than the default", True
                else:
                    text, slower = f"space excludes default: {src}{pct(1 - ratio)} faster than the default", False
                self.winners[M] = w
                self.decisions[M] = Decision("excluded", text, w, st, slower=slower)
            elif st is not None and st.beats:
                self.winners[M] = w
                self.decisions[M] = Decision("winner", f"winner: margin {pct(st.margin)} >= {pct(st.threshold)}"
                                             f"{_rounds_note(st)}", w, st)
            else:
                text = (f"{self.baseline}: margin {pct(st.margin)} < threshold {pct(st.threshold)}{_rounds_note(st)}"
                        if st is not None
                        else f"{self.baseline}: the A/B failed ({failed})")
                fallback[M] = Decision("default", text, w, st, replaced=True)
        todo = self._unmeasured(self.ph("check"), [Point(self.ph("check"), M, self.default_entry(M)) for M in sorted(fallback)])
        if todo:
            yield todo
        for M, dec in sorted(fallback.items()):
            d = self.default_entry(M)
            rec = self._seen_record(self.ph("check"), M, d)
            if rec is not None and rec.ok:
                self.winners[M], self.decisions[M] = d, dec
            else:  # the default itself fails the gate (or crashed): the gated pick stays
                why = "not measured" if rec is None else rec.status
                self.winners[M] = self.gated[M]
                self.decisions[M] = Decision("winner", f"winner: the default config failed the gate ({why})",
                                             dec.candidate, dec.stats)


def _rounds_note(st) -> str:
    """How many A/B rounds decided, when an inconclusive A/B was measured again."""
    return f" over {st.rounds} rounds" if st.rounds > AB_ROUNDS else ""


class FastSearch(Strategy):
    name = "fast"

    def _candidates(self, M, tpe):
        return self.space.candidates(M, tpe, prune_cannot_win=True)

    def neighbours(self, cfg: KernelConfig, M: int) -> list[KernelConfig]:
        """Single-knob moves to any other value of the knob, within M's candidates.

        A move that overflows shared memory keeps its stages as high as still fits.
        """
        out = []
        cs = self.candset[M]
        for knob in KNOBS:
            for v in self.space.domain(knob):
                if v == getattr(cfg, knob):
                    continue
                n = self.space.canonical(_with(cfg, knob, v), M)
                if n not in cs and not self.space.fits(n):
                    for s in sorted(self.space.domain("num_stages"), reverse=True):
                        t = self.space.canonical(_with(n, "num_stages", s), M)
                        if t in cs:
                            n = t
                            break
                if n in cs and n != cfg:
                    out.append(n)
        return out

    def leaders(self, M: int) -> list[KernelConfig]:
        """The centres to expand at M: the `top_t` fastest configs, plus the fastest config of each of
        the `top_shapes` best tile shapes (so near-twins of one tile cannot crowd out a close rival tile)."""
        ranked = self.screened(M)
        out = [r.config for r in ranked[:self.params.top_t]]
        shapes: list = []
        for r in ranked:
            sh = (r.config.BLOCK_SIZE_M, r.config.BLOCK_SIZE_N, r.config.BLOCK_SIZE_K)
            if sh in shapes:
                continue
            shapes.append(sh)
            if r.config not in out:
                out.append(r.config)
            if len(shapes) >= self.params.top_shapes:
                break
        return out

    def search_rounds(self) -> Rounds:
        pts = []
        for M in self.batch_sizes:
            seeds = tile_representatives(self.cands[M])
            d = self.space.canonical(self.defaults[M], M)
            if d in self.candset[M] or (self.gemm == "down" and d == self.defaults[M]):
                seeds.append(d)
            pts += [Point(self.ph("screen"), M, c) for c in seeds]
        todo = self._unmeasured(self.ph("screen"), pts)
        if todo:
            yield todo
        leaders_prev: dict[int, list] = {}
        for _ in range(self.params.max_rounds):
            pts = []
            leaders = {M: self.leaders(M) for M in self.batch_sizes}
            for i, M in enumerate(self.batch_sizes):
                if leaders[M] == leaders_prev.get(M) and leaders_prev:
                    continue  # converged at this batch size
                for c in leaders[M]:
                    pts += [Point(self.ph("screen"), M, n) for n in self.neighbours(c, M)]
                for j in (i - 1, i + 1):  # the neighbouring batch sizes' best
                    if 0 <= j < len(self.batch_sizes) and leaders[self.batch_sizes[j]]:
                        c = self.space.canonical(leaders[self.batch_sizes[j]][0], M)
                        if c in self.candset[M]:
                            pts.append(Point(self.ph("screen"), M, c))
            leaders_prev = leaders
            todo = self._unmeasured(self.ph("screen"), pts)
            if not self.asked:
                return  # nothing new to look at: converged (a resumed run may have measured it all)
            if todo:
                yield todo


class ExhaustiveSearch(Strategy):
    name = "exhaustive"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.params = replace(self.params, confirm_max=max(self.params.confirm_max, 8))

    def _candidates(self, M, tpe):
        return self.space.candidates(M, tpe, prune_cannot_win=False)

    def search_rounds(self) -> Rounds:
        todo = self._unmeasured(self.ph("screen"), [Point(self.ph("screen"), M, c) for M in self.batch_sizes for c in self.cands[M]])
        if todo:
            yield todo


def make_strategy(name: str, *args, **kwargs) -> Strategy:
    if name == "fast":
        return FastSearch(*args, **kwargs)
    if name == "exhaustive":
        return ExhaustiveSearch(*args, **kwargs)
    from moeplan.base.errors import TuneError
    raise TuneError(f"--strategy {name!r} is unknown; valid: {', '.join(STRATEGIES)}")
