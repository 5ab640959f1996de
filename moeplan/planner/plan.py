"""`moeplan plan`: every valid TP/DP/EP layout of a model's MoE layer on G GPUs, ranked.

For each layout: memory per device (expert weights over all MoE layers with their
quantization scales, the rest of the model as the engine shards it), whether it fits,
the MoE layer's time per batch size (measured from a tuning run's CSV when one is found,
else a roofline floor scaled by what the measured tables show), the communication the
layout implies, and the tuning tables it needs.

Letters: M tokens in the batch (the whole deployment's step: with DP the engine gathers the
DP ranks' tokens before the MoE kernels, so every device's kernel sees M tokens of global
routing), E routed experts (E_loc on one device), K hidden size, N intermediate size per TP
shard (I un-sharded), topk experts per token, V vocabulary, H/H_kv/d attention heads, key/value
heads and head width, G GPUs, tp/dp/ep the layout's sizes.

Pure: no torch/triton, no I/O. Files (tables, CSVs) are found and read by the caller, who
passes them in as `TuningData`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from moeplan.engines.profile import EngineProfile
from moeplan.base.errors import LayoutError, MoeplanError, PlanError
from moeplan.planner.hardware import GiB, Card
from moeplan.engines.registry import default_config
from moeplan.engines.launch import OPERAND_BYTES
from moeplan.model.spec import ModelSpec
from moeplan.engines.vllm import parse_tuning_file_name
from moeplan.base.safeio import MAX_BATCH, check_float, check_int, shown
from moeplan.layout.parallel import MAX_WORLD, Layout
from moeplan.layout.resolve import QuantRequest, Resolution, TableSpec, resolve
from moeplan.tables.measurements import CsvPoint
from moeplan.planner.kvcache import DEFAULT_CONTEXT_LEN, DEFAULT_GPU_MEMORY_UTILIZATION, KvCapacity, check_kv_options, kv_capacity

DEFAULT_BATCH_SIZES = (1, 16, 64, 256, 1024)
MAX_PLAN_BATCHES = 64  # batch sizes in one plan (as tune --batch-sizes)
MAX_LINK_GBPS = 1e6  # Gbit/s per GPU: 250x NVLink 5
_UINT_RE = re.compile(r"[0-9]{1,8}")  # ASCII digits only: int() also takes "1_000" and other scripts' digits


def parse_batch_sizes(text: Optional[str]) -> tuple[int, ...]:
    """`plan --batch-sizes` text -> sorted distinct sizes in 1..MAX_BATCH (at most MAX_PLAN_BATCHES)."""
    if text is None:
        return DEFAULT_BATCH_SIZES
    parts = [p.strip() for p in str(text).split(",")]
    for p in parts:
        if not _UINT_RE.fullmatch(p) or not 1 <= int(p) <= MAX_BATCH:
            raise PlanError(f"--batch-sizes {shown(text)}: {shown(p)} is not a batch size; expected comma-separated "
                            f"integers in 1..{MAX_BATCH}, e.g. 1,16,256")
    values = sorted({int(p) for p in parts})
    if len(values) > MAX_PLAN_BATCHES:
        raise PlanError(f"--batch-sizes {shown(text)} lists {len(values)} sizes; the limit is {MAX_PLAN_BATCHES}")
    return tuple(values)
# The engine keeps 10% of a GPU free by default (gpu_memory_utilization 0.9): weights must fit
# in the other 90%, and what remains of that 90% holds the KV cache and activations.
MEMORY_UTILIZATION = DEFAULT_GPU_MEMORY_UTILIZATION  # 0.9, `--gpu-memory-utilization`
# Link bandwidths, in gigabits per second per GPU and direction.
DEFAULT_LINK_GBPS = 3600.0  # NVLink 4 (H100/H200): 450 GB/s per direction
DEFAULT_NODE_LINK_GBPS = 400.0  # one NDR InfiniBand port per GPU, for groups that span nodes
ACT_BYTES = 2  # bf16 hidden states
RANKING = ("fits first (weights within the memory budget and room for one sequence of KV cache at the context "
           "length); then the geometric mean over the batch sizes of the predicted MoE time per step (kernel time x "
           "MoE layers + communication x MoE layers); then more tokens of KV cache")


@dataclass(frozen=True)
class CalibrationTable:
    """A measured table's shape and its measured/floor ratios per batch size."""

    name: str
    E: int
    N: int
    scheme: str
    winner_ratio: dict[int, float]  # winner time / floor
    default_ratio: dict[int, float]  # default heuristic's time / floor
    device: str = ""  # the card it was measured on (the file name's device_name)


def calibration_table(name: str, points: dict[int, CsvPoint]) -> Optional[CalibrationTable]:
    """From a table's file name and its CSV points; None when the CSV has no floors."""
    try:
        meta = parse_tuning_file_name(name)
    except MoeplanError:
        return None
    w = {M: p.winner_us / p.floor_us for M, p in points.items() if p.winner_us and p.floor_us}
    d = {M: p.default_us / p.floor_us for M, p in points.items() if p.default_us and p.floor_us}
    if not w:
        return None
    scheme = meta.get("dtype") or "bf16"
    return CalibrationTable(name, int(meta["E"]), int(meta["N"]), scheme, w, d, str(meta.get("device") or ""))


@dataclass(frozen=True)
class TuningData:
    """What the caller found on disk: table paths by file name, and CSV points by file name."""

    tables: dict[str, str] = field(default_factory=dict)  # file name -> path of a found table
    csv_points: dict[str, dict[int, CsvPoint]] = field(default_factory=dict)  # file name -> its CSV beside it
    calibration: tuple[CalibrationTable, ...] = ()


def _nearest(keys: Sequence[int], M: int) -> int:
    return min(keys, key=lambda k: (abs(math.log(k) - math.log(M)), k))


def ratio_for(cal: Sequence[CalibrationTable], E: int, N: int, scheme: str, M: int,
              tuned: bool, device: Optional[str] = None) -> tuple[float, Optional[str]]:
    """Measured/floor ratio of the most similar measured table at the nearest batch size:
    its winner's when the layout's table exists, the default heuristic's when it does not
    (the engine then runs the default). Tables measured on `device` (the file names' device
    part) come first, whatever their shape: a ratio carries over between shapes of one card
    better than between cards. (1.0, None) without any measured table."""
    if not cal:
        return 1.0, None
    eight = scheme in ("fp8_w8a8", "int8_w8a8")

    def distance(c: CalibrationTable) -> float:
        d = abs(math.log(c.E / E)) + abs(math.log(c.N / N))
        return d + (2.0 if (c.scheme in ("fp8_w8a8", "int8_w8a8")) != eight else 0.0)

    c = min(cal, key=lambda c: (device is not None and c.device != device, distance(c), c.name))
    ratios = c.default_ratio if (not tuned and c.default_ratio) else c.winner_ratio
    return ratios[_nearest(list(ratios), M)], c.name


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------

_SCALE_BYTES = {"mxfp4": 1, "nvfp4": 1, "int4_w4a16": 2, "int8_w8a16": 2}  # E8M0 / fp8 / bf16; others fp32


@dataclass(frozen=True)
class Memory:
    """Bytes per device (the fullest device of the layout)."""

    experts: int  # routed experts over all MoE layers, with scales and biases
    other: int  # attention, mixers, dense MLPs, shared experts, routers, embeddings, lm_head
    parts: dict[str, int]  # `other` by part
    unknown: tuple[str, ...]  # parts the model's facts do not describe (counted as 0)
    capacity: int  # the GPU's memory
    utilization: float = MEMORY_UTILIZATION  # the engine's gpu_memory_utilization

    @property
    def total(self) -> int:
        return self.experts + self.other

    @property
    def free(self) -> int:
        return self.capacity - self.total

    @property
    def fits(self) -> bool:
        return self.total <= self.utilization * self.capacity

    def gib(self) -> dict:
        r = lambda b: round(b / GiB, 2)  # noqa: E731
        return {"experts": r(self.experts), "other": r(self.other), "total": r(self.total), "free": r(self.free)}


def expert_bytes(res: Resolution, E_loc: int, N: int) -> int:
    """One MoE layer's routed experts on one device: w1 (E_loc, 2N, K) and w2 (E_loc, K, N)
    at the scheme's bytes per element, their scales, and gpt-oss's biases (bf16, 2N + K each)."""
    K = res.model.hidden_size
    w_bytes = OPERAND_BYTES.get(res.scheme, (2, 2))[1]
    total = E_loc * 3 * N * K * w_bytes
    for shape in res.quant.weight_scale_shapes(E_loc, N, K):
        if shape:
            total += math.prod(shape) * _SCALE_BYTES.get(res.scheme, 4)
    if res.model.expert_bias:
        total += E_loc * (2 * N + K) * ACT_BYTES
    return int(total)


def _rest_is_8bit(res: Resolution) -> bool:
    """Whether the non-expert linear layers are stored in 8 bits too: the engine's fp8/int8
    w8a8 schemes quantize every linear layer unless the checkpoint excludes attention
    (`modules_to_not_convert`); weight-only, mxfp4 and nvfp4 checkpoints touch experts only."""
    if res.scheme not in ("fp8_w8a8", "int8_w8a8"):
        return False
    q = res.model.quantization
    skip = (q.raw.get("modules_to_not_convert") or []) if q is not None else []
    return not any("self_attn" in str(m) for m in skip)


def other_bytes(model: ModelSpec, res: Resolution, tp: int) -> tuple[dict[str, int], tuple[str, ...]]:
    """The rest of the model on one device, by part, as the engine shards it over the attention
    TP group (`tp`; DP replicates it): q/o and MLA's up-projections split by heads, key/value
    heads split but never below one per device, MLA's down-projections replicated, dense MLPs and
    shared experts split along their width, embeddings and lm_head split along V, routers
    replicated. Norms, biases of attention and MTP layers are left out (well under 1%)."""
    m, K, L = model, model.hidden_size, model.num_hidden_layers
    moe_layers = m.num_moe_layers or L
    unknown: list[str] = []
    eight = _rest_is_8bit(res)
    wide = 4 if res.act_dtype == "float32" else ACT_BYTES  # unquantized weights are stored as the activations
    lin_bytes = 1.0 if eight else float(wide)
    if eight and res.block_shape and all(res.block_shape):
        lin_bytes += 4.0 / (res.block_shape[0] * res.block_shape[1])  # one fp32 scale per block
    elif eight:
        lin_bytes += 4.0 / K  # per-channel scales, about one per output row
    parts: dict[str, float] = {}

    H, d = m.num_attention_heads, m.head_dim
    attn_layers = m.num_attention_layers if m.num_attention_layers is not None else L
    if H and d and m.kv_lora_rank:  # multi-head latent attention
        rope, v = m.qk_rope_head_dim or 0, m.v_head_dim or d
        q_rep = K * m.q_lora_rank if m.q_lora_rank else 0
        q_shard = (m.q_lora_rank or K) * H * (d + rope)
        replicated = q_rep + K * (m.kv_lora_rank + rope)
        sharded = q_shard + m.kv_lora_rank * H * (d + v) + H * v * K
        parts["attention"] = attn_layers * (replicated + sharded / tp) * lin_bytes
    elif H and d:
        Hkv = m.num_key_value_heads or H
        kv_per_device = max(1, Hkv // tp)
        parts["attention"] = attn_layers * (2 * K * H * d / tp + 2 * K * d * kv_per_device) * lin_bytes
    else:
        unknown.append("attention")
    mixers = L - attn_layers
    if mixers > 0:
        if m.linear_mixer_params:
            parts["linear mixers"] = mixers * m.linear_mixer_params / tp * lin_bytes
        else:
            unknown.append("linear mixers")
    dense_layers = m.num_dense_mlp_layers if m.num_dense_mlp_layers is not None else L - moe_layers
    if dense_layers > 0:
        if m.dense_intermediate_size:
            parts["dense MLP"] = dense_layers * 3 * K * m.dense_intermediate_size / tp * lin_bytes
        else:
            unknown.append("dense MLP")
    if m.num_shared_experts and m.shared_expert_intermediate_size:
        parts["shared experts"] = moe_layers * 3 * K * m.shared_expert_intermediate_size / tp * lin_bytes
    parts["routers"] = moe_layers * K * m.num_experts * wide
    if m.vocab_size:
        copies = 1 if m.tie_word_embeddings else 2
        parts["embeddings + lm_head"] = copies * m.vocab_size * K / tp * wide
    else:
        unknown.append("embeddings")
    return {k: int(v) for k, v in parts.items()}, tuple(unknown)


def memory(res: Resolution, card: Card, utilization: float = MEMORY_UTILIZATION) -> Memory:
    worst = max(res.devices, key=lambda dp: (dp.num_local_experts, dp.N))
    experts = expert_bytes(res, worst.num_local_experts, worst.N) * (res.model.num_moe_layers or
                                                                      res.model.num_hidden_layers)
    parts, unknown = other_bytes(res.model, res, res.layout.tp)
    return Memory(experts, sum(parts.values()), parts, unknown, card.memory_bytes, utilization)


# --------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------


def floor_us(spec: TableSpec, E_global: int, M: int, card: Card) -> float:
    """Roofline floor of one MoE layer call on one device, under uniform routing: bytes are the
    distinct local experts hit (with block scales) plus input and output; flops 2 x local
    (token, slot) pairs x 3 x N x K. The same formula as the tuner's `floor_us`, with the
    expected experts hit in closed form instead of averaged over routing draws."""
    w_bytes = OPERAND_BYTES.get(spec.scheme, (2, 2))[1]
    per_expert = 3 * spec.N * spec.K * w_bytes
    if spec.block_shape and all(spec.block_shape):
        per_expert += 3 * math.ceil(spec.N / spec.block_shape[0]) * math.ceil(spec.K / spec.block_shape[1]) * 4
    hit = spec.E * (1 - (1 - spec.topk / E_global) ** M)
    a_bytes = 4 if spec.act_dtype == "float32" else 2
    bytes_ = hit * per_expert + 2 * M * spec.K * a_bytes
    flops = 2 * (M * spec.topk * spec.E / E_global) * 3 * spec.N * spec.K
    return max(bytes_ / card.copy_bandwidth_Bps, flops / card.peak_flops(spec.scheme)) * 1e6


@dataclass(frozen=True)
class TableNeed:
    spec: TableSpec
    path: Optional[str]  # where the table was found, None if missing
    measured: dict[int, float]  # batch size -> winner's median_us from its CSV
    default_configs: dict[int, str]  # batch size -> the engine's default config (when missing)

    def to_dict(self) -> dict:
        d = {"file": self.spec.file_name, "E": self.spec.E, "N": self.spec.N,
             "devices": len(self.spec.devices), "exists": self.path is not None, "path": self.path,
             "measured_batch_sizes": sorted(self.measured)}
        if self.path is None:
            d["default_configs"] = {str(M): c for M, c in self.default_configs.items()}
        return d


@dataclass(frozen=True)
class Comm:
    kind: str  # none | all-reduce | all-to-all
    bytes_per_token: float  # bytes one device sends per token it handles, per MoE layer
    tokens_share: int  # the device handles M / tokens_share tokens
    gbps: float
    spans_nodes: bool

    def us(self, M: int) -> float:
        if self.bytes_per_token == 0:
            return 0.0
        return self.bytes_per_token * (M / self.tokens_share) / (self.gbps * 1e9 / 8) * 1e6


def communication(res: Resolution, gpus_per_node: int, link_gbps: float, node_link_gbps: float) -> Comm:
    """Per MoE layer and token. Without EP (and with EP but no DP, where every device holds every
    token) the partial outputs are summed over the tp*dp group: a ring all-reduce sends
    2 (g-1)/g x K x 2 bytes per token. With EP and DP the all-to-all kernels send each of the
    DP rank's tokens to its topk experts' owners and back: dispatch topk (g-1)/g x K bytes
    (1 per value for fp8_w8a8, which quantizes before dispatch, else 2) plus combine
    topk (g-1)/g x K x 2 bytes."""
    lay, K, topk = res.layout, res.model.hidden_size, res.model.top_k
    g = lay.world_size
    spans = g > gpus_per_node
    gbps = node_link_gbps if spans else link_gbps
    if g == 1:
        return Comm("none", 0.0, 1, gbps, False)
    remote = (g - 1) / g
    if lay.use_ep and lay.dp > 1:
        disp = 1 if res.scheme == "fp8_w8a8" else ACT_BYTES
        return Comm("all-to-all", topk * remote * K * (disp + ACT_BYTES), lay.dp, gbps, spans)
    return Comm("all-reduce", 2 * remote * K * ACT_BYTES, 1, gbps, spans)


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    gpus: int
    gpus_per_node: Optional[int] = None  # None: min(gpus, 8)
    dtype: str = "auto"
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    link_gbps: float = DEFAULT_LINK_GBPS
    node_link_gbps: float = DEFAULT_NODE_LINK_GBPS
    gpu_memory_utilization: float = MEMORY_UTILIZATION
    context_len: int = DEFAULT_CONTEXT_LEN
    kv_cache_dtype: str = "auto"

    def __post_init__(self):
        check_kv_options(self.gpu_memory_utilization, self.context_len, self.kv_cache_dtype)
        # bounded before anything loops over the divisors of --gpus or over the batch sizes
        check_int("--gpus", self.gpus, 1, MAX_WORLD, PlanError)
        if self.gpus_per_node is not None:
            check_int("--gpus-per-node", self.gpus_per_node, 1, MAX_WORLD, PlanError)
        if not isinstance(self.batch_sizes, (tuple, list)) or not 1 <= len(self.batch_sizes) <= MAX_PLAN_BATCHES:
            raise PlanError(f"--batch-sizes {shown(self.batch_sizes)} is invalid; expected 1..{MAX_PLAN_BATCHES} "
                            f"batch sizes, e.g. 1,16,256")
        for M in self.batch_sizes:
            check_int("--batch-sizes entry", M, 1, MAX_BATCH, PlanError)
        for name in ("link_gbps", "node_link_gbps"):
            check_float(f"--{name.replace('_', '-')}", getattr(self, name), 0, MAX_LINK_GBPS, PlanError)

    @property
    def per_node(self) -> int:
        return self.gpus_per_node or min(self.gpus, 8)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _attention_problem(model: ModelSpec, tp: int) -> Optional[str]:
    """Why the engine's attention refuses this TP size (heads must split evenly), or None."""
    H, Hkv = model.num_attention_heads, model.num_key_value_heads
    if H and H % tp:
        return f"tp={tp} does not divide the {H} attention heads"
    if Hkv and not model.kv_lora_rank and (Hkv % tp if tp <= Hkv else tp % Hkv):
        return f"tp={tp} and the {Hkv} key/value heads do not split evenly"
    return None


def candidate_layouts(model: ModelSpec, gpus: int) -> list[Layout]:
    """Every (tp, dp, ep, placement) with tp*dp = G; round_robin only under EP for models
    with several expert groups (where the engine allows it and it changes which experts share
    a device); EP only with more than one device."""
    out = []
    for tp in sorted(_divisors(gpus), reverse=True):
        dp = gpus // tp
        out.append(Layout(tp=tp, dp=dp, ep=False))
        if gpus > 1:
            out.append(Layout(tp=tp, dp=dp, ep=True, placement="linear"))
            if model.num_expert_groups > 1:
                out.append(Layout(tp=tp, dp=dp, ep=True, placement="round_robin"))
    return out


def valid_resolutions(model: ModelSpec, gpus: int, req: QuantRequest,
                      device_name: str) -> tuple[list[Resolution], list[str]]:
    """Resolutions of the valid layouts, and why each other one is invalid."""
    good, bad = [], []
    for lay in candidate_layouts(model, gpus):
        problem = _attention_problem(model, lay.tp)
        if problem:
            bad.append(f"{lay.describe()}: {problem}")
            continue
        try:
            good.append(resolve(model, lay, req, device_name))
        except LayoutError as e:
            bad.append(f"{lay.describe()}: {e}")
    return good, bad


@dataclass(frozen=True)
class LayoutPlan:
    res: Resolution
    memory: Memory
    moe_us: dict[int, float]  # all MoE layers, per batch size
    sources: dict[int, str]  # measured | modelled, per batch size
    ratio_from: tuple[str, ...]  # measured tables whose ratios scaled the modelled floors
    comm: Comm
    comm_us: dict[int, float]  # all MoE layers, per batch size
    tables: tuple[TableNeed, ...]
    kv: KvCapacity

    @property
    def fits(self) -> bool:
        """Weights within the budget and room for one sequence of KV cache at the context length."""
        return self.memory.fits and self.kv.sequences >= 1

    @property
    def source(self) -> str:
        kinds = set(self.sources.values())
        return kinds.pop() if len(kinds) == 1 else "measured+modelled"

    @property
    def score_us(self) -> float:
        """Geometric mean over the batch sizes of (MoE kernels + communication) per step."""
        vals = [self.moe_us[M] + self.comm_us[M] for M in self.moe_us]
        return math.exp(sum(math.log(max(v, 1e-9)) for v in vals) / len(vals))

    def to_dict(self) -> dict:
        lay = self.res.layout
        return {
            "tp": lay.tp, "dp": lay.dp, "ep": lay.use_ep, "placement": lay.placement if lay.use_ep else None,
            "fits": self.fits, "weights_fit": self.memory.fits, "memory_gib": self.memory.gib(),
            "kv_cache": self.kv.to_dict(),
            "moe_us": {str(M): round(v, 1) for M, v in self.moe_us.items()},
            "moe_source": self.source,
            "comm_bytes_per_token": round(self.comm.bytes_per_token, 1),
            "tables": [t.to_dict() for t in self.tables],
            # beyond the shape: the details behind the numbers
            "comm": {"kind": self.comm.kind, "gbps": self.comm.gbps, "spans_nodes": self.comm.spans_nodes,
                     "us": {str(M): round(v, 1) for M, v in self.comm_us.items()}},
            "memory_parts_gib": {k: round(v / GiB, 2) for k, v in self.memory.parts.items()},
            "memory_unknown": list(self.memory.unknown),
            "moe_source_by_batch": {str(M): s for M, s in self.sources.items()},
            "modelled_ratio_from": list(self.ratio_from),
            "score_us": round(self.score_us, 1),
        }


def plan_layout(res: Resolution, card: Card, req: PlanRequest, data: TuningData,
                profile: EngineProfile) -> LayoutPlan:
    model = res.model
    layers = model.num_moe_layers or model.num_hidden_layers
    needs = []
    for spec in res.tables():
        path = data.tables.get(spec.file_name)
        points = data.csv_points.get(spec.file_name, {}) if path else {}
        measured = {M: points[M].winner_us for M in req.batch_sizes if M in points and points[M].winner_us}
        defaults = {} if path else {
            M: default_config(M, spec.E, spec.N, spec.K, spec.topk, spec.config_name,
                              list(spec.block_shape) if spec.block_shape else None, heuristic=profile.heuristic).short()
            for M in req.batch_sizes}
        needs.append(TableNeed(spec, path, measured, defaults))
    moe_us, sources, used = {}, {}, []
    for M in req.batch_sizes:
        worst, src = 0.0, "measured"
        for t in needs:  # the slowest device sets the layer's time
            if M in t.measured:
                us = t.measured[M]
            else:
                ratio, name = ratio_for(data.calibration, t.spec.E, t.spec.N, t.spec.scheme, M, t.path is not None,
                                        card.key)
                us = floor_us(t.spec, model.num_experts, M, card) * ratio
                src = "modelled"
                if name and name not in used:
                    used.append(name)
            worst = max(worst, us)
        moe_us[M], sources[M] = worst * layers, src
    comm = communication(res, req.per_node, req.link_gbps, req.node_link_gbps)
    comm_us = {M: comm.us(M) * layers for M in req.batch_sizes}
    mem = memory(res, card, req.gpu_memory_utilization)
    kv = kv_capacity(res, mem.total, card.memory_bytes, req.gpu_memory_utilization, req.context_len,
                     req.kv_cache_dtype)
    return LayoutPlan(res, mem, moe_us, sources, tuple(used), comm, comm_us, tuple(needs), kv)


@dataclass(frozen=True)
class Plan:
    model: ModelSpec
    card: Card
    card_reason: str
    request: PlanRequest
    layouts: tuple[LayoutPlan, ...]  # ranked
    invalid: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "gpus": self.request.gpus,
            "layouts": [lp.to_dict() for lp in self.layouts],
            "device": {"name": self.card.name, "memory_gib": round(self.card.memory_gib, 2),
                       "copy_bandwidth_TBps": self.card.copy_bandwidth_Bps / 1e12, "source": self.card.source,
                       "why": self.card_reason},
            "gpus_per_node": self.request.per_node,
            "batch_sizes": list(self.request.batch_sizes),
            "gpu_memory_utilization": self.request.gpu_memory_utilization,
            "context_len": self.request.context_len, "kv_cache_dtype": self.request.kv_cache_dtype,
            "link_gbps": self.request.link_gbps, "node_link_gbps": self.request.node_link_gbps,
            "ranking": RANKING,
            "invalid_layouts": list(self.invalid),
        }


def make_plan(model: ModelSpec, card: Card, card_reason: str, req: PlanRequest, data: TuningData,
              profile: EngineProfile, find: Optional[Callable[[Sequence[Resolution]], TuningData]] = None) -> Plan:
    """Rank the valid layouts of `model` on `req.gpus` cards. `find`, when given, is called with
    the valid resolutions and returns the TuningData for their tables (the caller's file lookup)."""
    qreq = QuantRequest(dtype=req.dtype)
    good, bad = valid_resolutions(model, req.gpus, qreq, card.name)
    if not good:
        ok = [g for g in range(1, 65) if valid_resolutions(model, g, qreq, card.name)[0]]
        why = sorted(bad, key=lambda b: "attention heads" in b or "key/value heads" in b)  # MoE reasons first
        raise PlanError(f"no valid layout of {model.alias} on {req.gpus} GPU(s) ({'; '.join(why[:3])}); "
                        f"GPU counts with a valid layout: {', '.join(map(str, ok[:16]))}")
    if find is not None:
        data = find(good)
    plans = [plan_layout(r, card, req, data, profile) for r in good]
    order = sorted(range(len(plans)), key=lambda i: (not plans[i].fits, round(plans[i].score_us, 1),
                                                     -plans[i].kv.tokens, -plans[i].memory.free, i))
    return Plan(model, card, card_reason, req, tuple(plans[i] for i in order), tuple(bad))
