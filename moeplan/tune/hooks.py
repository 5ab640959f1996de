"""Test hooks of the tuner's worker: injected faults and a deterministic synthetic cost model, so
that crash isolation, the correctness gate and the evidence rule can be tested on a CPU.

Test hooks (environment, read by the worker):
  MOEPLAN_TUNE_FAULT="kind@CONFIG[;kind@CONFIG...]"  CONFIG as KernelConfig.short()
      (M16/N32/K64/G1/w4/s2) or "*"; kinds: exit (the worker process dies: os._exit),
      compile (a compile error), oor (out of resources), hang (never returns), wrong
      (the output is corrupted, so the correctness gate must reject the config), slow
      (each point takes 0.3 s longer: lets a test kill a run midway)
  MOEPLAN_TUNE_TIMER=model|wall|cuda
  MOEPLAN_TUNE_MODEL_NOISE="AMP[@CONFIG][;AMP@CONFIG...]"  under the model timer, each A/B
      round's time of a config is scaled by 1 + AMP * u, u in [-1, 1] drawn deterministically
      from (config, M, round): the A/B spread a test wants (a bare AMP applies to every config)

Pure Python (no torch, no triton).
"""

from __future__ import annotations

import math
import zlib
from typing import Optional

from moeplan.engines.knobs import KernelConfig

ENV_FAULT = "MOEPLAN_TUNE_FAULT"
ENV_TIMER = "MOEPLAN_TUNE_TIMER"
ENV_MODEL_NOISE = "MOEPLAN_TUNE_MODEL_NOISE"


class InjectedFault(Exception):
    """Raised by the test hooks."""


class CompileFault(InjectedFault):
    pass


class ResourceFault(InjectedFault):
    pass


def parse_faults(text: Optional[str]) -> dict[str, str]:
    """'exit@M16/N32/K64/G1/w4/s2;wrong@*' -> {config short or '*': kind}."""
    out = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part or "@" not in part:
            continue
        kind, cfg = part.split("@", 1)
        out[cfg.strip()] = kind.strip()
    return out


def fault_for(faults: dict[str, str], cfg: KernelConfig) -> Optional[str]:
    return faults.get(cfg.short(), faults.get("*"))


def model_time_us(cfg: KernelConfig, M: int, E: int, topk: int, down: Optional[KernelConfig] = None) -> float:
    """A deterministic synthetic cost with one clear optimum per M (tests only). With `down`
    (GEMM2's own config) the layer costs half cfg's time and half down's as a GEMM2, whose
    optimum differs from the whole layer's (BLOCK_SIZE_N 128), so a down search has a winner."""
    if down is not None:
        return round(0.5 * model_time_us(cfg, M, E, topk) + 0.5 * _model_cost(down, M, E, topk, 128), 4)
    return _model_cost(cfg, M, E, topk, 64)


def _model_cost(cfg: KernelConfig, M: int, E: int, topk: int, best_bn: int) -> float:
    target_bm = min(128, max(16, 1 << max(0, math.ceil(math.log2(max(1.0, M * topk / E))))))
    t = 1.0
    t += 0.30 * abs(math.log2(cfg.BLOCK_SIZE_M / target_bm))
    t += 0.20 * abs(math.log2(cfg.BLOCK_SIZE_N / best_bn))
    t += 0.10 * abs(math.log2(cfg.BLOCK_SIZE_K / 64))
    t += 0.05 * abs(cfg.num_stages - 3) + 0.03 * (cfg.num_warps != 4) + 0.01 * (cfg.GROUP_SIZE_M != 1)
    jitter = (zlib.crc32(f"{cfg.short()}|{M}".encode()) % 1000) / 1e6
    return round(100.0 * (t + jitter) * (1 + M / 64), 4)


def model_noise(spec: Optional[str], cfg: KernelConfig, M: int, i: int) -> float:
    """The model timer's factor for cfg's A/B round i at M (1.0 without MOEPLAN_TUNE_MODEL_NOISE)."""
    amps = {}
    for part in (spec or "").split(";"):
        amp, _, where = part.strip().partition("@")
        if amp:
            amps[where.strip() or "*"] = float(amp)
    amp = amps.get(cfg.short(), amps.get("*", 0.0))
    u = (zlib.crc32(f"{cfg.short()}|{M}|{i}".encode()) % 20001) / 10000 - 1.0
    return 1.0 + amp * u
