"""The search space of the fused-MoE kernel's six knobs, and its pruning.

Letters: M tokens in the batch, E experts on the device (E_g global experts, the
values in topk_ids), K hidden size, N intermediate size per TP shard, topk experts
per token, BM/BN/BK/G the BLOCK_SIZE_M/N/K and GROUP_SIZE_M knobs.

Two kinds of pruning:
  * "cannot run" (every strategy): illegal values, quant-block constraints
    (block [bn, bk]: BN and BK multiples of the block, or, for profiles whose engine
    keeps them, tiles that divide it), shared memory above the
    device's limit, and exact duplicates (BK above the quant block is clamped
    by the kernel; GROUP_SIZE_M values at or above the number of M tiles all
    give the same program order).
  * "cannot win" (the fast strategy only, per batch size): BLOCK_SIZE_M more
    than twice the largest per-expert token count (only padding is added).
Pruning never returns an empty list: if every config would go, the one with the
smallest shared-memory footprint stays.

Pure Python (no torch, no triton).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from moeplan.engines.registry import NEWEST, PROFILES
from moeplan.engines.profile import EngineProfile
from moeplan.base.errors import TuneError
from moeplan.engines.knobs import KNOBS, VALID_WARPS, KernelConfig
from moeplan.engines.launch import SM90_SMEM_BYTES, ShapeInfo
from moeplan.engines.launch import effective_block_k as _launch_block_k
from moeplan.engines.launch import max_m_tiles as _launch_m_tiles
from moeplan.engines.launch import smem_bytes as _launch_smem

H100_SMEM_BYTES = SM90_SMEM_BYTES  # kept name: the default shared-memory limit (sm_90)


def engine_space(profile: Optional[EngineProfile] = None) -> list[KernelConfig]:
    """The full product of an engine profile's tuning domains (default: the newest), in a fixed order."""
    domains = (profile or PROFILES[NEWEST]).domains()
    return [KernelConfig(*vals) for vals in itertools.product(*(domains[k] for k in KNOBS))]


def _is_pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


def config_problems(cfg: dict) -> list[str]:
    """Why a config's values are illegal for the kernel (empty if legal). `cfg` is a dict of the six knobs."""
    out = []
    for k in ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"):
        v = cfg.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or not _is_pow2(v):
            out.append(f"{k}={v!r} is not a power of two")
        elif v < 16 and k != "BLOCK_SIZE_M":
            out.append(f"{k}={v!r} is below 16 (tl.dot needs 16)")
    g = cfg.get("GROUP_SIZE_M")
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        out.append(f"GROUP_SIZE_M={g!r} is not a positive integer")
    w = cfg.get("num_warps")
    if w not in VALID_WARPS or isinstance(w, bool):
        out.append(f"num_warps={w!r} is not one of {', '.join(map(str, VALID_WARPS))}")
    s = cfg.get("num_stages")
    if not isinstance(s, int) or isinstance(s, bool) or s < 1:
        out.append(f"num_stages={s!r} is not an integer >= 1")
    return out


def parse_search_space(text: str, source: str) -> list[KernelConfig]:
    """A search-space file: a JSON list of configs, or an object of knob -> list of values (their product).

    Raises TuneError (one line) for an empty or invalid file.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TuneError(f"search space {source}: not valid JSON ({e.msg} at line {e.lineno}); "
                        f"expected a list of configs like [{{\"BLOCK_SIZE_M\": 16, ...}}]") from None
    if isinstance(obj, dict):
        bad = [k for k in obj if k not in KNOBS]
        missing = [k for k in KNOBS if k not in obj]
        if bad or missing:
            raise TuneError(f"search space {source}: an object must map each of {', '.join(KNOBS)} to a list of values"
                            f" ({'unknown ' + ', '.join(bad) if bad else 'missing ' + ', '.join(missing)})")
        lists = []
        for k in KNOBS:
            vals = obj[k] if isinstance(obj[k], list) else [obj[k]]
            if not vals:
                raise TuneError(f"search space {source}: {k} has no values; give at least one")
            lists.append(vals)
        obj = [dict(zip(KNOBS, combo)) for combo in itertools.product(*lists)]
    if not isinstance(obj, list):
        raise TuneError(f"search space {source}: expected a JSON list of configs, got {type(obj).__name__}")
    if not obj:
        raise TuneError(f"search space {source} is empty; give at least one config with the keys {', '.join(KNOBS)}")
    out: list[KernelConfig] = []
    seen = set()
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise TuneError(f"search space {source}: entry {i} is {type(item).__name__}, expected an object of {', '.join(KNOBS)}")
        keys = set(item)
        if keys != set(KNOBS):
            miss = [k for k in KNOBS if k not in keys]
            extra = sorted(str(k) for k in keys - set(KNOBS))
            what = ("lacks " + ", ".join(miss)) if miss else ("has unknown key(s) " + ", ".join(extra))
            raise TuneError(f"search space {source}: entry {i} {what}; valid keys: {', '.join(KNOBS)}")
        probs = config_problems(item)
        if probs:
            raise TuneError(f"search space {source}: entry {i}: {probs[0]}")
        cfg = KernelConfig(**{k: item[k] for k in KNOBS})
        if cfg not in seen:
            seen.add(cfg)
            out.append(cfg)
    return out


def load_search_space(path: str) -> list[KernelConfig]:
    p = Path(path)
    if not p.is_file():
        raise TuneError(f"search space file {path!r} does not exist or is not a file; pass a JSON list of configs")
    try:
        text = p.read_text()
    except OSError as e:
        raise TuneError(f"cannot read search space file {path!r}: {e.strerror or e}") from None
    return parse_search_space(text, repr(str(path)))


def smem_bytes(cfg: KernelConfig, shape: ShapeInfo, profile: Optional[EngineProfile] = None) -> int:
    """Shared memory of one program of cfg (moeplan.launch's estimate, the launcher's too), with
    BLOCK_SIZE_K as `profile` runs it (None: clamped, as vLLM)."""
    return _launch_smem(cfg.BLOCK_SIZE_M, cfg.BLOCK_SIZE_N, cfg.BLOCK_SIZE_K, cfg.num_stages, shape, profile)


def effective_block_k(cfg: KernelConfig, shape: ShapeInfo, profile: Optional[EngineProfile] = None) -> int:
    """BLOCK_SIZE_K as the kernel runs cfg (moeplan.launch: clamped to min(block_shape) unless
    `profile` runs it unclamped, as SGLang does)."""
    return _launch_block_k(cfg.BLOCK_SIZE_K, shape.w8a8_block, profile.bk_clamp if profile is not None else True)


def max_m_tiles(M: int, shape: ShapeInfo, block_m: int, profile: Optional[EngineProfile] = None) -> int:
    """Upper bound on the M tiles of the kernel's grid for M tokens (moeplan.launch)."""
    return _launch_m_tiles(M, shape, block_m, profile or PROFILES[NEWEST])


def _canonical_group(cfg: KernelConfig, group_values: Sequence[int], n_tiles: int) -> KernelConfig:
    """GROUP_SIZE_M values >= the number of M tiles all map tiles identically: use the smallest such."""
    if cfg.GROUP_SIZE_M < n_tiles:
        return cfg
    same = [g for g in group_values if g >= n_tiles]
    g = min(same) if same else cfg.GROUP_SIZE_M
    if g == cfg.GROUP_SIZE_M:
        return cfg
    return KernelConfig(cfg.BLOCK_SIZE_M, cfg.BLOCK_SIZE_N, cfg.BLOCK_SIZE_K, g, cfg.num_warps, cfg.num_stages)


@dataclass
class PruneReport:
    """How many configs each rule removed (for the log and the report)."""

    total: int = 0
    quant_block: int = 0
    smem: int = 0
    clamped_k: int = 0
    kept: int = 0
    fallback: bool = False

    def line(self) -> str:
        parts = [f"{self.total} configs"]
        if self.quant_block:
            parts.append(f"-{self.quant_block} quant block")
        if self.clamped_k:
            parts.append(f"-{self.clamped_k} BLOCK_SIZE_K clamped to the quant block")
        if self.smem:
            parts.append(f"-{self.smem} shared memory")
        parts.append(f"= {self.kept}")
        if self.fallback:
            parts.append("(all pruned: kept the smallest)")
        return " ".join(parts)


@dataclass
class SearchSpace:
    """Configs that can run for one table, with per-batch-size candidate lists."""

    configs: list[KernelConfig]  # after "cannot run" pruning, in input order
    shape: ShapeInfo
    smem_limit: int = H100_SMEM_BYTES
    report: PruneReport = field(default_factory=PruneReport)
    profile: EngineProfile = PROFILES[NEWEST]

    @classmethod
    def build(cls, configs: Iterable[KernelConfig], shape: ShapeInfo,
              smem_limit: int = H100_SMEM_BYTES, profile: Optional[EngineProfile] = None) -> "SearchSpace":
        configs = list(configs)
        if not configs:
            raise TuneError("the search space is empty; give at least one config")
        rep = PruneReport(total=len(configs))
        kept: list[KernelConfig] = []
        seen = set()
        programs = set()  # configs as launched: BLOCK_SIZE_K after the kernel's clamp
        blk = shape.w8a8_block
        profile = profile or PROFILES[NEWEST]

        def block_ok(c: KernelConfig) -> bool:
            return blk is None or (profile.block_tile_ok(c.BLOCK_SIZE_N, blk[0])
                                   and profile.block_k_ok(c.BLOCK_SIZE_K, blk[1]))  # SGLang: BK | bk

        for c in configs:
            if not block_ok(c):
                rep.quant_block += 1
                continue
            if c in seen:
                continue
            run_as = (c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, effective_block_k(c, shape, profile), c.GROUP_SIZE_M,
                      c.num_warps, c.num_stages)
            if run_as in programs:
                # the kernel clamps BLOCK_SIZE_K to min(block_shape): an earlier config launches
                # the same program
                rep.clamped_k += 1
                continue
            if smem_bytes(c, shape, profile) > smem_limit:
                rep.smem += 1
                continue
            seen.add(c)
            programs.add(run_as)
            kept.append(c)
        if not kept:
            rep.fallback = True
            legal = [c for c in configs if block_ok(c)]
            kept = [min(legal or configs, key=lambda c: (smem_bytes(c, shape, profile), c))]
        rep.kept = len(kept)
        return cls(kept, shape, smem_limit, rep, profile)

    # ---- per batch size ------------------------------------------------------
    def domain(self, knob: str) -> list[int]:
        return sorted({getattr(c, knob) for c in self.configs})

    def canonical(self, cfg: KernelConfig, M: int) -> KernelConfig:
        """The representative of cfg's exact-equivalence class at batch M (GROUP_SIZE_M collapse)."""
        return _canonical_group(cfg, self.domain("GROUP_SIZE_M"),
                                max_m_tiles(M, self.shape, cfg.BLOCK_SIZE_M, self.profile))

    def candidates(self, M: int, max_tokens_per_expert: Optional[int] = None,
                   prune_cannot_win: bool = True) -> list[KernelConfig]:
        """Distinct configs worth measuring at batch M (never empty), in space order.

        `max_tokens_per_expert`: the largest number of tokens one local expert gets at M (from
        the routing); None estimates it from uniform routing.
        """
        if max_tokens_per_expert is None:
            mean = M * self.shape.topk / self.shape.num_experts_routed
            max_tokens_per_expert = min(M, int(math.ceil(2 * mean)))
        cap = max(16, 2 * _next_pow2(max(1, max_tokens_per_expert)))
        out, seen = [], set()
        for c in self.configs:
            if prune_cannot_win and c.BLOCK_SIZE_M > cap:
                continue
            cc = self.canonical(c, M)
            if cc not in seen:
                seen.add(cc)
                out.append(cc)
        if not out:
            smallest = min(self.configs, key=lambda c: (c.BLOCK_SIZE_M, c))
            out = [self.canonical(smallest, M)]
        return out

    def fits(self, cfg: KernelConfig) -> bool:
        return smem_bytes(cfg, self.shape, self.profile) <= self.smem_limit


def _next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()
