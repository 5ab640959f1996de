"""Routing pools the tuner measures with: per batch size M, R draws of (topk_ids, topk_weights).

Dimension letters: M tokens, topk slots per token, E_g experts in the id space (global
experts under EP), R draws per batch size.

--routing values:
  uniform      softmax(randn logits) top-k, renormalised (the engine's tuner)
  zipf:S       expert popularity ~ 1 / rank^S over a random expert order; each token
               draws topk distinct experts with those probabilities
  FILE         captured topk ids: a .pt/.pth tensor, a .npy array or a JSON list of
               lists, shape (tokens, topk); each draw takes M random rows

Merged shared experts (SGLang under TP, `merged_shared` n > 0): ids E..E+n-1 are the shared
experts; each token's first topk-n slots are drawn as above over the E routed experts and the
last n slots are the shared ids, so every token hits each shared expert exactly once (SGLang's
routing), not uniform routing over E+n.

Generated on the CPU with a seeded generator, saved in the checkpoint, so every worker
and every resumed run measures the same routings.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from moeplan.base import safeio
from moeplan.base.errors import TuneError

DEFAULT_DRAWS = 64  # many draws: at small M under EP the layer time varies ~2x between draws
POOL_VERSION = 2  # bump when the way pools are drawn changes (part of a job's identity)


@dataclass(frozen=True)
class RoutingSpec:
    kind: str  # uniform | zipf | file
    s: float = 0.0
    path: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "zipf":
            return f"zipf:{self.s:g}"
        if self.kind == "file":
            return f"file {self.path}"
        return "uniform"

    def identity(self) -> str:
        if self.kind == "file":
            p = Path(self.path)
            try:
                st = p.stat()
                return f"file:{p.resolve()}:{st.st_size}:{int(st.st_mtime)}"
            except OSError:
                return f"file:{self.path}"
        return self.describe()


def parse_routing(text: str) -> RoutingSpec:
    t = text.strip()
    if t == "uniform":
        return RoutingSpec("uniform")
    if t.startswith("zipf:") or t == "zipf":
        raw = t[5:] if t.startswith("zipf:") else ""
        try:
            s = float(raw)
        except ValueError:
            raise TuneError(f"--routing {text!r}: the zipf exponent must be a number, e.g. zipf:1.2") from None
        if not (0 < s <= 10):
            raise TuneError(f"--routing {text!r}: the zipf exponent must be in (0, 10], e.g. zipf:1.2")
        return RoutingSpec("zipf", s=s)
    p = Path(t)
    if p.is_file():
        return RoutingSpec("file", path=str(p))
    raise TuneError(f"--routing {text!r} is neither uniform, zipf:S nor an existing file of captured topk ids")


def load_captured_ids(path: str, topk: int, num_experts: int) -> torch.Tensor:
    """(tokens, topk) int64 ids from a file; TuneError naming what is wrong."""
    p = Path(path)
    # through the input layer: a capped regular file; JSON as UTF-8 with a depth limit
    is_json = p.suffix not in (".pt", ".pth", ".npy")
    data = safeio.read_bytes(path, "--routing", safeio.MAX_JSON_BYTES if is_json else safeio.MAX_BINARY_BYTES,
                             TuneError)
    try:
        if p.suffix in (".pt", ".pth"):
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj.get("topk_ids", next(iter(obj.values())) if obj else None)
            ids = torch.as_tensor(obj)
        elif p.suffix == ".npy":
            import numpy as np
            ids = torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
        else:
            src = f"--routing {safeio.shown(path)}"
            ids = torch.tensor(safeio.parse_json(safeio.decode_text(data, src, TuneError), src, TuneError))
    except TuneError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise TuneError(f"--routing {path!r}: cannot read captured topk ids ({type(e).__name__}: {e}); "
                        "expected a .pt/.npy/.json array of shape (tokens, topk)") from None
    if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] != topk:
        raise TuneError(f"--routing {path!r}: ids have shape {tuple(ids.shape)}; expected (tokens, {topk})")
    if ids.dtype.is_floating_point:
        raise TuneError(f"--routing {path!r}: ids are {ids.dtype}; expected integers")
    ids = ids.long()
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_experts:
        raise TuneError(f"--routing {path!r}: expert ids span {lo}..{hi}; valid: 0..{num_experts - 1}")
    return ids


def _weights(M: int, topk: int, g: torch.Generator) -> torch.Tensor:
    w = torch.softmax(torch.randn((M, topk), generator=g), dim=-1)  # (M, topk)
    return w.float().contiguous()


def make_pools(spec: RoutingSpec, batch_sizes: Sequence[int], num_experts: int, topk: int,
               seed: int = 0, draws: int = DEFAULT_DRAWS,
               merged_shared: int = 0) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """M -> (ids (R, M, topk) int32, weights (R, M, topk) float32).

    `num_experts` and `topk` include the `merged_shared` shared experts (ids at the top)."""
    if merged_shared > 0:
        routed = make_pools(spec, batch_sizes, num_experts - merged_shared, topk - merged_shared, seed, draws)
        out = {}
        for M, (ids, w) in routed.items():
            R = ids.shape[0]
            shared = torch.arange(num_experts - merged_shared, num_experts, dtype=torch.int32).expand(R, M, -1)
            sw = torch.full((R, M, merged_shared), 1.0, dtype=torch.float32)
            ws = torch.cat([w, sw], dim=-1)
            out[M] = (torch.cat([ids, shared], dim=-1).contiguous(),
                      (ws / ws.sum(dim=-1, keepdim=True)).float().contiguous())
        return out
    g = torch.Generator()
    g.manual_seed(seed)
    captured = load_captured_ids(spec.path, topk, num_experts) if spec.kind == "file" else None
    probs = None
    if spec.kind == "zipf":
        ranks = torch.randperm(num_experts, generator=g).double() + 1.0
        probs = (1.0 / ranks ** spec.s)
        probs = (probs / probs.sum()).float()
    pools = {}
    for M in batch_sizes:
        # one generator per batch size: M's pool does not depend on which other sizes are tuned
        g.manual_seed(seed * 1_000_003 + M)
        ids_l, w_l = [], []
        for _ in range(draws):
            if spec.kind == "uniform":
                logits = torch.randn((M, num_experts), generator=g)  # (M, E_g)
                p = torch.softmax(logits, dim=-1)
                w, ids = torch.topk(p, topk, dim=-1)
                w = w / w.sum(dim=-1, keepdim=True)
            elif spec.kind == "zipf":
                ids = torch.multinomial(probs.expand(M, -1), topk, replacement=False, generator=g)
                w = _weights(M, topk, g)
            else:
                rows = torch.randint(0, captured.shape[0], (M,), generator=g)
                ids = captured[rows]
                w = _weights(M, topk, g)
            ids_l.append(ids.to(torch.int32))
            w_l.append(w.float())
        pools[M] = (torch.stack(ids_l).contiguous(), torch.stack(w_l).contiguous())
    return pools


@dataclass(frozen=True)
class RoutingStats:
    max_tokens_per_expert: int  # the most (token, slot) pairs one local expert gets, over all draws
    mean_experts_hit: float  # distinct local experts hit per call
    mean_local_pairs: float  # (token, slot) pairs that land on local experts per call


def routing_stats(ids: torch.Tensor, local: Optional[Sequence[int]], num_experts: int) -> RoutingStats:
    """Statistics of a pool (R, M, topk) of ids; `local` the global ids held here (None = all)."""
    R = ids.shape[0]
    counts = torch.zeros((R, num_experts), dtype=torch.long)
    counts.scatter_add_(1, ids.reshape(R, -1).long(), torch.ones_like(ids.reshape(R, -1), dtype=torch.long))
    if local is not None:
        counts = counts[:, torch.as_tensor(list(local), dtype=torch.long)]
    return RoutingStats(int(counts.max()), float((counts > 0).sum(dim=1).float().mean()),
                        float(counts.sum(dim=1).float().mean()))
