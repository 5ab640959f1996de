"""The planning core: model + layout + quantization -> what every device gets.

Pure (no I/O, no torch): `resolve()` returns a `Resolution` with one `DevicePlan` per
device and the distinct tuning tables (`TableSpec`) the layout needs. Finding the
files on disk is the caller's job (`moeplan.tables.lookup`).

Letters: M tokens, E experts on a device, K hidden size, N intermediate size per
TP shard, topk experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from moeplan.base.errors import QuantError
from moeplan.base.safeio import check_device_name
from moeplan.engines import sglang
from moeplan.engines.profile import EngineProfile
from moeplan.engines.vllm import UNKNOWN_DEVICE, normalize_device_name, tuning_file_name
from moeplan.layout.parallel import DeviceRanks, Layout, check_layout, device_ranks, expert_map, local_expert_ids
from moeplan.layout.quant import (ACTIVATION_DTYPES, DTYPE_CHOICES, QUANT_SCHEMES, QuantConfig, parse_block_shape,
                                  quant_for_scheme)
from moeplan.model.load import load_model
from moeplan.model.spec import ModelSpec


@dataclass(frozen=True)
class QuantRequest:
    """What the user asked for on the command line (`--dtype`, `--block-shape`, ...)."""

    dtype: str = "auto"
    block_shape: Optional[tuple[int, int]] = None
    per_token: bool = False
    per_channel: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One distinct tuning table: the GEMM shape it is tuned for and its file name."""

    E: int
    N: int
    K: int
    topk: int
    scheme: str  # bf16 | fp16 | fp32 | fp8_w8a8 | ... (the --dtype value)
    act_dtype: str  # bfloat16 | float16 | float32
    block_shape: Optional[tuple[int, int]]
    per_token: bool
    per_channel: bool
    config_name: Optional[str]  # the ,dtype= selector
    file_name: str
    devices: tuple[int, ...]  # global device indices that load this table
    down_file_name: Optional[str] = None  # SGLang: GEMM2's own table (`_down`), looked up apart
    merged_shared: int = 0  # SGLang: shared experts run as routed ones (in E and topk), hit by every token
    engine: str = "vllm"  # whose grammar file_name follows


@dataclass(frozen=True)
class DevicePlan:
    ranks: DeviceRanks
    local_experts: tuple[int, ...]
    N: int
    tuning_file: str
    down_file: Optional[str] = None  # SGLang's `_down` name
    merged_shared: int = 0  # SGLang: shared experts merged into this device's kernel

    @property
    def num_local_experts(self) -> int:
        return len(self.local_experts)

    @property
    def kernel_experts(self) -> int:
        """E as the kernel (and the file name) sees it: local routed experts plus merged shared ones."""
        return len(self.local_experts) + self.merged_shared


@dataclass(frozen=True)
class Resolution:
    model: ModelSpec
    layout: Layout
    scheme: str
    act_dtype: str
    block_shape: Optional[tuple[int, int]]
    per_token: bool
    per_channel: bool
    quant: QuantConfig
    config_name: Optional[str]
    device_name: Optional[str]  # normalised; None when unknown
    devices: tuple[DevicePlan, ...]
    profile: Optional[EngineProfile] = None  # whose names these are (None: vLLM's)
    merge_note: Optional[str] = None  # SGLang: why the shared expert is (not) merged

    @property
    def device_known(self) -> bool:
        return self.device_name is not None

    def tables(self) -> list[TableSpec]:
        """Distinct tuning tables, in order of first device that needs each."""
        order: dict[str, list[DevicePlan]] = {}
        for d in self.devices:
            order.setdefault(d.tuning_file, []).append(d)
        out = []
        for name, devs in order.items():
            d0 = devs[0]
            out.append(TableSpec(
                E=d0.kernel_experts, N=d0.N, K=self.model.hidden_size, topk=self.model.top_k + d0.merged_shared,
                scheme=self.scheme, act_dtype=self.act_dtype, block_shape=self.block_shape,
                per_token=self.per_token, per_channel=self.per_channel, config_name=self.config_name,
                file_name=name, devices=tuple(d.ranks.device for d in devs), down_file_name=d0.down_file,
                merged_shared=d0.merged_shared, engine=self.profile.engine if self.profile else "vllm"))
        return out

    def expert_map(self, device: int) -> Optional[list[int]]:
        d = self.devices[device]
        if not d.ranks.use_ep:
            return None
        return expert_map(self.model.num_experts, list(d.local_experts))


def choose_scheme(model: ModelSpec, req: QuantRequest) -> tuple[str, str, Optional[tuple[int, int]]]:
    """(scheme, activation dtype, block shape) for a request; `auto` takes the checkpoint's."""
    dtype = req.dtype.lower()
    if dtype not in DTYPE_CHOICES:
        raise QuantError(f"unknown dtype {req.dtype!r}; valid: {', '.join(DTYPE_CHOICES)}")
    ckpt_scheme, ckpt_block = model.default_dtype()
    if dtype == "auto":
        if ckpt_scheme not in ACTIVATION_DTYPES and ckpt_scheme not in QUANT_SCHEMES:
            raise QuantError(
                f"{model.name}'s checkpoint quantization ({ckpt_scheme}) has no moeplan scheme; "
                f"pass --dtype (valid: {', '.join(DTYPE_CHOICES[1:])})")
        dtype = ckpt_scheme
    block = req.block_shape
    if block is None and dtype == ckpt_scheme and ckpt_block is not None and not (req.per_token or req.per_channel):
        # The checkpoint's own scheme keeps its block shape unless per-token/channel scales were asked for.
        block = tuple(ckpt_block)
    act = ACTIVATION_DTYPES.get(dtype, "bfloat16")
    return dtype, act, (tuple(int(v) for v in block) if block is not None else None)


def resolve(model: ModelSpec, layout: Layout, req: QuantRequest = QuantRequest(),
            device_name: Optional[str] = None, profile: Optional[EngineProfile] = None) -> Resolution:
    """Everything `moeplan resolve` prints, for every device of the layout; the file names
    are `profile`'s engine's (None or a vLLM profile: vLLM's; an SGLang one: `_resolve_sglang`)."""
    if profile is not None and profile.engine == "sglang":
        return _resolve_sglang(model, layout, req, device_name, profile)
    scheme, act, block = choose_scheme(model, req)
    quant = quant_for_scheme(scheme, list(block) if block is not None else None, req.per_token, req.per_channel)
    check_layout(layout, model.num_experts, model.moe_intermediate_size,
                 list(block) if block else None, fp8_block=quant.use_fp8_w8a8 and quant.is_block_quantized)
    cfg_name = quant.config_name(act)
    dev = normalize_device_name(device_name) if device_name else None
    plans = []
    for r in device_ranks(layout):
        experts = local_expert_ids(model.num_experts, r.ep_size, r.ep_rank, layout.placement)
        N = model.moe_intermediate_size // r.tp_size
        check_group_divides(quant, scheme, block, N, model.hidden_size)
        name = tuning_file_name(len(experts), N, dev or UNKNOWN_DEVICE, cfg_name, block)
        plans.append(DevicePlan(r, tuple(experts), N, name))
    return Resolution(model, layout, scheme, act, block, req.per_token, req.per_channel, quant, cfg_name,
                      dev, tuple(plans))


# Schemes whose SGLang Triton tables could not be told apart from bf16's (no dtype string).
NO_SGLANG_TABLE = ("fp8_w8a16", "mxfp4", "nvfp4")


def _resolve_sglang(model: ModelSpec, layout: Layout, req: QuantRequest, device_name: Optional[str],
                   profile: EngineProfile) -> Resolution:
    """`resolve` under an SGLang profile (spec: sglang_engine.md §1.1, §2): SGLang's `,dtype=`
    string (int8_w8a8 has one; fp8_w8a16, mxfp4, nvfp4 have no SGLang Triton table),
    `,per_channel_quant=True`, the spaced block shape, int4's packed N, the device name (spaces
    only), GEMM2's `_down` table, and the shared expert merged into the routed ones under TP
    (E+1 experts, top-(k+1)); EP turns the merge off."""
    scheme, act, block = choose_scheme(model, req)
    if scheme in NO_SGLANG_TABLE:
        raise QuantError(f"--dtype {scheme} has no table in SGLang's Triton fused-MoE path (engine {profile.name}); "
                         f"valid: bf16, fp16, fp32, fp8_w8a8, int8_w8a8, int8_w8a16, int4_w4a16")
    if layout.use_ep and layout.placement != "linear":
        raise QuantError(f"--placement {layout.placement} is not SGLang's: its standard dispatcher places experts "
                         "contiguously; use --placement linear with an SGLang engine")
    quant = quant_for_scheme(scheme, list(block) if block is not None else None, req.per_token, req.per_channel)
    check_layout(layout, model.num_experts, model.moe_intermediate_size,
                 list(block) if block else None, fp8_block=quant.use_fp8_w8a8 and quant.is_block_quantized)
    cfg_name = sglang.config_dtype(scheme, act)
    per_channel = sglang.name_per_channel(cfg_name, block, req.per_channel, profile.name)
    merged, why = sglang.merged_shared_experts(model.architecture, model.num_experts, model.num_shared_experts,
                                               layout.use_ep, scheme)
    if merged and model.shared_expert_intermediate_size not in (None, merged * model.moe_intermediate_size):
        merged, why = 0, "the shared expert's width differs from a routed expert's"
    note = (f"SGLang merges {merged} shared expert(s) into the routed ones: E+{merged}, top-{model.top_k + merged}, "
            "every token hits the merged one" if merged else why)
    dev = sglang.normalize_device_name(device_name) if device_name else None
    plans = []
    for r in device_ranks(layout):
        experts = local_expert_ids(model.num_experts, r.ep_size, r.ep_rank, "linear")
        N = model.moe_intermediate_size // r.tp_size
        check_group_divides(quant, scheme, block, N, model.hidden_size)
        E = len(experts) + merged
        args = (E, sglang.named_N(N, scheme), dev or sglang.UNKNOWN_DEVICE, cfg_name, block, per_channel)
        up = sglang.tuning_file_name(*args)
        down = sglang.tuning_file_name(*args, down=True) if profile.down_tables else None
        plans.append(DevicePlan(r, tuple(experts), N, up, down, merged))
    return Resolution(model, layout, scheme, act, block, req.per_token, req.per_channel, quant, cfg_name,
                      dev, tuple(plans), profile, note)


def check_group_divides(quant: QuantConfig, scheme: str, block: Optional[Sequence[int]], N: int, K: int) -> None:
    """Weight-only group sizes must divide the reduced dimension of both GEMMs (K for w1, N for w2)."""
    g = quant.weight_group_size
    if g and quant.quant_dtype is None and block is not None:
        for dim, what in ((K, "hidden size K"), (N, "per-device intermediate size N")):
            if dim % g:
                raise QuantError(
                    f"group size {g} (block shape {list(block)}) does not divide the {what} {dim} for {scheme}; "
                    f"use a group size that divides {dim}")


def resolution_from_options(
    model: str,
    tp: int = 1,
    dp: int = 1,
    ep: bool = False,
    placement: str = "linear",
    dtype: str = "auto",
    block_shape: Optional[str] = None,
    per_token: bool = False,
    per_channel: bool = False,
    device_name: Optional[str] = None,
    all2all_backend: str = "allgather_reducescatter",
    detect_device: bool = True,
    profile: Optional[EngineProfile] = None,
) -> Resolution:
    """`resolve` from option values as typed (a model reference, `--block-shape` text...); raises
    MoeplanError on bad input. With no device name and `detect_device`, the local GPU's (nvidia-smi)."""
    if device_name is not None:
        check_device_name(device_name)
    spec = load_model(model)
    layout = Layout(tp=tp, dp=dp, ep=ep, placement=placement, all2all_backend=all2all_backend)
    block = tuple(parse_block_shape(block_shape)) if block_shape is not None else None
    req = QuantRequest(dtype=dtype, block_shape=block, per_token=per_token, per_channel=per_channel)
    if device_name is None and detect_device:
        from moeplan.base import gpu

        device_name = gpu.local_device_name()
    return resolve(spec, layout, req, device_name, profile)
