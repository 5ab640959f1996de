"""``ModelSpec``: the MoE-relevant shape of one checkpoint, and its one JSON form.

Dimension letters used throughout moeplan (they match the fused-MoE kernel and the
tuning-file names ``E=..,N=..``):

* ``E``    -- routed experts of the layer (``num_experts``; shared experts are not counted).
* ``K``    -- the model hidden size (``hidden_size``): GEMM1's reduction dim, GEMM2's output.
* ``N``    -- the intermediate (FFN) width of ONE expert. ``ModelSpec.moe_intermediate_size``
              is the un-sharded width; under tensor parallelism a device holds
              ``N = moe_intermediate_size // tp`` of it. GEMM1 produces ``2N`` (gate + up).
* ``topk`` -- experts each token is routed to (``top_k``).

The presets live here too (``ModelSpec.from_name``, ``find_preset``, ``list_presets``): the
preset registry builds ModelSpecs and ``from_name`` reads the registry, so one module holds both
and nothing imports in a circle.

Pure: the standard library and moeplan's base and checkpoint-quant modules only; the preset
folder is read on first use, never at import.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from moeplan.base import paths, safeio
from moeplan.base.errors import ModelError
from moeplan.model.checkpoint_quant import (MAX_DIM, MAX_EXPERTS, MAX_LAYERS, CheckpointQuant, _fail, _is_int,
                                            parse_quantization_config)

#: Expert activations: SwiGLU with SiLU or GELU, or gpt-oss's clamped interleaved SwiGLU.
ACTIVATIONS = ("silu", "gelu", "swigluoai")


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
# Presets
# --------------------------------------------------------------------------------------

_PRESET_REQUIRED = ("alias", "name", *_SPEC_FIELDS, "quantization")

_PRESET_CACHE: dict[str, tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]] = {}


def presets_dir() -> Path:
    """Folder holding the preset JSON files (``$MOEPLAN_PRESETS_DIR`` or the shipped ``configs/``)."""
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
        raise _fail(f"preset folder '{d}' does not exist (set {paths.PRESETS_ENV} to a folder of preset .json files)")
    specs: list[ModelSpec] = []
    for f in sorted(d.glob("*.json")):
        specs.append(spec_from_preset(safeio.read_json(f, "config file", ModelError), str(f)))
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
    elif _looks_like_path(name):  # a path: say so first, the presets after
        return _fail(f"model path '{name}' does not exist (no file or folder there); pass a config.json, a folder "
                     f"holding one, or a preset alias/repo id (`moeplan models`: {', '.join(aliases) or 'none'})")
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
