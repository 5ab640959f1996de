"""The quant-config model: builders, properties, config names, scale shapes, validation."""

import pytest

from moeplan.layout import quant as q
from moeplan.base.errors import QuantError


def test_unquantized():
    c = q.FUSED_MOE_UNQUANTIZED_CONFIG
    assert not c.is_quantized and c.block_shape is None and c.quant_dtype is None
    assert c.config_name("bfloat16") is None and c.config_name("float16") is None
    assert c.config_name("float32") == "float32"  # fp32 MoE looks for its own file
    assert c.scale_shape(16, 128) is None and c.batched_scale_shape(4, 16, 128) is None


def test_fp8_per_tensor():
    c = q.fp8_w8a8_moe_quant_config(None, None)
    assert c.use_fp8_w8a8 and c.is_per_tensor and not c.per_act_token_quant and not c.per_out_ch_quant
    assert c.config_name("bfloat16") == "fp8_w8a8"
    assert c.scale_shape(10, 4096) == (1, 1)
    assert c.weight_scale_shapes(8, 7168, 4096) == ((8,), (8,))


def test_fp8_per_token_per_channel():
    c = q.fp8_w8a8_moe_quant_config(None, None, per_act_token_quant=True, per_out_ch_quant=True)
    assert c.is_per_act_token and c.per_out_ch_quant and c.w1.shape == q.PER_TOKEN
    assert c.scale_shape(10, 4096) == (10, 1)
    assert c.weight_scale_shapes(8, 7168, 4096) == ((8, 14336, 1), (8, 4096, 1))


def test_fp8_block():
    c = q.fp8_w8a8_moe_quant_config(None, None, block_shape=[128, 128])
    assert c.block_shape == [128, 128] and c.is_block_quantized
    # K tiles = cdiv(7168, 128) = 56
    assert c.scale_shape(32, 7168) == (32, 56)
    assert c.batched_scale_shape(8, 32, 7168) == (8, 32, 56)
    # w1 (E, cdiv(2N, bn), cdiv(K, bk)); w2 (E, cdiv(K, bn), cdiv(N, bk)); N=200 not a multiple
    assert c.weight_scale_shapes(4, 200, 7168) == ((4, 4, 56), (4, 56, 2))


@pytest.mark.parametrize("kw", [dict(per_act_token_quant=True), dict(per_out_ch_quant=True)])
def test_block_with_per_token_is_an_error(kw):
    with pytest.raises(QuantError, match="cannot be combined"):
        q.fp8_w8a8_moe_quant_config(None, None, block_shape=[128, 128], **kw)


def test_int8_w8a8():
    c = q.int8_w8a8_moe_quant_config(None, None, None, None, per_act_token_quant=True)
    assert c.use_int8_w8a8 and c.config_name("bfloat16") is None and c.scale_shape(5, 64) == (5, 1)


@pytest.mark.parametrize("builder,name,flag", [
    (q.int4_w4a16_moe_quant_config, "int4_w4a16", "use_int4_w4a16"),
    (q.int8_w8a16_moe_quant_config, "int8_w8a16", "use_int8_w8a16"),
])
def test_weight_only_group(builder, name, flag):
    c = builder(None, None, None, None, block_shape=[0, 128])
    assert getattr(c, flag) and not c.is_quantized  # activations stay 16-bit
    assert c.config_name("bfloat16") == name and c.config_name("float32") == name
    assert c.block_shape == [0, 128] and c.weight_group_size == 128
    assert c.weight_scale_shapes(8, 1024, 4096) == ((8, 2048, 32), (8, 4096, 8))


def test_fp8_w8a16():
    c = q.fp8_w8a16_moe_quant_config(None, None)
    assert c.use_fp8_w8a16 and not c.use_fp8_w8a8 and c.config_name("bfloat16") == "fp8_w8a16"
    assert c.weight_scale_shapes(8, 7168, 4096) == ((8, 14336, 1), (8, 4096, 1))  # per channel
    b = q.fp8_w8a16_moe_quant_config(None, None, block_shape=[128, 128])
    # 2-D weight blocks like fp8_w8a8: (E, cdiv(2N, bn), cdiv(K, bk)) and (E, cdiv(K, bn), cdiv(N, bk))
    assert b.weight_scale_shapes(8, 7168, 4096) == ((8, 112, 32), (8, 32, 56))
    assert b.weight_group_size is None and b.config_name("bfloat16") == "fp8_w8a16"


def test_mxfp4_and_ocp_mx():
    c = q.mxfp4_w4a16_moe_quant_config(None, None)
    assert c.use_mxfp4_w4a16 and c.ocp_mx_scheme is None and c.config_name("bfloat16") is None
    assert c.weight_group_size == 32
    m = q.ocp_mx_moe_quant_config("mxfp4", None, None)
    assert m.ocp_mx_scheme == "w_mxfp4_a_mxfp4" and m.config_name("bfloat16") is None
    m6 = q.ocp_mx_moe_quant_config("mxfp6_e3m2", None, None, weight_dtype="mxfp4")
    assert m6.ocp_mx_scheme == "w_mxfp4_a_mxfp6_e3m2"
    with pytest.raises(QuantError, match="'fp8'"):
        q.ocp_mx_moe_quant_config("fp8", None, None)


def test_nvfp4():
    c = q.nvfp4_moe_quant_config(None, None, None, None, None, None)
    assert c.use_nvfp4_w4a4 and c.is_quantized and c.config_name("bfloat16") is None
    assert c.scale_shape(4, 64) == (1, 1)


def test_biased():
    c = q.biased_moe_quant_config("b1", "b2")
    assert c.w1_bias == "b1" and c.w2_bias == "b2" and not c.is_quantized


def test_make_rejects_unknown_string_dtype():
    with pytest.raises(QuantError, match="'int3'"):
        q.QuantConfig.make("int3")


def test_torch_dtypes_are_accepted():
    torch = pytest.importorskip("torch")
    c = q.QuantConfig.make(torch.float8_e4m3fn, block_shape=[128, 128])
    assert c.use_fp8_w8a8 and c.quant_dtype == "float8_e4m3fn"
    assert c.config_name(torch.float32) == "fp8_w8a8"
    assert q.FUSED_MOE_UNQUANTIZED_CONFIG.config_name(torch.float32) == "float32"


@pytest.mark.parametrize("text,expected", [("128,128", [128, 128]), ("[128, 128]", [128, 128]), ("0,64", [0, 64])])
def test_parse_block_shape(text, expected):
    assert q.parse_block_shape(text) == expected


@pytest.mark.parametrize("text", ["128", "a,b", "1,2,3", "", "128;128"])
def test_parse_block_shape_malformed(text):
    with pytest.raises(QuantError, match="malformed"):
        q.parse_block_shape(text)


@pytest.mark.parametrize("scheme,kw,needle", [
    ("bf16", dict(block_shape=[128, 128]), "unquantized"),
    ("int8_w8a8", dict(block_shape=[128, 128]), "takes no block shape"),
    ("int4_w4a16", dict(per_token=True), "per group"),
    ("mxfp4", dict(block_shape=[0, 32]), "fixed group size"),
    ("fp8_w8a8", dict(block_shape=[0, 128]), "two positive integers"),
    ("fp8_w8a8", dict(block_shape=[128, 128], per_token=True), "cannot be combined"),
    ("int9", {}, "unknown dtype 'int9'"),
])
def test_quant_for_scheme_errors(scheme, kw, needle):
    with pytest.raises(QuantError, match=needle):
        q.quant_for_scheme(scheme, **kw)


@pytest.mark.parametrize("scheme,block,name", [
    ("bf16", None, None), ("fp16", None, None), ("fp32", None, "float32"),
    ("fp8_w8a8", None, "fp8_w8a8"), ("fp8_w8a8", [128, 128], "fp8_w8a8"), ("fp8_w8a16", None, "fp8_w8a16"),
    ("int8_w8a8", None, None), ("int8_w8a16", [0, 128], "int8_w8a16"), ("int4_w4a16", [0, 64], "int4_w4a16"),
    ("mxfp4", None, None), ("nvfp4", None, None),
])
def test_scheme_config_names(scheme, block, name):
    act = {"fp16": "float16", "fp32": "float32"}.get(scheme, "bfloat16")
    c = q.quant_for_scheme(scheme, block)
    assert c.config_name(act) == name
    assert c.scheme == (scheme if scheme not in ("bf16", "fp16", "fp32") else "unquantized")
