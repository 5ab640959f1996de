"""MoE model descriptions: the bundled presets and a reader for HF ``config.json`` files.

Dimension letters used throughout moeplan (they match the fused-MoE kernel and the
tuning-file names ``E=..,N=..``):

* ``E``    -- routed experts of the layer (``num_experts``; shared experts are not counted).
* ``K``    -- the model hidden size (``hidden_size``): GEMM1's reduction dim, GEMM2's output.
* ``N``    -- the intermediate (FFN) width of ONE expert. ``ModelSpec.moe_intermediate_size``
              is the un-sharded width; under tensor parallelism a device holds
              ``N = moe_intermediate_size // tp`` of it. GEMM1 produces ``2N`` (gate + up).
* ``topk`` -- experts each token is routed to (``top_k``).

This module is deliberately pure: it imports only the standard library and
``moeplan.errors`` (never torch, triton, rich or typer) so ``moeplan resolve`` starts fast.
Every user-facing failure is a one-line ``ModelError``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from moeplan import safeio
from moeplan.errors import ModelError

__all__ = [
    "ACTIVATIONS",
    "PRESETS_ENV",
    "PRESET_COLUMNS",
    "SCHEMES",
    "CheckpointQuant",
    "ModelSpec",
    "clear_preset_cache",
    "find_preset",
    "list_presets",
    "load_model",
    "model_from_config",
    "parse_quantization_config",
    "preset_rows",
    "presets_dir",
    "read_config_file",
    "spec_from_preset",
]

#: moeplan dtype names a checkpoint can run as (``CheckpointQuant.scheme``).
SCHEMES = ("fp8_w8a8", "fp8_w8a16", "int8_w8a8", "int8_w8a16", "int4_w4a16", "mxfp4", "nvfp4")
#: Expert activations: SwiGLU with SiLU or GELU, or gpt-oss's clamped interleaved SwiGLU.
ACTIVATIONS = ("silu", "gelu", "swigluoai")
#: Environment variable that overrides the preset folder.
from moeplan.paths import PRESETS_ENV  # noqa: E402 - data paths are decided in moeplan.paths


_EXPERT_FIELDS = "num_local_experts / num_experts / n_routed_experts / moe_num_experts / ffn_config.moe_num_experts"


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _fail(msg: str) -> ModelError:
    return ModelError(_one_line(msg))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The largest values a config.json or preset may declare. Real checkpoints stay far below
# (the most experts today: 512; the widest hidden size: 16384); the plan builds per-expert
# and per-layer lists, so an absurd count stops here instead of exhausting memory.
MAX_EXPERTS = 4096
MAX_LAYERS = 4096
MAX_DIM = 1 << 20  # hidden size, expert widths, quantization blocks and groups


# --------------------------------------------------------------------------------------
# Checkpoint quantization
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointQuant:
    """How a checkpoint's expert weights are stored (from its ``quantization_config``).

    ``scheme`` is the moeplan dtype name (one of ``SCHEMES``) or None when moeplan does
    not know how the engine would run it. ``block_shape`` is ``(block_n, block_k)`` for
    block-quantized fp8, or ``(0, group_size)`` for group-quantized weight-only int4/int8
    (the engine's convention; a zero entry keeps it out of tuning-file names).
    """

    method: str
    scheme: Optional[str]
    block_shape: Optional[tuple[int, int]] = None
    per_channel: bool = False
    per_token: bool = False
    activation_scheme: Optional[str] = None
    raw: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def describe(self) -> str:
        """Short human string: ``fp8 block [128,128]``, ``mxfp4``, ``int4_w4a16 group 128``..."""
        if self.scheme is None:
            return f"{self.method} (unsupported)"
        if self.scheme in ("mxfp4", "nvfp4"):
            return self.scheme
        bs = self.block_shape
        if bs is not None and bs[0] == 0:
            text = f"{self.scheme} group {bs[1]}"
        elif bs is not None:
            base = "fp8" if self.scheme == "fp8_w8a8" else self.scheme
            text = f"{base} block [{bs[0]},{bs[1]}]"
        else:
            base = "fp8" if self.scheme == "fp8_w8a8" else self.scheme
            text = f"{base} {'per-channel' if self.per_channel else 'per-tensor'}"
            if self.per_token:
                text += " per-token"
            if self.activation_scheme == "static":
                text += " static"
        if self.method not in ("fp8", self.scheme):
            text += f" ({self.method})"
        return text

    def to_dict(self) -> dict:
        """JSON-able summary (no raw config)."""
        return {
            "method": self.method,
            "scheme": self.scheme,
            "block_shape": list(self.block_shape) if self.block_shape is not None else None,
            "per_channel": self.per_channel,
            "per_token": self.per_token,
            "activation_scheme": self.activation_scheme,
            "description": self.describe(),
        }


def _block_pair(value: Any, key: str, source: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(_is_int(v) and 0 < v <= MAX_DIM for v in value)
    ):
        raise _fail(
            f"'{source}': {key}={safeio.shown(value)} is not a valid block shape "
            f"(expected two integers in 1..{MAX_DIM} [block_n, block_k], e.g. [128, 128])"
        )
    return (int(value[0]), int(value[1]))


def _group(value: Any, key: str, source: str) -> Optional[int]:
    """Group size: a positive int, or None for per-channel (-1 / 0 / null)."""
    if value is None:
        return None
    if not _is_int(value) or not -1 <= value <= MAX_DIM:
        raise _fail(f"'{source}': {key}={safeio.shown(value)} is not a valid group size "
                    f"(expected an integer in 1..{MAX_DIM}, or -1 for per-channel)")
    return int(value) if value > 0 else None


def _weight_only(method: str, qc: dict, bits: Any, group: Optional[int], source: str) -> CheckpointQuant:
    scheme = {4: "int4_w4a16", 8: "int8_w8a16"}.get(bits) if _is_int(bits) else None
    if scheme is None:
        key = "bits" if "bits" in qc else "w_bit"
        raise _fail(f"'{source}': quantization_config.{key}={safeio.shown(bits)} is not a weight width moeplan "
                    f"can plan for quant_method {method!r}; valid: 4 (int4_w4a16), 8 (int8_w8a16)")
    return CheckpointQuant(
        method=method,
        scheme=scheme,
        block_shape=(0, group) if group is not None and scheme is not None else None,
        per_channel=scheme is not None and group is None,
        per_token=False,
        activation_scheme=None,
        raw=qc,
    )


def _compressed_tensors(method: str, qc: dict, source: str) -> CheckpointQuant:
    field_ = "quantization_config.config_groups"
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise _fail(f"'{source}': {field_}={safeio.shown(groups)} must be a non-empty object of quantization "
                    "groups, each with a 'weights' object")
    for gname, g in groups.items():
        where = f"{field_}.{safeio.printable(gname)}"
        if not isinstance(g, dict) or not isinstance(g.get("weights"), dict):
            raise _fail(f"'{source}': {where} must be an object with a 'weights' object "
                        "(num_bits, type, strategy)")
        if not isinstance(g.get("targets", []), list):
            raise _fail(f"'{source}': {where}.targets={safeio.shown(g.get('targets'))} must be a list of names")
        if g.get("input_activations") is not None and not isinstance(g.get("input_activations"), dict):
            raise _fail(f"'{source}': {where}.input_activations={safeio.shown(g.get('input_activations'))} "
                        "must be an object or null")
    candidates = sorted(groups.items())
    linear = [(n, g) for n, g in candidates if "Linear" in (g.get("targets") or [])]
    gname, chosen = (linear or candidates)[0]
    where = f"{field_}.{safeio.printable(gname)}"
    w = chosen["weights"]
    a = chosen.get("input_activations") if isinstance(chosen.get("input_activations"), dict) else None
    bits, wtype, strategy = w.get("num_bits"), w.get("type", "int"), w.get("strategy")
    abits, atype = (a.get("num_bits"), a.get("type", "int")) if a else (None, None)
    fmt = str(qc.get("format") or "")
    scheme: Optional[str] = None
    if wtype == "float" and bits == 4:
        scheme = "mxfp4" if ("mxfp4" in fmt or w.get("group_size") == 32) else "nvfp4"
    elif wtype == "int" and bits == 4 and a is None:
        scheme = "int4_w4a16"
    elif wtype == "int" and bits == 8:
        scheme = "int8_w8a16" if a is None else ("int8_w8a8" if (atype, abits) == ("int", 8) else None)
    elif wtype == "float" and bits == 8:
        scheme = "fp8_w8a16" if a is None else ("fp8_w8a8" if (atype, abits) == ("float", 8) else None)
    block: Optional[tuple[int, int]] = None
    if scheme in ("mxfp4", "nvfp4"):
        block = None
    elif strategy == "block" and w.get("block_structure") is not None:
        block = _block_pair(w.get("block_structure"), f"{where}.weights.block_structure", source)
    elif strategy == "group":
        g = _group(w.get("group_size"), f"{where}.weights.group_size", source)
        block = (0, g) if g is not None else None
    if scheme is None:
        acts = "none" if a is None else f"num_bits={safeio.shown(abits)}, type={safeio.shown(atype)}"
        raise _fail(f"'{source}': {where}: weights num_bits={safeio.shown(bits)}, type={safeio.shown(wtype)} "
                    f"with input activations {acts} is not a scheme moeplan can plan; valid: 4-bit float "
                    "(mxfp4/nvfp4), 4-bit int weights only, 8-bit int or float weights with none or the same "
                    "activations")
    act_scheme = None
    if a is not None:
        act_scheme = "dynamic" if a.get("dynamic") else "static"
    return CheckpointQuant(
        method=method,
        scheme=scheme,
        block_shape=block if scheme is not None else None,
        per_channel=scheme is not None and strategy == "channel",
        per_token=scheme is not None and a is not None and a.get("strategy") == "token",
        activation_scheme=act_scheme,
        raw=qc,
    )


def _modelopt(method: str, qc: dict, source: str) -> CheckpointQuant:
    inner = qc.get("quantization") if isinstance(qc.get("quantization"), dict) else {}
    algo = qc.get("quant_algo") or inner.get("quant_algo") or ""
    algo = algo.upper() if isinstance(algo, str) else algo
    if method == "modelopt_fp4" or algo == "NVFP4":
        return CheckpointQuant(method, "nvfp4", raw=qc)
    if algo == "MXFP4":
        return CheckpointQuant(method, "mxfp4", raw=qc)
    if algo == "FP8":
        return CheckpointQuant(method, "fp8_w8a8", activation_scheme="static", raw=qc)
    raise _fail(f"'{source}': quantization_config.quant_algo={safeio.shown(algo)} is not one moeplan can plan for "
                f"quant_method {method!r}; valid: FP8, NVFP4, MXFP4")


#: ``quant_method`` values moeplan maps to a scheme (anything else is refused, naming the field).
QUANT_METHODS = ("fp8", "fbgemm_fp8", "mxfp4", "modelopt", "modelopt_fp4", "compressed-tensors", "gptq",
                 "gptq_marlin", "awq", "awq_marlin", "moe_wna16", "auto-round", "autoround", "experts_int8")


def parse_quantization_config(qc: Any, source: str) -> Optional[CheckpointQuant]:
    """Map a config's ``quantization_config`` to a CheckpointQuant (None when absent).

    fp8 (block or per-tensor), mxfp4 and modelopt nvfp4 are exact; compressed-tensors,
    gptq, awq and friends are best effort. Anything else (an unknown or missing method, a
    width or group structure no moeplan scheme runs) is a ModelError naming the field: a
    checkpoint moeplan cannot read is never planned as bf16 without a word.
    """
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise _fail(f"'{source}': quantization_config must be a JSON object, got {type(qc).__name__} {safeio.shown(qc)}")
    method = qc.get("quant_method")
    if not isinstance(method, str) or method.lower() not in QUANT_METHODS:
        raise _fail(f"'{source}': quantization_config.quant_method={safeio.shown(method)} is not a method moeplan "
                    f"can plan; valid: {', '.join(QUANT_METHODS)}")
    method = method.lower()
    if method == "fp8":
        wbs = qc.get("weight_block_size")
        block = _block_pair(wbs, "weight_block_size", source) if wbs is not None else None
        act = qc.get("activation_scheme", "dynamic")
        if act is not None and act not in ("dynamic", "static"):
            raise _fail(f"'{source}': quantization_config.activation_scheme={safeio.shown(act)} is not valid; "
                        "valid: dynamic, static")
        return CheckpointQuant(method, "fp8_w8a8", block, False, False, act, raw=qc)
    if method == "fbgemm_fp8":
        return CheckpointQuant(method, "fp8_w8a8", None, True, True, "dynamic", raw=qc)
    if method == "mxfp4":
        return CheckpointQuant(method, "mxfp4", raw=qc)
    if method in ("modelopt", "modelopt_fp4"):
        return _modelopt(method, qc, source)
    if method == "compressed-tensors":
        return _compressed_tensors(method, qc, source)
    if method in ("gptq", "gptq_marlin", "awq", "awq_marlin", "moe_wna16", "auto-round", "autoround"):
        bits = qc.get("bits", qc.get("w_bit"))
        gkey = "group_size" if "group_size" in qc else "q_group_size"
        return _weight_only(method, qc, bits, _group(qc.get(gkey), gkey, source), source)
    return CheckpointQuant(method, "int8_w8a16", None, True, False, None, raw=qc)  # experts_int8


# --------------------------------------------------------------------------------------
# ModelSpec
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The MoE-relevant shape of one checkpoint (see the module docstring for E/K/N/topk)."""

    name: str  # HF repo id (or the config's folder name for a local config.json)
    alias: str  # short lowercase handle, unique among presets
    model_type: str
    architecture: str  # architectures[0]
    num_experts: int  # E (routed experts)
    top_k: int  # topk
    hidden_size: int  # K
    moe_intermediate_size: int  # per-expert FFN width, un-sharded (N = this // tp)
    num_shared_experts: int = 0
    shared_expert_intermediate_size: Optional[int] = None  # total width of the shared MLP
    num_hidden_layers: int
    num_moe_layers: Optional[int] = None
    activation: str = "silu"  # "silu" | "gelu" | "swigluoai"
    expert_bias: bool = False
    quantization: Optional[CheckpointQuant] = None
    source: str = field(default="", compare=False)  # preset file or config.json path
    # The rest of the model (what `moeplan plan` needs for memory; None = not known). Letters:
    # V vocabulary, H query heads, H_kv key/value heads, d head width.
    vocab_size: Optional[int] = None  # V: embedding rows (and lm_head rows unless tied)
    tie_word_embeddings: bool = False  # lm_head shares the embedding matrix
    num_attention_heads: Optional[int] = None  # H
    num_key_value_heads: Optional[int] = None  # H_kv (GQA); equal to H for plain MHA
    head_dim: Optional[int] = None  # d of softmax attention; MLA: the no-rope part of q/k (qk_nope_head_dim)
    q_lora_rank: Optional[int] = None  # MLA: rank of q's low-rank projection (None: a full q_proj)
    kv_lora_rank: Optional[int] = None  # MLA when set: rank of the shared key/value latent
    qk_rope_head_dim: Optional[int] = None  # MLA: rotary part of q/k per head
    v_head_dim: Optional[int] = None  # MLA: value width per head
    dense_intermediate_size: Optional[int] = None  # width of the dense (non-MoE) MLP layers
    num_dense_mlp_layers: Optional[int] = None  # layers running a dense MLP (None: the non-MoE layers)
    num_attention_layers: Optional[int] = None  # layers with softmax attention (None: all); hybrids fewer
    linear_mixer_params: Optional[int] = None  # parameters of one non-attention mixer layer (Mamba, linear attention)
    num_expert_groups: int = 1  # routing groups (DeepSeek n_group); the engine allows round_robin placement only above 1

    def __post_init__(self) -> None:
        who = self.alias or self.name or "model"
        for key in ("num_experts", "top_k", "hidden_size", "moe_intermediate_size", "num_hidden_layers"):
            v = getattr(self, key)
            if not _is_int(v) or v <= 0:
                raise _fail(f"{who}: {key}={v!r} must be a positive integer")
        if self.top_k > self.num_experts:
            raise _fail(f"{who}: top_k={self.top_k} exceeds num_experts={self.num_experts} (valid: 1..{self.num_experts})")
        if not _is_int(self.num_shared_experts) or self.num_shared_experts < 0:
            raise _fail(f"{who}: num_shared_experts={self.num_shared_experts!r} must be a non-negative integer")
        sw = self.shared_expert_intermediate_size
        if self.num_shared_experts == 0 and sw is not None:
            raise _fail(f"{who}: shared_expert_intermediate_size={sw!r} given but num_shared_experts=0 (use null)")
        if self.num_shared_experts > 0 and (not _is_int(sw) or sw <= 0):
            raise _fail(f"{who}: shared_expert_intermediate_size={sw!r} must be a positive integer when num_shared_experts > 0")
        nm = self.num_moe_layers
        if nm is not None and (not _is_int(nm) or not 0 < nm <= self.num_hidden_layers):
            raise _fail(f"{who}: num_moe_layers={nm!r} must be an integer in 1..{self.num_hidden_layers}")
        if self.activation not in ACTIVATIONS:
            raise _fail(f"{who}: activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not isinstance(self.expert_bias, bool):
            raise _fail(f"{who}: expert_bias={self.expert_bias!r} must be true or false")
        self._check_rest(who)

    def _check_rest(self, who: str) -> None:
        """The rest-of-model fields: positive integers or null, booleans, counts within the layers."""
        for key in _REST_FIELDS:
            v = getattr(self, key)
            if key == "tie_word_embeddings":
                if not isinstance(v, bool):
                    raise _fail(f"{who}: tie_word_embeddings={v!r} must be true or false")
            elif v is not None and (not _is_int(v) or v <= 0):
                raise _fail(f"{who}: {key}={v!r} must be a positive integer or null")
        for key in ("num_dense_mlp_layers", "num_attention_layers"):
            v = getattr(self, key)
            if v is not None and v > self.num_hidden_layers:
                raise _fail(f"{who}: {key}={v} exceeds num_hidden_layers={self.num_hidden_layers}")

    @classmethod
    def from_name(cls, name: str) -> "ModelSpec":
        """A preset by alias or repo id (case-insensitive); ModelError if unknown."""
        return find_preset(name)

    def default_dtype(self) -> tuple[str, Optional[tuple[int, int]]]:
        """``(scheme, block_shape)`` the checkpoint runs as; ``("bf16", None)`` if unquantized/unknown."""
        q = self.quantization
        if q is not None and q.scheme is not None:
            return (q.scheme, q.block_shape)
        return ("bf16", None)

    def to_dict(self) -> dict:
        """The one JSON form of a spec: the preset-file form (``configs/<alias>.json``).

        Every field by name, ``quantization`` as the checkpoint's verbatim
        ``quantization_config`` (or null), so ``spec_from_preset(spec.to_dict(), ...)``
        rebuilds an equal spec. ``resolve --json``, ``models --json`` and ``plan --json``
        all print this; ``source`` (where it was read from) is not a fact of the model.
        """
        d = {"alias": self.alias, "name": self.name}
        d.update({k: getattr(self, k) for k in _SPEC_FIELDS})
        d["quantization"] = dict(self.quantization.raw) if self.quantization else None
        d.update({k: getattr(self, k) for k in _REST_FIELDS})
        return d

    # Kept so existing callers work; the same form as to_dict.
    to_preset_dict = to_dict


# The ModelSpec numbers and names shared by the preset files and the JSON output, in file order.
_SPEC_FIELDS = (
    "model_type",
    "architecture",
    "num_experts",
    "top_k",
    "hidden_size",
    "moe_intermediate_size",
    "num_shared_experts",
    "shared_expert_intermediate_size",
    "num_hidden_layers",
    "num_moe_layers",
    "activation",
    "expert_bias",
)
# The rest-of-model fields (optional in preset files: absent means unknown, or the default).
_REST_FIELDS = (
    "vocab_size",
    "tie_word_embeddings",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "v_head_dim",
    "dense_intermediate_size",
    "num_dense_mlp_layers",
    "num_attention_layers",
    "linear_mixer_params",
    "num_expert_groups",
)


# --------------------------------------------------------------------------------------
# config.json -> ModelSpec
# --------------------------------------------------------------------------------------

# Conventions ("families"): how a config names E / topk / expert width / shared experts /
# MoE-layer selection. See shared/reference/moe_models_notes.md.
_ARCH_FAMILY = {
    "MixtralForCausalLM": "mixtral",
    "PhiMoEForCausalLM": "mixtral",
    "PhimoeForCausalLM": "mixtral",
    "GraniteMoeForCausalLM": "mixtral",
    "GraniteMoeSharedForCausalLM": "mixtral",
    "GraniteMoeHybridForCausalLM": "mixtral",
    "MiniMaxM1ForCausalLM": "mixtral",
    "MiniMaxText01ForCausalLM": "mixtral",
    "MiniMaxForCausalLM": "mixtral",
    "MiniMaxM2ForCausalLM": "mixtral",
    "ArcticForCausalLM": "arctic",
    "GptOssForCausalLM": "gpt_oss",
    "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3NextForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_moe",
    "OlmoeForCausalLM": "olmoe",
    "JambaForCausalLM": "jamba",
    "DeepseekForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek",
    "DeepseekV3ForCausalLM": "deepseek",
    "DeepseekV32ForCausalLM": "deepseek",
    "KimiK2ForCausalLM": "deepseek",
    "Glm4MoeForCausalLM": "glm4_moe",
    "Glm4vMoeForConditionalGeneration": "glm4_moe",
    "DbrxForCausalLM": "dbrx",
    "Ernie4_5_MoeForCausalLM": "ernie",
    "HunYuanMoEV1ForCausalLM": "hunyuan",
    "HunYuanForCausalLM": "hunyuan",
}

_TYPE_FAMILY = {
    "mixtral": "mixtral",
    "phimoe": "mixtral",
    "granitemoe": "mixtral",
    "granitemoeshared": "mixtral",
    "granitemoehybrid": "mixtral",
    "minimax": "mixtral",
    "minimax_m1": "mixtral",
    "minimax_m2": "mixtral",
    "arctic": "arctic",
    "gpt_oss": "gpt_oss",
    "llama4": "llama4",
    "llama4_text": "llama4",
    "qwen2_moe": "qwen2_moe",
    "qwen3_next": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "qwen3_vl_moe": "qwen3_moe",
    "qwen3_vl_moe_text": "qwen3_moe",
    "olmoe": "olmoe",
    "jamba": "jamba",
    "deepseek": "deepseek",
    "deepseek_v2": "deepseek",
    "deepseek_v3": "deepseek",
    "deepseek_v32": "deepseek",
    "kimi_k2": "deepseek",
    "glm4_moe": "glm4_moe",
    "glm4v_moe": "glm4_moe",
    "dbrx": "dbrx",
    "ernie4_5_moe": "ernie",
    "hunyuan": "hunyuan",
    "hunyuan_v1_moe": "hunyuan",
}

_FAMILY_LABEL = {
    "mixtral": "Mixtral-style",
    "arctic": "Arctic (Mixtral-style)",
    "gpt_oss": "gpt-oss (Mixtral-style)",
    "llama4": "Llama-4 (Mixtral-style)",
    "qwen2_moe": "Qwen-style",
    "qwen3_moe": "Qwen-style",
    "olmoe": "OLMoE-style",
    "jamba": "Jamba",
    "deepseek": "DeepSeek-style",
    "glm4_moe": "GLM-4.5 (DeepSeek-style)",
    "dbrx": "DBRX",
    "ernie": "ERNIE-4.5",
    "hunyuan": "Hunyuan",
}


class _Fields:
    """Reads typed values from one config dict, raising one-line ModelErrors naming the key."""

    def __init__(self, d: dict, source: str, what: str, prefix: str = "") -> None:
        self.d, self.source, self.what, self.prefix = d, source, what, prefix

    def has(self, key: str) -> bool:
        return self.d.get(key) is not None

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def raw(self, key: str, default: Any = None) -> Any:
        v = self.d.get(key)
        return default if v is None else v

    def first(self, key: str) -> Any:
        """Value, or element [0] of a per-layer list (Hunyuan, ERNIE-VL)."""
        v = self.d.get(key)
        if isinstance(v, list):
            if not v:
                raise _fail(f"'{self.source}': {self._name(key)}=[] is an empty per-layer list ({self.what})")
            return v[0]
        return v

    def pos(self, key: str, meaning: str, *, per_layer: bool = False, hi: int = MAX_DIM) -> int:
        v = self.first(key) if per_layer else self.d.get(key)
        if v is None:
            raise _fail(f"'{self.source}' ({self.what}) has no '{self._name(key)}' ({meaning})")
        return self._check_pos(key, v, meaning, hi)

    def opt_pos(self, key: str, default: int, meaning: str, hi: int = MAX_LAYERS) -> int:
        v = self.d.get(key)
        return default if v is None else self._check_pos(key, v, meaning, hi)

    def _check_pos(self, key: str, v: Any, meaning: str, hi: int) -> int:
        if not _is_int(v) or not 0 < v <= hi:
            raise _fail(f"'{self.source}': {self._name(key)}={safeio.shown(v)} must be a positive integer, at most {hi} ({meaning})")
        return int(v)

    def nonneg(self, key: str, default: int, *, per_layer: bool = False) -> int:
        return self.int_any(key, default, per_layer=per_layer, minimum=0)

    def int_any(self, key: str, default: int, *, per_layer: bool = False, minimum: Optional[int] = None) -> int:
        v = self.first(key) if per_layer else self.d.get(key)
        if v is None:
            return default
        lo = -MAX_DIM if minimum is None else minimum
        if not _is_int(v) or not lo <= v <= MAX_DIM:
            raise _fail(f"'{self.source}': {self._name(key)}={safeio.shown(v)} must be an integer in {lo}..{MAX_DIM}")
        return int(v)


def _activation(value: Any, key: str, source: str) -> str:
    if value is None:
        return "silu"
    name = str(value).lower()
    if name in ("silu", "swish", "swiglu"):
        return "silu"
    if name.startswith("gelu"):
        return "gelu"
    raise _fail(f"'{source}': {key}={safeio.shown(value)} is not a supported expert activation (valid: silu/swish, gelu*)")


def _family_of(arch: Optional[str], model_types: list[str], body: dict) -> Optional[str]:
    if arch in _ARCH_FAMILY:
        return _ARCH_FAMILY[arch]
    for mt in model_types:
        if mt in _TYPE_FAMILY:
            return _TYPE_FAMILY[mt]
    # Unknown architecture: recognise the convention by its field names.
    ffn = body.get("ffn_config")
    if isinstance(ffn, dict) and ffn.get("moe_num_experts") is not None:
        return "dbrx"
    if body.get("n_routed_experts") is not None:
        return "deepseek"
    if body.get("moe_num_experts") is not None:
        return "ernie"
    if body.get("num_local_experts") is not None:
        return "mixtral"
    if body.get("num_experts") is not None:
        if body.get("moe_topk") is not None:
            return "hunyuan"
        if body.get("moe_intermediate_size") is not None:
            return "qwen2_moe"
        return "olmoe"
    return None


def _count(n_layers: int, pred) -> int:
    return sum(1 for i in range(n_layers) if pred(i))


def _rest_of_model(body: dict, family: str, L: int) -> dict:
    """The rest-of-model fields of ModelSpec, best effort: a value that is missing or not a
    positive integer is left out (unknown), never an error, since only `plan` uses them."""

    def pos(d: Any, key: str) -> Optional[int]:
        v = d.get(key) if isinstance(d, dict) else None
        if isinstance(v, list) and v:  # per-layer lists (Hunyuan): the first layer's
            v = v[0]
        return int(v) if _is_int(v) and v > 0 else None

    K = pos(body, "hidden_size") or pos(body, "d_model")
    out: dict[str, Any] = {"vocab_size": pos(body, "vocab_size")}
    if isinstance(body.get("tie_word_embeddings"), bool):
        out["tie_word_embeddings"] = body["tie_word_embeddings"]
    attn = body.get("attn_config") if isinstance(body.get("attn_config"), dict) else {}  # DBRX
    H = pos(body, "num_attention_heads") or pos(body, "n_heads")
    out["num_attention_heads"] = H
    out["num_key_value_heads"] = pos(body, "num_key_value_heads") or pos(attn, "kv_n_heads") or H
    if pos(body, "kv_lora_rank"):  # multi-head latent attention (DeepSeek-V2/V3, Kimi)
        for key in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim"):
            out[key] = pos(body, key)
        out["head_dim"] = pos(body, "qk_nope_head_dim")
    else:
        out["head_dim"] = pos(body, "head_dim") or (K // H if K and H and K % H == 0 else None)
    # Dense MLP width: `intermediate_size` means the dense width only in some families.
    if family == "llama4":
        out["dense_intermediate_size"] = pos(body, "intermediate_size_mlp")
    elif family == "arctic":  # a residual MLP of width hidden_size runs beside the MoE in every layer
        out["dense_intermediate_size"], out["num_dense_mlp_layers"] = K, L
    elif family in ("deepseek", "glm4_moe", "ernie", "jamba", "hunyuan", "qwen2_moe", "qwen3_moe"):
        out["dense_intermediate_size"] = pos(body, "intermediate_size")
    # Hybrid models: layers with softmax attention, and the size of the other mixers.
    kinds = body.get("layer_types") or body.get("attn_type_list")
    period = pos(body, "attn_layer_period")
    if isinstance(kinds, list) and kinds:
        # sliding-window layers (gpt-oss) are attention too; MiniMax marks linear layers 0
        out["num_attention_layers"] = sum(1 for k in kinds if k not in ("linear_attention", "mamba", "linear", 0))
    elif pos(body, "full_attention_interval"):
        step = pos(body, "full_attention_interval")
        out["num_attention_layers"] = sum(1 for i in range(L) if (i + 1) % step == 0)
    elif period:
        offset = body.get("attn_layer_offset") if _is_int(body.get("attn_layer_offset")) else 0
        out["num_attention_layers"] = sum(1 for i in range(L) if i % period == offset)
    out["linear_mixer_params"] = _linear_mixer_params(body, K, H, out.get("head_dim"))
    out["num_expert_groups"] = pos(body, "n_group") or 1
    return {k: v for k, v in out.items() if v is not None}


def _linear_mixer_params(body: dict, K: Optional[int], H: Optional[int], d: Optional[int]) -> Optional[int]:
    """Parameters of one non-attention mixer layer of a hybrid model (None if it has none)."""
    g = body.get
    if not K:
        return None
    if _is_int(g("mamba_expand")) and _is_int(g("mamba_d_state")):  # Jamba's Mamba layer
        inner, state, conv = g("mamba_expand") * K, g("mamba_d_state"), g("mamba_d_conv") or 4
        rank = g("mamba_dt_rank") if _is_int(g("mamba_dt_rank")) else -(-K // 16)
        return (K * 2 * inner + inner * (conv + 1) + inner * (rank + 2 * state) + rank * inner + inner
                + inner * state + inner + inner * K)
    if _is_int(g("linear_num_value_heads")):  # Qwen3-Next's gated delta-net
        hk, hv = g("linear_num_key_heads"), g("linear_num_value_heads")
        dk, dv, conv = g("linear_key_head_dim"), g("linear_value_head_dim"), g("linear_conv_kernel_dim") or 4
        key, val = hk * dk, hv * dv
        return K * (2 * key + 2 * val) + K * 2 * hv + (2 * key + val) * conv + 2 * hv + dv + val * K
    if isinstance(g("attn_type_list"), list) and H and d:  # MiniMax lightning attention: qkv, gate, out
        return K * 3 * H * d + K * H * d + H * d * K + H * d
    return None


def _name_from_config(cfg: dict, source: str) -> str:
    nop = cfg.get("_name_or_path")
    if isinstance(nop, str) and re.fullmatch(r"[\w.\-]+/[\w.\-]+", nop) and not nop.startswith("."):
        return nop
    if isinstance(nop, str) and nop.strip("/"):
        return nop.rstrip("/").split("/")[-1]
    p = Path(source)
    stem = p.parent.name if p.name == "config.json" else p.stem
    return stem or "model"


def model_from_config(cfg: dict, source: str) -> ModelSpec:
    """Build a ModelSpec from a parsed HF ``config.json`` (``source`` is used in messages).

    Dispatches on ``architectures[0]`` (then ``model_type``, then the field names
    themselves). ``architectures`` and ``quantization_config`` are read from the top
    level; everything else from ``text_config`` when present (Llama-4, Qwen3-VL-MoE).
    """
    if not isinstance(cfg, dict):
        raise _fail(f"'{source}' is not a config.json: top level is a JSON {type(cfg).__name__}, expected an object")
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    qc = cfg.get("quantization_config")
    body, prefix = cfg, ""
    text = cfg.get("text_config")
    if isinstance(text, dict):
        body, prefix = text, "text_config."
        if qc is None:
            qc = text.get("quantization_config")
    model_types = [str(t) for t in (cfg.get("model_type"), body.get("model_type")) if t]
    model_type = model_types[0] if model_types else ""
    shown = arch or model_type or "unknown architecture"

    family = _family_of(arch, model_types, body)
    if family is None:
        raise _fail(f"'{source}' describes a dense model ({shown}): no experts field ({_EXPERT_FIELDS})")
    f = _Fields(body, source, f"{shown}, {_FAMILY_LABEL[family]} config", prefix)

    L_key = "num_hidden_layers"
    activation = _activation(f.raw("hidden_act"), prefix + "hidden_act", source)
    expert_bias = False
    n_shared, shared_w = 0, None

    if family == "dbrx":
        ffn = body.get("ffn_config")
        if not isinstance(ffn, dict):
            raise _fail(f"'{source}' ({shown}) has no 'ffn_config' object (DBRX keeps moe_num_experts / moe_top_k / ffn_hidden_size there)")
        ff = _Fields(ffn, source, f.what, prefix + "ffn_config.")
        E = ff.pos("moe_num_experts", "number of routed experts E", hi=MAX_EXPERTS)
        topk = ff.pos("moe_top_k", "experts per token", hi=MAX_EXPERTS)
        e_key, k_key = prefix + "ffn_config.moe_num_experts", prefix + "ffn_config.moe_top_k"
        N = ff.pos("ffn_hidden_size", "per-expert FFN width")
        hk = "d_model" if body.get("d_model") is not None else "hidden_size"
        K = f.pos(hk, "hidden size K")
        L_key = "n_layers" if body.get("n_layers") is not None else "num_hidden_layers"
        L = f.pos(L_key, "decoder layer count", hi=MAX_LAYERS)
        act = ffn.get("ffn_act_fn")
        activation = _activation(act.get("name") if isinstance(act, dict) else act, prefix + "ffn_config.ffn_act_fn", source)
        moe_layers = L
    else:
        if family in ("mixtral", "arctic", "gpt_oss", "llama4"):
            e_key, n_key = "num_local_experts", "intermediate_size"
            k_key = "num_experts_per_tok"
            if family == "gpt_oss" and not f.has(k_key) and f.has("experts_per_token"):
                k_key = "experts_per_token"
        elif family in ("qwen2_moe", "qwen3_moe"):
            e_key, k_key, n_key = "num_experts", "num_experts_per_tok", "moe_intermediate_size"
        elif family in ("olmoe", "jamba"):
            e_key, k_key, n_key = "num_experts", "num_experts_per_tok", "intermediate_size"
        elif family in ("deepseek", "glm4_moe"):
            e_key, k_key, n_key = "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"
        elif family == "ernie":
            e_key, k_key, n_key = "moe_num_experts", "moe_k", "moe_intermediate_size"
        else:  # hunyuan
            e_key, k_key = "num_experts", "moe_topk"
            n_key = "moe_intermediate_size" if f.has("moe_intermediate_size") else "intermediate_size"
        per_layer = family in ("hunyuan", "ernie")
        E = f.pos(e_key, "number of routed experts E", per_layer=per_layer, hi=MAX_EXPERTS)
        if family == "hunyuan" and E == 1:
            raise _fail(f"'{source}' describes a dense model ({shown}): num_experts=1 builds a plain MLP, not an MoE layer")
        topk = f.pos(k_key, "experts per token", per_layer=per_layer, hi=MAX_EXPERTS)
        N = f.pos(n_key, "per-expert FFN width", per_layer=per_layer)
        K = f.pos("hidden_size", "hidden size K")
        L = f.pos(L_key, "decoder layer count", hi=MAX_LAYERS)

        # shared experts
        if family == "llama4":
            n_shared, shared_w = 1, N  # always built, not declared in the config
        elif family == "mixtral":
            sw = f.nonneg("shared_intermediate_size", 0)  # MiniMax / GraniteMoeShared
            if sw > 0:
                n_shared, shared_w = 1, sw
        elif family == "qwen2_moe":
            sw = f.nonneg("shared_expert_intermediate_size", 0)
            if sw > 0:
                n_shared, shared_w = 1, sw
        elif family in ("deepseek", "glm4_moe"):
            n_shared = f.nonneg("n_shared_experts", 0)
        elif family == "ernie":
            n_shared = f.nonneg("moe_num_shared_experts", 0)
        elif family == "hunyuan":
            if body.get("use_mixed_mlp_moe"):
                n_shared = f.nonneg("num_shared_expert", 0, per_layer=True)
        if n_shared and shared_w is None:
            shared_w = n_shared * N

        # which decoder layers are MoE
        if family == "llama4":
            explicit = body.get("moe_layers")
            if isinstance(explicit, list) and explicit:
                moe_layers = len({i for i in explicit if _is_int(i) and 0 <= i < L})
            else:
                step = f.opt_pos("interleave_moe_layer_step", 1, "MoE layer interval")
                moe_layers = len(range(step - 1, L, step))
        elif family == "arctic":
            freq = f.opt_pos("moe_layer_frequency", 2, "MoE layer interval")
            moe_layers = _count(L, lambda i: (i + 1) % freq == 0)
        elif family in ("qwen2_moe", "qwen3_moe"):
            step = f.opt_pos("decoder_sparse_step", 1, "MoE layer interval")
            dense = body.get("mlp_only_layers") or []
            if not isinstance(dense, list):
                raise _fail(f"'{source}': {prefix}mlp_only_layers={safeio.shown(dense)} must be a list of layer indices")
            dense = {i for i in dense if _is_int(i)}
            moe_layers = _count(L, lambda i: i not in dense and (i + 1) % step == 0)
        elif family == "jamba":
            period = f.opt_pos("expert_layer_period", 2, "MoE layer period")
            offset = f.nonneg("expert_layer_offset", 1)
            moe_layers = _count(L, lambda i: i % period == offset)
        elif family == "deepseek":
            first = f.nonneg("first_k_dense_replace", 0)
            freq = f.opt_pos("moe_layer_freq", 1, "MoE layer interval")
            moe_layers = _count(L, lambda i: i >= first and i % freq == 0)
        elif family == "glm4_moe":
            first = f.nonneg("first_k_dense_replace", 1)
            moe_layers = _count(L, lambda i: i >= first)
        elif family == "ernie":
            start = f.nonneg("moe_layer_start_index", 0, per_layer=True)
            end = f.int_any("moe_layer_end_index", L - 1, per_layer=True)
            end = end + L if end < 0 else end  # -1 means "through the last layer"
            interval = f.opt_pos("moe_layer_interval", 1, "MoE layer interval")
            moe_layers = _count(L, lambda i: (i + 1) % interval == 0 and start <= i <= end)
        elif family == "hunyuan":
            skipped = f.nonneg("moe_layer_num_skipped", 0)
            moe_layers = _count(L, lambda i: i >= skipped)
        else:  # mixtral, phimoe, granite, minimax, gpt-oss, olmoe: every layer
            moe_layers = L

        if family == "gpt_oss":
            activation, expert_bias = "swigluoai", True
        e_key, k_key = prefix + e_key, prefix + k_key

    if topk > E:
        raise _fail(f"'{source}': top-k {k_key}={topk} exceeds the number of routed experts {e_key}={E} (valid: 1..{E})")
    if moe_layers == 0:
        raise _fail(f"'{source}' ({shown}): the MoE layer-selection fields leave 0 of {L} layers as MoE, so it is effectively a dense model")

    name = _name_from_config(cfg, source)
    return ModelSpec(
        name=name,
        alias=name.split("/")[-1].lower(),
        model_type=model_type,
        architecture=arch or "",
        num_experts=E,
        top_k=topk,
        hidden_size=K,
        moe_intermediate_size=N,
        num_shared_experts=n_shared,
        shared_expert_intermediate_size=shared_w,
        num_hidden_layers=L,
        num_moe_layers=moe_layers,
        activation=activation,
        expert_bias=expert_bias,
        quantization=parse_quantization_config(qc, source),
        source=source,
        **_rest_of_model(body, family, L),
    )


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _read_json(p: Path) -> Any:
    # Size-capped, regular files only, strict UTF-8, nesting-limited JSON (moeplan.safeio).
    return safeio.read_json(p, "config file", ModelError)


def read_config_file(path: "str | os.PathLike[str]") -> tuple[dict, str]:
    """Read a config.json (or a folder holding one); returns ``(config_dict, source_path)``."""
    p = Path(path)
    if p.is_dir():
        inner = p / "config.json"
        if not inner.is_file():
            raise _fail(f"cannot read '{p}': it is a folder with no config.json in it (give a config.json, a folder holding one, or a preset alias)")
        p = inner
    cfg = _read_json(p)
    if not isinstance(cfg, dict):
        raise _fail(f"'{p}' is not a config.json: top level is a JSON {type(cfg).__name__}, expected an object")
    return cfg, str(p)


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

_PRESET_REQUIRED = ("alias", "name", *_SPEC_FIELDS, "quantization")

_PRESET_CACHE: dict[str, tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]] = {}


def presets_dir() -> Path:
    """Folder holding the preset JSON files (``$MOEPLAN_PRESETS_DIR`` or the shipped ``configs/``)."""
    from moeplan import paths

    return paths.presets_dir()


def spec_from_preset(data: Any, source: str) -> ModelSpec:
    """Build a ModelSpec from one preset-file object.

    Preset format (``configs/<alias>.json``): the ``ModelSpec`` fields by name, with
    ``quantization`` holding the checkpoint's verbatim ``quantization_config`` (or null);
    extra keys (``references``, ``verification``, ``notes``) are informational.
    """
    if not isinstance(data, dict):
        raise _fail(f"preset '{source}' must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _PRESET_REQUIRED if k not in data]
    if missing:
        raise _fail(f"preset '{source}' lacks {', '.join(missing)} (required: {', '.join(_PRESET_REQUIRED)})")
    for k in ("alias", "name", "model_type", "architecture", "activation"):
        if not isinstance(data[k], str) or not data[k]:
            raise _fail(f"preset '{source}': {k}={data[k]!r} must be a non-empty string")
    alias = data["alias"]
    if alias != alias.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", alias):
        raise _fail(f"preset '{source}': alias={alias!r} must be lowercase letters, digits, '.' and '-'")
    try:
        spec = ModelSpec(
            name=data["name"],
            alias=alias,
            **{k: data[k] for k in _SPEC_FIELDS},
            quantization=parse_quantization_config(data["quantization"], source),
            source=source,
            **{k: data[k] for k in _REST_FIELDS if data.get(k) is not None},
        )
        for key, hi in (("num_experts", MAX_EXPERTS), ("num_hidden_layers", MAX_LAYERS), ("hidden_size", MAX_DIM),
                        ("moe_intermediate_size", MAX_DIM)):
            if getattr(spec, key) > hi:
                raise _fail(f"{key}={getattr(spec, key)} is out of range; valid: 1..{hi}")
        return spec
    except ModelError as e:
        msg = str(e)
        raise _fail(msg if source in msg else f"preset '{source}': {msg}") from None


def _load_presets() -> tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]:
    d = presets_dir()
    key = str(d)
    hit = _PRESET_CACHE.get(key)
    if hit is not None:
        return hit
    if not d.is_dir():
        raise _fail(f"preset folder '{d}' does not exist (set {PRESETS_ENV} to a folder of preset .json files)")
    specs: list[ModelSpec] = []
    for f in sorted(d.glob("*.json")):
        specs.append(spec_from_preset(_read_json(f), str(f)))
    specs.sort(key=lambda s: s.alias)
    index: dict[str, ModelSpec] = {}
    for s in specs:
        for k in (s.alias, s.name.lower()):
            other = index.get(k)
            if other is not None and other is not s:
                raise _fail(f"presets '{other.source}' and '{s.source}' both claim '{k}' (aliases and repo ids must be unique)")
            index[k] = s
    # Convenience: the repo id without its organisation ("Kimi-K2-Instruct"), when unambiguous.
    tails: dict[str, list[ModelSpec]] = {}
    for s in specs:
        tails.setdefault(s.name.split("/")[-1].lower(), []).append(s)
    for t, group in tails.items():
        if len(group) == 1 and t not in index:
            index[t] = group[0]
    result = (tuple(specs), index)
    _PRESET_CACHE[key] = result
    return result


def clear_preset_cache() -> None:
    """Forget loaded presets (tests, or after editing configs/)."""
    _PRESET_CACHE.clear()


def list_presets() -> list[ModelSpec]:
    """All presets, sorted by alias."""
    return list(_load_presets()[0])


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".json") or ref.startswith(("/", "./", "../", "~", "\\")) or "\\" in ref


def _unknown(name: str, specs: tuple[ModelSpec, ...]) -> ModelError:
    aliases = [s.alias for s in specs]
    pool = aliases + [s.name.lower() for s in specs]
    close = difflib.get_close_matches(name.lower(), pool, n=3, cutoff=0.6)
    hint = ""
    if close:
        shown = []
        for c in close:
            a = next((s.alias for s in specs if c in (s.alias, s.name.lower())), c)
            if a not in shown:
                shown.append(a)
        hint = f"; did you mean {', '.join(repr(a) for a in shown)}?"
    elif _looks_like_path(name):
        hint = f"; no file or folder '{name}' exists"
    return _fail(
        f"unknown model '{name}': not a preset alias/repo id (valid: {', '.join(aliases) or 'none'}) "
        f"nor a path to a config.json or a folder holding one{hint}"
    )


def find_preset(name: str) -> ModelSpec:
    """The preset whose alias or repo id matches ``name`` case-insensitively."""
    specs, index = _load_presets()
    hit = index.get(str(name).strip().lower())
    if hit is None:
        raise _unknown(str(name), specs)
    return hit


def load_model(ref: "str | os.PathLike[str]") -> ModelSpec:
    """Resolve a preset alias / repo id, a ``config.json`` path, or a folder holding one.

    Existing paths win over presets (except a folder without config.json whose name is
    also a preset). Anything else that is not a preset raises the unknown-model error.
    """
    text = os.fspath(ref)
    if not isinstance(text, str) or not text.strip():
        raise _fail(f"empty model reference {text!r}: give a preset alias/repo id or a path to a config.json")
    safeio.check_path("model", text, "a preset alias/repo id or a path to a config.json", ModelError)
    try:
        p = Path(text).expanduser()
    except RuntimeError:  # `~user` naming no user
        p = Path(text)
    if p.exists():
        if p.is_dir() and not (p / "config.json").exists():
            try:
                return find_preset(text)
            except ModelError:
                pass
        cfg, source = read_config_file(p)
        return model_from_config(cfg, source)
    return find_preset(text)


# --------------------------------------------------------------------------------------
# Table rows for `moeplan models`
# --------------------------------------------------------------------------------------

#: (row key, column header) in display order, for ``preset_rows()``.
PRESET_COLUMNS = (
    ("alias", "alias"),
    ("repo_id", "repo id"),
    ("experts", "E"),
    ("top_k", "top-k"),
    ("hidden", "hidden K"),
    ("expert_width", "expert N"),
    ("shared_experts", "shared"),
    ("moe_layers", "MoE layers"),
    ("quantization", "checkpoint"),
)


def preset_rows() -> list[dict]:
    """One dict per preset (keys of ``PRESET_COLUMNS``), sorted by alias."""
    rows = []
    for s in list_presets():
        shared = f"{s.num_shared_experts} ({s.shared_expert_intermediate_size})" if s.num_shared_experts else "-"
        layers = f"{s.num_moe_layers}/{s.num_hidden_layers}" if s.num_moe_layers is not None else f"?/{s.num_hidden_layers}"
        rows.append(
            {
                "alias": s.alias,
                "repo_id": s.name,
                "experts": s.num_experts,
                "top_k": s.top_k,
                "hidden": s.hidden_size,
                "expert_width": s.moe_intermediate_size,
                "shared_experts": shared,
                "moe_layers": layers,
                "quantization": s.quantization.describe() if s.quantization else "bf16",
            }
        )
    return rows
