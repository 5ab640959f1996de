"""Orchestration of `moeplan tune`: every distinct table of a layout, tuned once.

Per table: routing pools and pruning (CPU), a strategy's rounds measured by the worker
pool, every record checkpointed as it arrives, then the table (engine format, atomic,
never silently overwriting), the measurements CSV and a summary.

Letters: M tokens, E experts on the device (E_g global under EP), K hidden size, N
intermediate size per shard, topk experts per token.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from moeplan.engines.registry import NEWEST, get_profile
from moeplan.base.errors import TableError, TuneError
from moeplan.engines.knobs import KernelConfig
from moeplan.engines.registry import default_config
from moeplan.layout.resolve import Resolution, TableSpec
from moeplan.tables.table import TuningTable, atomic_write_text, load_table, merge_tables, write_table
from moeplan.tune.checkpoint import DOWN_PREFIX, PHASES, Checkpoint, Record, ResultStore
from moeplan.tune.evidence import Decision
from moeplan.tune.routing import DEFAULT_DRAWS, POOL_VERSION, RoutingSpec, make_pools, routing_stats
from moeplan.tune.search import SearchParams, Strategy, make_strategy
from moeplan.engines.launch import OPERAND_BYTES
from moeplan.tune.space import SearchSpace, ShapeInfo
from moeplan.tune.worker import Task, WorkerPool

# Nominal H100 SXM5 numbers (datasheet, dense): used when nothing was measured.
NOMINAL_H100 = {"bandwidth_Bps": 3.35e12, "bf16_flops": 989e12, "fp8_flops": 1979e12}


@dataclass
class TuneOptions:
    batch_sizes: list[int]
    configs: list[KernelConfig]
    space_source: str
    strategy: str = "fast"
    out_dir: Path = Path("tuned")
    gpus: list[Optional[int]] = field(default_factory=lambda: [None])
    routing: RoutingSpec = field(default_factory=lambda: RoutingSpec("uniform"))
    interpret: bool = False
    fresh: bool = False
    force: bool = False
    seed: int = 0
    device_name: str = "UNKNOWN_DEVICE"
    point_timeout_s: float = 120.0
    restart_every: int = 400
    compile_threads: int = 0
    timer: Optional[str] = None
    smem_limit: int = 232448
    triton_version: str = ""
    timing: Optional[dict] = None
    params: SearchParams = field(default_factory=SearchParams)
    engine: str = NEWEST  # the engine profile whose kernel rules are measured (moeplan.engine)
    # the profile's own space (no --search-space): the default configs join it where its domains
    # lack them (SGLang's and the older vLLM rule's BLOCK_SIZE_K 32 / GROUP_SIZE_M 8 above M = E),
    # so an entry can always fall back to the default (the evidence rule)
    builtin_space: bool = False


def compile_weight(cfg: KernelConfig) -> float:
    """A rough relative cost of compiling cfg: the tile's multiply-adds per warp, times the
    pipeline stages (ptxas time grows with the unrolled code one thread carries). Only orders
    the compile queue; never part of a decision."""
    return cfg.BLOCK_SIZE_M * cfg.BLOCK_SIZE_N * cfg.BLOCK_SIZE_K * cfg.num_stages / cfg.num_warps


def kernel_source_hash() -> str:
    """Hash of the kernel package's sources: a changed kernel starts a fresh checkpoint."""
    import moeplan.kernels as k
    h = hashlib.sha256()
    folder = Path(k.__file__).parent
    for p in sorted(folder.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class SummaryRow:
    M: int
    winner: Optional[KernelConfig]
    time_us: Optional[float]
    default: KernelConfig
    default_us: Optional[float]
    floor_us: float
    status: str
    decision: Optional[Decision] = None  # why the entry is what it is (the evidence rule)
    # SGLang `_down`: GEMM2's entry, the layer's time with it (GEMM1 on the winner), and why
    down: Optional[KernelConfig] = None
    down_us: Optional[float] = None
    down_decision: Optional[Decision] = None

    @property
    def layer_us(self) -> Optional[float]:
        """The layer's confirmed time with what the engine runs at M (the pair, when it has one)."""
        if self.down is not None and self.down != self.winner and self.down_us:
            return self.down_us
        return self.time_us

    @property
    def speedup(self) -> Optional[float]:
        if self.layer_us and self.default_us:
            return self.default_us / self.layer_us
        return None

    @property
    def roofline(self) -> Optional[float]:
        if self.layer_us:
            return self.floor_us / self.layer_us
        return None


@dataclass
class TableOutcome:
    spec: TableSpec
    path: Path
    csv_path: Path
    action: str  # written | merged | replaced | up_to_date
    message: str
    rows: list[SummaryRow]
    wall_s: float
    points: int
    configs: int
    failed: int
    ceilings_source: str
    prune_line: str
    restarts: int = 0
    engine: str = ""  # the engine profile whose kernel rules were measured


class TableJob:
    """Tuning one table."""

    pool_factory = WorkerPool  # the backend's pool maker (moeplan.tune.backends); the local processes by default

    def __init__(self, spec: TableSpec, res: Resolution, opts: TuneOptions):
        self.spec, self.res, self.opts = spec, res, opts
        self.path = Path(opts.out_dir) / spec.file_name
        self.csv_path = Path(opts.out_dir) / (spec.file_name[:-5] + ".csv")
        self.expert_map = res.expert_map(spec.devices[0])
        self.E_global = len(self.expert_map) if self.expert_map is not None else spec.E
        self.local = None if self.expert_map is None else [g for g, v in enumerate(self.expert_map) if v >= 0]
        self.shape = ShapeInfo(spec.E, spec.N, spec.K, spec.topk, spec.scheme,
                               tuple(spec.block_shape) if spec.block_shape else None,
                               self.E_global if self.expert_map is not None else None)
        self.batch_sizes = sorted(set(opts.batch_sizes))
        self.profile = get_profile(opts.engine)
        # SGLang 0.5: GEMM2's own table (`_down`), searched after the up table with GEMM1 fixed
        self.down_path = Path(opts.out_dir) / spec.down_file_name \
            if self.profile.down_tables and spec.down_file_name else None
        self.down_strategy: Optional[Strategy] = None
        self.existing_down: Optional[TuningTable] = None
        self.defaults = {M: default_config(M, spec.E, spec.N, spec.K, spec.topk, dtype=spec.config_name,
                                           block_shape=spec.block_shape, heuristic=self.profile.heuristic)
                         for M in self.batch_sizes}
        self.configs = list(opts.configs)
        if opts.builtin_space:
            known = set(self.configs)
            for M in self.batch_sizes:
                if self.defaults[M] not in known:
                    known.add(self.defaults[M])
                    self.configs.append(self.defaults[M])
        self.space = SearchSpace.build(self.configs, self.shape, opts.smem_limit, self.profile)
        self.identity = self._identity()
        self.ckpt = Checkpoint.for_job(opts.out_dir, spec.file_name, self.identity)
        self.action = "written"
        self.existing: Optional[TuningTable] = None
        self.strategy: Optional[Strategy] = None
        self.store: Optional[ResultStore] = None

    def _identity(self) -> dict:
        s, o = self.spec, self.opts
        return {
            "file": s.file_name, "E": s.E, "N": s.N, "K": s.K, "topk": s.topk, "scheme": s.scheme,
            "act_dtype": s.act_dtype, "block_shape": list(s.block_shape) if s.block_shape else None,
            "per_token": s.per_token, "per_channel": s.per_channel, "activation": self.res.model.activation,
            "expert_map": self.expert_map, "batch_sizes": self.batch_sizes, "strategy": o.strategy,
            "space": hashlib.sha256(repr([c.to_dict() for c in self.configs]).encode()).hexdigest()[:16],
            "routing": o.routing.identity(), "seed": o.seed, "pool": [POOL_VERSION, DEFAULT_DRAWS], "interpret": o.interpret,
            "timer": o.timer or "", "kernel": kernel_source_hash(), "triton": o.triton_version,
            "smem_limit": o.smem_limit, "timing": o.timing or {}, "engine": self.profile.name,
            **({"down": s.down_file_name} if self.down_path is not None else {}),
        }

    # ---- before any measuring: the existing-table policy ------------------------------------
    def check_existing(self) -> None:
        """Decide write / merge / replace / up-to-date; TableError (one line) to refuse."""
        if not self.path.exists():
            if self.down_path is not None and self.down_path.exists() and not self.opts.force:
                raise TableError(f"{self.down_path} exists without its up table {self.path.name}; pass --force to "
                                 "replace it with a tuned pair")
            return
        if self.path.is_dir():
            raise TableError(f"{str(self.path)!r} is a folder; cannot write the table there")
        if self.opts.force:
            self.action = "replaced"
            return
        try:
            self.existing = load_table(self.path, engine=self.profile.engine)
        except TableError as e:
            raise TableError(f"the existing table is unreadable ({e}); pass --force to replace it") from None
        overlap = sorted(set(self.existing.entries) & set(self.batch_sizes))
        meta = self.ckpt.meta() if not self.opts.fresh else {}
        result = meta.get("result")
        if self.down_path is not None and self.down_path.is_file():
            try:
                self.existing_down = load_table(self.down_path, engine="sglang")
            except TableError as e:
                raise TableError(f"the existing table {self.down_path.name} is unreadable ({e}); pass --force to "
                                 "replace the pair") from None
        down_result = meta.get("down_result") or {}
        down_same = self.down_path is None or (self.existing_down is not None and all(
            str(m) in down_result and KernelConfig.from_dict(down_result[str(m)]) == self.existing_down.entries.get(m)
            for m in self.batch_sizes))
        if overlap and result and down_same and all(
                str(m) in result and KernelConfig.from_dict(result[str(m)]) == self.existing.entries.get(m)
                for m in self.batch_sizes):
            self.action = "up_to_date"
            return
        if overlap:
            raise TableError(
                f"{self.path} already has batch sizes {', '.join(map(str, overlap))}; pass --force to replace "
                f"the table, or --batch-sizes without them to merge new ones into it")
        ev, tv = self.existing.triton_version, self.opts.triton_version
        if ev and tv and ev != tv:
            raise TableError(f"{self.path} was tuned with Triton {ev}, this run uses {tv}; pass --force to "
                             "replace it rather than mix versions")
        self.action = "merged"

    # ---- planning (CPU) -----------------------------------------------------------------------
    def plan(self) -> None:
        import torch
        if self.opts.fresh:
            self.ckpt.reset()
        self.ckpt.start(self.identity)
        pools = self._saved_pools()
        if pools is None:  # none yet, or unreadable: drawn again from the seed (the same pools)
            pools = make_pools(self.opts.routing, self.batch_sizes, self.E_global, self.spec.topk, self.opts.seed,
                               merged_shared=getattr(self.spec, "merged_shared", 0))
            tmp = self.ckpt.routing_path.with_suffix(".tmp")
            torch.save(pools, tmp)
            os.replace(tmp, self.ckpt.routing_path)
        self.stats = {M: routing_stats(pools[M][0], self.local, self.E_global) for M in self.batch_sizes}
        self.store = ResultStore(self.ckpt.load_records())
        self.resumed_points = len(self.store)
        tpe = {M: st.max_tokens_per_expert for M, st in self.stats.items()}
        self.strategy = make_strategy(self.opts.strategy, self.space, self.batch_sizes, self.store, self.defaults,
                                      tpe, self.opts.params)

    def _saved_pools(self) -> Optional[dict]:
        """The checkpoint's routing pools when every batch size's pair of tensors is there with the
        right shape and ids in range; None otherwise (a corrupt file must not fail every rerun)."""
        import torch
        if not self.ckpt.routing_path.is_file():
            return None
        try:
            pools = torch.load(self.ckpt.routing_path, weights_only=True)
            for M in self.batch_sizes:
                ids, w = pools[M]
                if ids.dim() != 3 or ids.shape[1:] != (M, self.spec.topk) or w.shape != ids.shape \
                        or ids.dtype.is_floating_point or int(ids.min()) < 0 or int(ids.max()) >= self.E_global:
                    return None
            return pools
        except Exception:  # noqa: BLE001 - any unreadable pool file is drawn again
            return None

    def estimate_points(self) -> int:
        st = self.strategy
        n = 0
        for M in self.batch_sizes:
            c = len(st.cands[M])
            n += c if st.name == "exhaustive" else min(c, 3 * len({(x.BLOCK_SIZE_M, x.BLOCK_SIZE_N, x.BLOCK_SIZE_K)
                                                                   for x in st.cands[M]}) + 30)
            n += st.params.confirm_max + 3  # confirm, checks, the A/B against the default
        return n

    def job_payload(self, ups: Optional[dict[int, KernelConfig]] = None) -> dict:
        """What a worker needs. `ups` (a down job): the up entry per M, GEMM1's config there and
        the A/B's other side, so every point's config is GEMM2's own."""
        s = self.spec
        defaults = ups if ups is not None else self.defaults
        extra = {} if ups is None else {"up_configs": {str(M): c.to_dict() for M, c in ups.items()}}
        return {**extra,
            "shape": {"E": s.E, "N": s.N, "K": s.K, "topk": s.topk, "scheme": s.scheme, "act_dtype": s.act_dtype,
                      "block_shape": list(s.block_shape) if s.block_shape else None, "per_token": s.per_token,
                      "per_channel": s.per_channel, "activation": self.res.model.activation,
                      "E_global": self.E_global, "expert_map": self.expert_map},
            "routing_bytes": self.ckpt.routing_path.read_bytes(),  # by value: a remote worker has no such path
            "engine": self.profile.name,
            "seed": self.opts.seed,
            "interpret": self.opts.interpret,
            "timer": self.opts.timer,
            "timing": self.opts.timing or {},
            "compile_threads": self.opts.compile_threads,
            "defaults": {str(M): c.to_dict() for M, c in defaults.items()},  # the A/B's other side
            "measure_ceilings": ups is None and not self.opts.interpret and "ceilings" not in self.ckpt.meta(),
        }

    def make_down_strategy(self) -> Optional[Strategy]:
        """GEMM2's search, once the up entries are decided: at every batch size with an up entry,
        the configs keeping its BLOCK_SIZE_M, against the up entry itself (None: no down table)."""
        if self.down_path is None:
            return None
        ups = {M: c for M, c in self.strategy.winners.items() if c is not None}
        if not ups:
            return None
        tpe = {M: st.max_tokens_per_expert for M, st in self.stats.items()}
        return make_strategy(self.opts.strategy, self.space, sorted(ups), self.store, ups, tpe, self.opts.params,
                             gemm="down")

    # ---- measuring -----------------------------------------------------------------------------
    def run(self, advance: Callable[[int], None], set_total: Callable[[int], None],
            on_status: Callable[[int, str], None], log: Callable[[str], None]) -> TableOutcome:
        t0 = time.monotonic()
        if self.action == "up_to_date":
            for pts in self.strategy.rounds():  # every point is in the checkpoint: only the decisions replay
                if pts:
                    break
            self.down_strategy = self.make_down_strategy()
            for pts in (self.down_strategy.rounds() if self.down_strategy is not None else ()):
                if pts:
                    break
            _, src = self._ceilings()
            return self._outcome(self._summary(), t0, "up to date: the table already holds this run's result; "
                                 "nothing measured or written", src)
        store, ckpt = self.store, self.ckpt
        next_id = [0]
        done = [0]
        pools = []

        def make_pool(payload):
            pools.append(self.pool_factory(self.opts.gpus, payload, restart_every=self.opts.restart_every,
                                           point_timeout_s=self.opts.point_timeout_s, on_status=on_status, log=log,
                                           prefetch=max(2, 2 * self.opts.compile_threads)))
            return pools[-1]

        def on_point(task: Task, M: int, phase: str, res: dict, gpu):
            rounds = res.get("rounds")
            rec = Record(phase, M, task.config, res.get("status", "error"), res.get("median_us"), res.get("min_us"),
                         res.get("max_us"), int(res.get("n") or 0), res.get("error") or "", gpu,
                         res.get("first_ms"), round(time.monotonic() - t0, 3), res.get("rss_mb"),
                         None if rounds is None else tuple((float(a), float(b)) for a, b in rounds))
            store.add(rec)
            ckpt.append([rec])
            done[0] += 1
            advance(1)

        def drive(strategy: Strategy, payload: Callable[[], dict], what: str) -> None:
            """Measure every round of `strategy` (a pool is started at its first round)."""
            pool = None
            for points in strategy.rounds():
                if not points:
                    continue
                if pool is None:
                    pool = make_pool(payload())
                    pool.start()
                by_cfg: dict[KernelConfig, list] = {}
                for p in points:
                    by_cfg.setdefault(p.config, []).append((p.M, p.phase))
                tasks = []
                # heaviest compiles first: a large tile queued last would keep the round open alone
                for cfg in sorted(by_cfg, key=lambda c: (-compile_weight(c), c)):
                    tasks.append(Task(next_id[0], cfg, sorted(by_cfg[cfg])))
                    next_id[0] += 1
                set_total(len(points))
                n_round = getattr(self, "_rounds", 0) + 1
                self._rounds = n_round
                phases = sorted({p.phase for p in points})
                log(f"{what}: round {n_round} ({'/'.join(phases)}): {len(points)} points, "
                    f"{len(tasks)} configs, {time.monotonic() - t0:.0f} s in")
                pool.run(tasks, on_point)
            if pool is not None and pool.facts:
                self._check_device(pool.facts)
                if "ceilings" in pool.facts and pool.facts["ceilings"]:
                    ckpt.update_meta(ceilings=pool.facts["ceilings"])
                ckpt.update_meta(facts={k: v for k, v in pool.facts.items() if k != "ceilings"})
            if pool is not None:
                pool.close()  # frees the GPU before the down search starts its own workers

        try:
            drive(self.strategy, self.job_payload, self.spec.file_name)
            self.down_strategy = self.make_down_strategy()
            if self.down_strategy is not None:
                ups = dict(self.down_strategy.defaults)
                drive(self.down_strategy, lambda: self.job_payload(ups), self.spec.down_file_name)
        finally:
            for pool in pools:
                pool.close()
            ckpt.close()
        restarts = sum(pool.restarts for pool in pools)
        out = self._finish(t0, log)
        out.restarts = restarts
        return out

    def _check_device(self, facts: dict) -> None:
        from moeplan.engines.vllm import normalize_device_name
        name = facts.get("device_name")
        if name and not self.opts.interpret and normalize_device_name(name) != normalize_device_name(
                self.opts.device_name):
            raise TuneError(f"the worker measured on {name!r} but the table is named for "
                            f"{self.opts.device_name!r}; pass --device-name matching the GPU")

    # ---- output -----------------------------------------------------------------------------------
    def _ceilings(self) -> tuple[dict, str]:
        meta = self.ckpt.meta()
        c = meta.get("ceilings") or {}
        if c.get("bandwidth_Bps") and c.get("bf16_flops"):
            merged = dict(NOMINAL_H100)
            merged.update(c)
            src = "measured on this GPU at job start (copy bandwidth, bf16" + (
                " and fp8" if "fp8_flops" in c else "") + " matmul)"
            return merged, src
        return dict(NOMINAL_H100), "nominal H100 SXM datasheet (3.35 TB/s, 989 TFLOP/s bf16, 1979 TFLOP/s fp8)"

    def floor_us(self, M: int, ceilings: dict) -> float:
        s = self.spec
        a_bytes = {"float32": 4}.get(s.act_dtype, 2)
        w_bytes = OPERAND_BYTES.get(s.scheme, (2, 2))[1]
        per_expert = 3 * s.N * s.K * w_bytes
        if s.block_shape and all(s.block_shape):
            per_expert += 3 * math.ceil(s.N / s.block_shape[0]) * math.ceil(s.K / s.block_shape[1]) * 4
        st = self.stats[M]
        bytes_ = st.mean_experts_hit * per_expert + 2 * M * s.K * a_bytes
        flops = 2 * st.mean_local_pairs * 3 * s.N * s.K
        if s.scheme in ("fp8_w8a8", "int8_w8a8"):
            peak = ceilings.get("fp8_flops") or 2 * ceilings["bf16_flops"]
        elif s.scheme == "fp32":
            peak = ceilings["bf16_flops"] / 2
        else:
            peak = ceilings["bf16_flops"]
        return max(bytes_ / ceilings["bandwidth_Bps"], flops / peak) * 1e6

    def _summary(self) -> list[SummaryRow]:
        ceilings, _ = self._ceilings()
        rows = []
        for M in self.batch_sizes:
            w = self.strategy.winners.get(M)
            d = self.defaults[M]
            rec = self.store.get("confirm", M, w) if w is not None else None
            drec = self.store.get("confirm", M, d)
            row = SummaryRow(M, w, rec.median_us if rec and rec.ok else None, d,
                             drec.median_us if drec and drec.ok else None, self.floor_us(M, ceilings),
                             "ok" if w is not None else "no config passed", self.strategy.decisions.get(M))
            ds = self.down_strategy
            if ds is not None and ds.winners.get(M) is not None:
                row.down = ds.winners[M]
                r2 = self.store.get("down_confirm", M, row.down)
                row.down_us = r2.median_us if r2 and r2.ok else None
                row.down_decision = ds.decisions.get(M)
            rows.append(row)
        return rows

    def slower_warning(self) -> Optional[str]:
        """One line when the user's search space lacks the default config and its best config is
        slower than the default at some batch size (None otherwise)."""
        slow = [(M, d) for M, d in sorted(self.strategy.decisions.items()) if d.kind == "excluded" and d.slower]
        if not slow:
            return None
        per = ", ".join(f"M={M} ({d.text.split(': ', 1)[1].replace(' than the default', '')})" for M, d in slow)
        return (f"warning: {self.spec.file_name}: the search space excludes the engine's default config, and the "
                f"best config of the space is slower than the default at {per}; the table holds the space's "
                "configs as asked")

    def _write_csv(self) -> None:
        import pandas as pd
        rows = []
        ceilings, _ = self._ceilings()
        floors = {M: round(self.floor_us(M, ceilings), 3) for M in self.batch_sizes}
        blank = Decision("none", "").csv_fields()

        def per_m(strategy):
            return {M: (d.csv_fields() if d is not None else blank)
                    for M, d in ((M, strategy.decisions.get(M)) for M in self.batch_sizes)}
        searches = {False: (self.strategy, per_m(self.strategy))}
        if self.down_strategy is not None:
            searches[True] = (self.down_strategy, per_m(self.down_strategy))
        for r in self.store:
            down = r.phase.startswith(DOWN_PREFIX)
            if down not in searches:
                continue  # a down record of a search this run did not make (no up entry there)
            strategy, decisions = searches[down]
            winners, defaults = strategy.winners, strategy.defaults
            d = {"table": self.spec.down_file_name if down else self.spec.file_name,
                 "engine_profile": self.profile.name, "batch_size": r.M, "phase": r.phase}
            d.update(r.config.to_dict())
            d.update({"config": r.config.short(), "median_us": r.median_us, "min_us": r.min_us,
                      "max_us": r.max_us, "replays": r.n, "status": r.status, "error": r.error,
                      "gpu": r.gpu, "first_call_ms": r.first_ms, "t_s": r.t_s, "worker_rss_mb": r.rss_mb, "is_winner": winners.get(r.M) == r.config,
                      "is_default": defaults.get(r.M) == r.config, "floor_us": floors.get(r.M)})
            d.update(decisions.get(r.M, blank))
            rows.append(d)
        df = pd.DataFrame(rows)
        if len(df):
            order = {p: i for i, p in enumerate(PHASES + tuple(DOWN_PREFIX + p for p in PHASES))}
            df = df.assign(_p=df["phase"].map(order)).sort_values(["batch_size", "_p", "median_us"],
                                                                 kind="stable").drop(columns="_p")
        if self.action == "merged" and self.csv_path.is_file():
            try:
                old = pd.read_csv(self.csv_path)
                old = old[~old["batch_size"].isin(self.batch_sizes)]
                df = pd.concat([old, df], ignore_index=True)
            except Exception:  # noqa: BLE001 - an unreadable old CSV is replaced
                pass
        atomic_write_text(self.csv_path, df.to_csv(index=False))

    def _finish(self, t0: float, log) -> TableOutcome:
        entries = {M: c for M, c in self.strategy.winners.items() if c is not None}
        missing = [M for M in self.batch_sizes if M not in entries]
        if not entries:
            raise TuneError(f"{self.spec.file_name}: no config passed the correctness gate at any batch size; "
                            "nothing was written")
        engine = self.profile.engine
        new = TuningTable(entries, self.opts.triton_version or None, engine)
        msg = ""
        if self.action == "merged" and self.existing is not None:
            m = merge_tables(self.existing, new)
            table = m.table
            msg = (f"merged {len(m.added)} new batch size(s) into the existing table "
                   f"(kept {len(self.existing.entries)} existing)")
        else:
            table = new
            msg = "replaced the existing table (--force)" if self.action == "replaced" else "wrote a new table"
        down_table, down_entries = None, {}
        if self.down_path is not None:  # the same keys as the up table: GEMM2 repeats the up entry by default
            ds = self.down_strategy
            down_entries = {M: (ds.winners.get(M) if ds is not None else None) or c for M, c in entries.items()}
            down_table = TuningTable(down_entries, None, engine)
            if self.action == "merged" and self.existing_down is not None:
                down_table = merge_tables(self.existing_down, down_table).table
            elif self.action == "merged":  # an up table made without its pair: its other keys repeat it
                old = {M: c for M, c in table.entries.items() if M not in down_entries}
                down_table = TuningTable({**old, **down_entries}, None, engine)
                down_table.entries = dict(sorted(down_table.entries.items()))
            differ = sum(down_entries[M] != entries[M] for M in down_entries)
            msg += f"; with {self.down_path.name} ({differ} of {len(down_entries)} entries differ from the up table)"
        # the down table first: SGLang reading the up table alone runs GEMM2 on it, a state as valid as before
        if down_table is not None:
            write_table(self.down_path, down_table)
        write_table(self.path, table)
        self._write_csv()
        self.ckpt.update_meta(result={str(M): c.to_dict() for M, c in entries.items()},
                              **({"down_result": {str(M): c.to_dict() for M, c in down_entries.items()}}
                                 if self.down_path is not None else {}), done=True)
        if missing:
            msg += f"; NO config passed the gate at batch sizes {', '.join(map(str, missing))} (left out)"
        warning = self.slower_warning()
        if warning:
            log(warning)
        _, src = self._ceilings()
        return self._outcome(self._summary(), t0, msg, src)

    def _outcome(self, rows, t0, msg, src) -> TableOutcome:
        store = self.store or ResultStore()
        return TableOutcome(self.spec, self.path, self.csv_path, self.action, msg, rows, time.monotonic() - t0,
                            len(store), len({r.config for r in store}),
                            sum(1 for r in store if not r.ok), src, self.space.report.line(),
                            engine=self.profile.name)
