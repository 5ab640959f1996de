"""A checkpoint's ``quantization_config`` read into a ``CheckpointQuant``: which moeplan dtype
scheme the experts run as, the block or group shape, and whether it is weight-only.

Pure: the standard library, ``moeplan.safeio`` and ``moeplan.errors`` only. Every failure is a one-line
``ModelError`` naming the field (``config.json`` and preset files alike come through here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from moeplan.base import safeio
from moeplan.base.errors import ModelError

#: moeplan dtype names a checkpoint can run as (``CheckpointQuant.scheme``).
SCHEMES = ("fp8_w8a8", "fp8_w8a16", "int8_w8a8", "int8_w8a16", "int4_w4a16", "mxfp4", "nvfp4")


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
