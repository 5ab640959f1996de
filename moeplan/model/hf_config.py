"""A Hugging Face ``config.json`` read into a ``ModelSpec``.

Checkpoints name the same facts differently (``num_local_experts`` / ``n_routed_experts`` /
``num_experts``, shared experts, which layers are MoE); each naming convention is a
"family" below. Dimension letters as in ``moeplan.model_spec``. Pure: no torch, triton,
rich or typer; every failure is a one-line ``ModelError``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from moeplan.base import safeio
from moeplan.model.checkpoint_quant import MAX_DIM, MAX_EXPERTS, MAX_LAYERS, _fail, _is_int, parse_quantization_config
from moeplan.base.errors import ModelError
from moeplan.model.spec import ModelSpec

_EXPERT_FIELDS = "num_local_experts / num_experts / n_routed_experts / moe_num_experts / ffn_config.moe_num_experts"


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
