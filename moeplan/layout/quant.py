"""Quantization configs of the fused-MoE layer, modelled on the engine's config module.

Over 600 lines: one builder per scheme (eleven), each a few lines, beside the one QuantConfig they
build; the spec's config module is one file too, and reading them side by side is the point.

A `QuantConfig` holds four `QuantDesc`s: a1 (GEMM1 input activations), a2 (GEMM2
input activations), w1 (gate/up weights, (E, 2N, K)) and w2 (down weights, (E, K, N)).
Dimension letters: M tokens, E experts on the device, K hidden size, N intermediate
size per TP shard, topk experts per token.

Pure Python: dtypes are carried as names (`"float8_e4m3fn"`, `"int8"`, `"int4"`,
`"mxfp4"`, ...). Torch dtypes are accepted anywhere a dtype is taken and converted
to their name, so the kernel can pass `torch.float8_e4m3fn` while `moeplan resolve`
never imports torch. Scales, zero points and biases are opaque here: tensors when
the kernel runs, None when planning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from moeplan.base.errors import QuantError
from moeplan.base.safeio import shown

# Names of the torch dtypes the engine uses for quantized operands.
FP8 = "float8_e4m3fn"
INT8 = "int8"
# String-typed (non-torch) quant dtypes.
INT4 = "int4"
MXFP4 = "mxfp4"
NVFP4 = "nvfp4"
OCP_MX_DTYPES = frozenset({"mxfp4", "mxfp6_e3m2", "mxfp6_e2m3"})
STRING_QUANT_DTYPES = frozenset({"nvfp4"}) | OCP_MX_DTYPES
# Dtype names that stand for real torch dtypes (the engine's non-string dtypes).
TORCH_DTYPE_NAMES = frozenset({
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "int8", "uint8", "int32",
    "bfloat16", "float16", "float32", "float", "half",
})
_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "float": "float32", "half": "float16"}

DtypeLike = Union[str, Any, None]  # a name, a torch.dtype, or None


def dtype_name(dtype: DtypeLike) -> Optional[str]:
    """Normalise a torch dtype or a dtype name to a plain name ("torch.int8" -> "int8")."""
    if dtype is None:
        return None
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    return _ALIASES.get(name, name)


def _is_torch_dtype(name: Optional[str]) -> bool:
    return name is not None and name in TORCH_DTYPE_NAMES


def cdiv(a: int, b: int) -> int:
    return -(a // -b)


@dataclass(frozen=True)
class GroupShape:
    """Quantization group: (-1, -1) per tensor, (1, -1) per row/token, (128, 128) a block."""

    row: int
    col: int

    def __iter__(self):
        return iter((self.row, self.col))

    def describe(self) -> str:
        if self == PER_TENSOR:
            return "per-tensor"
        if self == PER_TOKEN:
            return "per-token"
        return f"[{self.row},{self.col}]"


PER_TENSOR = GroupShape(-1, -1)
PER_TOKEN = GroupShape(1, -1)


def _quant_flags_to_group_shape(
    quant_dtype: Optional[str],
    per_act_token_quant: bool,
    per_out_ch_quant: bool,
    block_shape: Optional[Sequence[int]],
) -> tuple[Optional[GroupShape], Optional[GroupShape]]:
    """(activation group shape, weight group shape) for the make() flags."""
    if block_shape is not None:
        if per_act_token_quant:
            raise QuantError(f"block shape {list(block_shape)} cannot be combined with per-token activation quantization; drop one of them")
        if per_out_ch_quant:
            raise QuantError(f"block shape {list(block_shape)} cannot be combined with per-channel weight quantization; drop one of them")
        # Like the engine, activations get the weight block shape (their real group is (1, bk)).
        shape = GroupShape(int(block_shape[0]), int(block_shape[1]))
        return shape, shape
    a_shape = None if quant_dtype is None else PER_TENSOR
    w_shape = None
    if per_act_token_quant:
        a_shape = PER_TOKEN
    if per_out_ch_quant:
        w_shape = PER_TOKEN
    return a_shape, w_shape


@dataclass
class QuantDesc:
    """One operand's quantization: dtype name, group shape, and (optional) tensors."""

    dtype: Optional[str] = None
    shape: Optional[GroupShape] = None
    scale: Any = None
    alpha_or_gscale: Any = None  # nvfp4 global scales / alphas
    zp: Any = None  # zero points (int4/int8 weight-only)
    bias: Any = None  # expert biases (gpt-oss)

    def __post_init__(self):
        self.dtype = dtype_name(self.dtype)
        if self.shape is not None and not isinstance(self.shape, GroupShape):
            self.shape = GroupShape(*self.shape)


@dataclass
class QuantConfig:
    """All quantization parameters of one fused-MoE op (the engine's FusedMoEQuantConfig)."""

    _a1: QuantDesc
    _a2: QuantDesc
    _w1: QuantDesc
    _w2: QuantDesc

    def __post_init__(self):
        if self.per_act_token_quant and self.block_shape is not None:
            raise QuantError(f"block shape {self.block_shape} cannot be combined with per-token activation quantization")

    # ---- convenience accessors -------------------------------------------------
    @property
    def quant_dtype(self) -> Optional[str]:
        return self._a1.dtype

    @property
    def weight_dtype(self) -> Optional[str]:
        return self._w1.dtype

    @property
    def is_quantized(self) -> bool:
        return self.quant_dtype is not None

    @property
    def is_per_act_token(self) -> bool:
        return self._a1.shape == PER_TOKEN

    @property
    def per_act_token_quant(self) -> bool:
        return self._a1.shape == PER_TOKEN

    @property
    def per_out_ch_quant(self) -> bool:
        return self._w1.shape == PER_TOKEN

    @property
    def is_per_tensor(self) -> bool:
        return self._a1.shape == PER_TENSOR

    @property
    def block_shape(self) -> Optional[list[int]]:
        s = self._a1.shape
        if s is not None and s != PER_TENSOR and s != PER_TOKEN:
            return [s.row, s.col]
        return None

    @property
    def is_block_quantized(self) -> bool:
        return self.block_shape is not None

    @property
    def a1_scale(self):
        return self._a1.scale

    @property
    def a1_gscale(self):
        return self._a1.alpha_or_gscale

    @property
    def a2_scale(self):
        return self._a2.scale

    @property
    def a2_gscale(self):
        return self._a2.alpha_or_gscale

    @property
    def w1_scale(self):
        return self._w1.scale

    @property
    def w1_zp(self):
        return self._w1.zp

    @property
    def w1_bias(self):
        return self._w1.bias

    @property
    def g1_alphas(self):
        return self._w1.alpha_or_gscale

    @property
    def w2_scale(self):
        return self._w2.scale

    @property
    def w2_zp(self):
        return self._w2.zp

    @property
    def w2_bias(self):
        return self._w2.bias

    @property
    def g2_alphas(self):
        return self._w2.alpha_or_gscale

    @property
    def a1(self) -> QuantDesc:
        return self._a1

    @property
    def a2(self) -> QuantDesc:
        return self._a2

    @property
    def w1(self) -> QuantDesc:
        return self._w1

    @property
    def w2(self) -> QuantDesc:
        return self._w2

    @property
    def use_fp8_w8a8(self) -> bool:
        return self.quant_dtype == FP8

    @property
    def use_int8_w8a8(self) -> bool:
        return self.quant_dtype == INT8

    @property
    def use_fp8_w8a16(self) -> bool:
        return self._a1.dtype is None and self._w1.dtype == FP8

    @property
    def use_int8_w8a16(self) -> bool:
        return self._a1.dtype is None and self._w1.dtype == INT8

    @property
    def use_int4_w4a16(self) -> bool:
        return self._a1.dtype is None and self._w1.dtype == INT4

    @property
    def ocp_mx_scheme(self) -> Optional[str]:
        a, w = self._a1.dtype, self._w1.dtype
        if _is_torch_dtype(a) or _is_torch_dtype(w):
            return None
        return _ocp_mx_scheme(a, w)

    @property
    def use_mxfp4_w4a16(self) -> bool:
        return self._a1.dtype is None and self._w1.dtype == MXFP4

    @property
    def use_nvfp4_w4a4(self) -> bool:
        return self.quant_dtype == NVFP4

    @property
    def scheme(self) -> str:
        """moeplan's short scheme name (the `--dtype` value this config corresponds to)."""
        if self.use_fp8_w8a8:
            return "fp8_w8a8"
        if self.use_int8_w8a8:
            return "int8_w8a8"
        if self.use_fp8_w8a16:
            return "fp8_w8a16"
        if self.use_int8_w8a16:
            return "int8_w8a16"
        if self.use_int4_w4a16:
            return "int4_w4a16"
        if self.use_mxfp4_w4a16:
            return "mxfp4"
        if self.use_nvfp4_w4a4:
            return "nvfp4"
        if self.ocp_mx_scheme is not None:
            return self.ocp_mx_scheme
        return "unquantized"

    def config_name(self, dtype: DtypeLike) -> Optional[str]:
        """The dtype part of the tuning-file name (None: no `,dtype=` selector).

        `dtype` is the activation dtype of the layer (bf16, fp16, fp32).
        """
        return _get_config_dtype_str(
            dtype,
            use_fp8_w8a8=self.use_fp8_w8a8,
            use_fp8_w8a16=self.use_fp8_w8a16,
            use_int8_w8a16=self.use_int8_w8a16,
            use_int4_w4a16=self.use_int4_w4a16,
            ocp_mx_scheme=self.ocp_mx_scheme,
        )

    def scale_shape(self, max_tokens, hidden_dim: int) -> Optional[tuple]:
        """Shape of an activation scale tensor for `max_tokens` rows of width `hidden_dim`.

        `max_tokens` may be a symbol (e.g. "M") when planning.
        """
        if not self.is_quantized:
            return None
        if self.is_block_quantized:
            _, block_k = self.block_shape
            return (max_tokens, cdiv(hidden_dim, block_k))
        if self.is_per_act_token:
            return (max_tokens, 1)
        return (1, 1)

    def batched_scale_shape(self, num_experts: int, max_tokens, hidden_dim: int) -> Optional[tuple]:
        shape = self.scale_shape(max_tokens, hidden_dim)
        return None if shape is None else (num_experts, *shape)

    # ---- planning helpers (not in the engine's module) ---------------------------
    def weight_scale_shapes(self, E: int, N: int, K: int) -> tuple[Optional[tuple], Optional[tuple]]:
        """Shapes of the w1 (E, 2N, K) and w2 (E, K, N) scale tensors the kernel expects."""
        w = self._w1
        if w.dtype is None:
            return None, None
        two_d_blocks = self.is_block_quantized and all(self.block_shape)
        if w.dtype in (FP8, INT8) and (self._a1.dtype is not None or (w.dtype == FP8 and two_d_blocks)):
            # w8a8, and fp8 weight-only with [bn, bk] blocks: one scale per weight block
            if self.is_block_quantized:
                bn, bk = self.block_shape
                return (E, cdiv(2 * N, bn), cdiv(K, bk)), (E, cdiv(K, bn), cdiv(N, bk))
            if self.per_out_ch_quant:
                return (E, 2 * N, 1), (E, K, 1)
            return (E,), (E,)
        group = self.weight_group_size
        if group:
            return (E, 2 * N, cdiv(K, group)), (E, K, cdiv(N, group))
        return (E, 2 * N, 1), (E, K, 1)  # weight-only with one scale per output channel

    @property
    def weight_group_size(self) -> Optional[int]:
        """Group size along K of weight-only schemes (mxfp4: 32, nvfp4: 16, int4/int8: block[1])."""
        if self._w1.dtype == MXFP4 or self._w1.dtype in OCP_MX_DTYPES:
            return 32
        if self._w1.dtype == NVFP4:
            return 16
        if self._a1.dtype is None and self.block_shape is not None and self.block_shape[1] > 0 \
                and not (self._w1.dtype == FP8 and all(self.block_shape)):  # fp8 blocks are 2-D, not K groups
            return self.block_shape[1]
        return None

    # ---- builder ---------------------------------------------------------------
    @staticmethod
    def make(
        quant_dtype: DtypeLike = None,
        per_act_token_quant: bool = False,
        per_out_ch_quant: bool = False,
        block_shape: Optional[Sequence[int]] = None,
        w1_scale=None,
        w2_scale=None,
        a1_scale=None,
        a2_scale=None,
        g1_alphas=None,
        g2_alphas=None,
        a1_gscale=None,
        a2_gscale=None,
        w1_bias=None,
        w2_bias=None,
        w1_zp=None,
        w2_zp=None,
        weight_dtype: DtypeLike = None,
    ) -> "QuantConfig":
        """General builder: validates the combination and raises QuantError when it is illegal."""
        quant_dtype = dtype_name(quant_dtype)
        weight_dtype = dtype_name(weight_dtype)
        for what, d in (("quant_dtype", quant_dtype), ("weight_dtype", weight_dtype)):
            if d is not None and not _is_torch_dtype(d) and d not in STRING_QUANT_DTYPES:
                raise QuantError(
                    f"{what} {d!r} is not supported; valid: a torch dtype or one of {', '.join(sorted(STRING_QUANT_DTYPES))}")
        if block_shape is not None:
            block_shape = _check_block_shape(block_shape, allow_zero=False)
        if weight_dtype is None:
            weight_dtype = quant_dtype
        a_shape, w_shape = _quant_flags_to_group_shape(quant_dtype, per_act_token_quant, per_out_ch_quant, block_shape)
        cfg = QuantConfig(
            _a1=QuantDesc(quant_dtype, a_shape, a1_scale, a1_gscale),
            _a2=QuantDesc(quant_dtype, a_shape, a2_scale, a2_gscale),
            _w1=QuantDesc(weight_dtype, w_shape, w1_scale, g1_alphas, w1_zp, w1_bias),
            _w2=QuantDesc(weight_dtype, w_shape, w2_scale, g2_alphas, w2_zp, w2_bias),
        )
        if cfg.per_act_token_quant != bool(per_act_token_quant) or cfg.per_out_ch_quant != bool(per_out_ch_quant) \
                or cfg.block_shape != (None if block_shape is None else list(block_shape)):
            raise QuantError(
                f"inconsistent quantization flags (per_token={per_act_token_quant}, per_channel={per_out_ch_quant}, block_shape={block_shape})")
        return cfg


FusedMoEQuantDesc = QuantDesc
FusedMoEQuantConfig = QuantConfig


def _ocp_mx_scheme(a: Optional[str], w: Optional[str]) -> Optional[str]:
    """The OCP MX scheme name for (activation, weight) MX dtypes, or None."""
    if a not in OCP_MX_DTYPES or w not in OCP_MX_DTYPES:
        return None
    if w == "mxfp4" and a in ("mxfp4", "mxfp6_e3m2", "mxfp6_e2m3"):
        return f"w_mxfp4_a_{a}"
    if w == a:
        return f"w_{w}_a_{a}"
    return None


def _get_config_dtype_str(
    dtype: DtypeLike,
    use_fp8_w8a8: bool = False,
    use_fp8_w8a16: bool = False,
    use_int8_w8a16: bool = False,
    use_int4_w4a16: bool = False,
    ocp_mx_scheme: Optional[str] = None,
) -> Optional[str]:
    if use_fp8_w8a8:
        return "fp8_w8a8"
    if use_fp8_w8a16:
        return "fp8_w8a16"
    if use_int8_w8a16:
        return "int8_w8a16"
    if use_int4_w4a16:
        return "int4_w4a16"
    if ocp_mx_scheme is not None:
        # The engine only simulates OCP MX in the Triton path and looks for no dtype-specific file.
        return None
    if dtype_name(dtype) == "float32":
        return "float32"
    return None


def _check_block_shape(block_shape: Sequence[int], allow_zero: bool) -> list[int]:
    try:
        vals = [int(v) for v in block_shape]
        ok = len(vals) == 2 and all(str(v) == str(int(v)) for v in block_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise QuantError(f"block shape {block_shape!r} is malformed; expected two integers like [128,128]")
    low = 0 if allow_zero else 1
    if any(v < low for v in vals) or (allow_zero and vals[1] < 1):
        need = "a group size G as [0,G] or two positive integers" if allow_zero else "two positive integers like [128,128]"
        raise QuantError(f"block shape {vals} is invalid; expected {need}")
    return vals


# ---- the engine's per-scheme builders (same names and parameters) ----------------

def fp8_w8a8_moe_quant_config(w1_scale, w2_scale, a1_scale=None, a2_scale=None,
                              per_act_token_quant: bool = False, per_out_ch_quant: bool = False,
                              block_shape: Optional[Sequence[int]] = None) -> QuantConfig:
    """fp8 (e4m3) activations and weights."""
    return QuantConfig.make(FP8, w1_scale=w1_scale, w2_scale=w2_scale, a1_scale=a1_scale, a2_scale=a2_scale,
                            per_act_token_quant=per_act_token_quant, per_out_ch_quant=per_out_ch_quant,
                            block_shape=block_shape)


def int8_w8a8_moe_quant_config(w1_scale, w2_scale, a1_scale, a2_scale,
                               per_act_token_quant: bool = False) -> QuantConfig:
    """int8 activations and weights (weights per output channel by their scale shape)."""
    return QuantConfig.make(INT8, w1_scale=w1_scale, w2_scale=w2_scale, a1_scale=a1_scale, a2_scale=a2_scale,
                            per_act_token_quant=per_act_token_quant, per_out_ch_quant=False, block_shape=None)


def mxfp4_w4a16_moe_quant_config(w1_scale, w2_scale, w1_bias=None, w2_bias=None) -> QuantConfig:
    """16-bit activations, MXFP4 weights (groups of 32 along K, e8m0 scales)."""
    return QuantConfig(
        _a1=QuantDesc(), _a2=QuantDesc(),
        _w1=QuantDesc(MXFP4, None, w1_scale, None, None, w1_bias),
        _w2=QuantDesc(MXFP4, None, w2_scale, None, None, w2_bias),
    )


def ocp_mx_moe_quant_config(quant_dtype: str, w1_scale, w2_scale, weight_dtype: Optional[str] = None,
                            a1_scale=None, a2_scale=None, w1_bias=None, w2_bias=None,
                            block_shape: Optional[Sequence[int]] = None) -> QuantConfig:
    """OCP MX activations and weights (mxfp4 / mxfp6)."""
    if dtype_name(quant_dtype) not in OCP_MX_DTYPES:
        raise QuantError(f"OCP MX quant dtype {quant_dtype!r} is not one of {', '.join(sorted(OCP_MX_DTYPES))}")
    return QuantConfig.make(quant_dtype=quant_dtype, weight_dtype=weight_dtype, w1_scale=w1_scale,
                            w2_scale=w2_scale, a1_scale=a1_scale, a2_scale=a2_scale, w1_bias=w1_bias,
                            w2_bias=w2_bias, per_act_token_quant=False, per_out_ch_quant=False,
                            block_shape=block_shape)


def nvfp4_moe_quant_config(g1_alphas, g2_alphas, a1_gscale, a2_gscale, w1_scale, w2_scale) -> QuantConfig:
    """NVFP4 activations and weights (groups of 16, fp8 scales plus global scales)."""
    return QuantConfig.make(NVFP4, w1_scale=w1_scale, w2_scale=w2_scale, a1_gscale=a1_gscale,
                            a2_gscale=a2_gscale, g1_alphas=g1_alphas, g2_alphas=g2_alphas,
                            per_act_token_quant=False, per_out_ch_quant=False, block_shape=None)


def _weight_only(weight_dtype: str, w1_scale, w2_scale, w1_zp, w2_zp, block_shape) -> QuantConfig:
    shape = None
    if block_shape is not None:
        shape = GroupShape(*_check_block_shape(block_shape, allow_zero=True))
    return QuantConfig(
        _a1=QuantDesc(shape=shape), _a2=QuantDesc(shape=shape),
        _w1=QuantDesc(weight_dtype, shape, w1_scale, None, w1_zp),
        _w2=QuantDesc(weight_dtype, shape, w2_scale, None, w2_zp),
    )


def int4_w4a16_moe_quant_config(w1_scale, w2_scale, w1_zp, w2_zp,
                                block_shape: Optional[Sequence[int]] = None) -> QuantConfig:
    """16-bit activations, int4 weights (two per byte) with group scales ([0, G]) and optional zero points."""
    return _weight_only(INT4, w1_scale, w2_scale, w1_zp, w2_zp, block_shape)


def int8_w8a16_moe_quant_config(w1_scale, w2_scale, w1_zp, w2_zp,
                                block_shape: Optional[Sequence[int]] = None) -> QuantConfig:
    """16-bit activations, int8 weights with group scales ([0, G]) and optional zero points."""
    return _weight_only(INT8, w1_scale, w2_scale, w1_zp, w2_zp, block_shape)


def fp8_w8a16_moe_quant_config(w1_scale, w2_scale, block_shape: Optional[Sequence[int]] = None) -> QuantConfig:
    """16-bit activations, fp8 weights (dequantized in the kernel)."""
    return _weight_only(FP8, w1_scale, w2_scale, None, None, block_shape)


def biased_moe_quant_config(w1_bias, w2_bias) -> QuantConfig:
    """Unquantized, with expert biases."""
    return QuantConfig(_a1=QuantDesc(), _a2=QuantDesc(), _w1=QuantDesc(bias=w1_bias), _w2=QuantDesc(bias=w2_bias))


FUSED_MOE_UNQUANTIZED_CONFIG: QuantConfig = QuantConfig.make()

# ---- moeplan schemes (the `--dtype` values) ------------------------------------------

ACTIVATION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
QUANT_SCHEMES = ("fp8_w8a8", "fp8_w8a16", "int8_w8a8", "int8_w8a16", "int4_w4a16", "mxfp4", "nvfp4")
DTYPE_CHOICES = ("auto", *ACTIVATION_DTYPES, *QUANT_SCHEMES)


MAX_BLOCK = 1 << 20  # as a config.json's block and group sizes (models.MAX_DIM)


def parse_block_shape(text: str) -> list[int]:
    """Parse `128,128`, `[128, 128]` or `0,128` into two ints; QuantError on anything else."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    parts = [p.strip() for p in raw.split(",")]
    # ASCII digits only (str.isdigit() also takes '²'), each entry in 0..2^20
    if len(parts) != 2 or not all(re.fullmatch(r"-?[0-9]{1,8}", p) for p in parts):
        raise QuantError(f"block shape {shown(text)} is malformed; expected two integers like 128,128 "
                         "(or 0,G for a group size)")
    vals = [int(p) for p in parts]
    if any(v > MAX_BLOCK for v in vals):
        raise QuantError(f"block shape {shown(text)} is out of range; valid: entries in 0..{MAX_BLOCK}")
    return vals


def quant_for_scheme(
    scheme: str,
    block_shape: Optional[Sequence[int]] = None,
    per_token: bool = False,
    per_channel: bool = False,
    **tensors: Any,
) -> QuantConfig:
    """Build the QuantConfig a `--dtype` scheme stands for, through the engine's builders.

    bf16/fp16/fp32 give the unquantized config (or a biased one when biases are passed).
    `tensors` are optional scales/zero points/biases (w1_scale=..., a1_scale=..., ...).
    """
    s = scheme.lower()
    t = tensors.get
    if s in ACTIVATION_DTYPES or s in ("bfloat16", "float16", "float32", "unquantized"):
        if block_shape is not None or per_token or per_channel:
            raise QuantError(f"--dtype {scheme} is unquantized: it takes no block shape, --per-token or --per-channel")
        if t("w1_bias") is not None or t("w2_bias") is not None:
            return biased_moe_quant_config(t("w1_bias"), t("w2_bias"))
        return QuantConfig.make()
    if s == "fp8_w8a8":
        return fp8_w8a8_moe_quant_config(t("w1_scale"), t("w2_scale"), t("a1_scale"), t("a2_scale"),
                                         per_act_token_quant=per_token, per_out_ch_quant=per_channel,
                                         block_shape=block_shape)
    if s == "int8_w8a8":
        if block_shape is not None:
            raise QuantError(f"--dtype int8_w8a8 takes no block shape (got {list(block_shape)}); valid: --per-token, --per-channel")
        # The engine's int8_w8a8 builder has no per-channel flag: per-channel weights are
        # recognised from their scale shape, so --per-channel goes through make().
        return QuantConfig.make(INT8, per_act_token_quant=per_token, per_out_ch_quant=per_channel,
                                w1_scale=t("w1_scale"), w2_scale=t("w2_scale"),
                                a1_scale=t("a1_scale"), a2_scale=t("a2_scale"))
    if s in ("int8_w8a16", "int4_w4a16", "fp8_w8a16", "mxfp4", "nvfp4"):
        if per_token or per_channel:
            raise QuantError(f"--dtype {scheme} quantizes weights only per group: --per-token/--per-channel do not apply")
        if s == "int8_w8a16":
            return int8_w8a16_moe_quant_config(t("w1_scale"), t("w2_scale"), t("w1_zp"), t("w2_zp"), block_shape)
        if s == "int4_w4a16":
            return int4_w4a16_moe_quant_config(t("w1_scale"), t("w2_scale"), t("w1_zp"), t("w2_zp"), block_shape)
        if s == "fp8_w8a16":
            return fp8_w8a16_moe_quant_config(t("w1_scale"), t("w2_scale"), block_shape)
        if block_shape is not None:
            raise QuantError(f"--dtype {scheme} has a fixed group size ({'32' if s == 'mxfp4' else '16'}); it takes no block shape")
        if s == "mxfp4":
            return mxfp4_w4a16_moe_quant_config(t("w1_scale"), t("w2_scale"), t("w1_bias"), t("w2_bias"))
        return nvfp4_moe_quant_config(t("g1_alphas"), t("g2_alphas"), t("a1_gscale"), t("a2_gscale"),
                                      t("w1_scale"), t("w2_scale"))
    raise QuantError(f"unknown dtype {scheme!r}; valid: {', '.join(DTYPE_CHOICES)}")
