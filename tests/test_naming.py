"""File names and the engine's lookup rules."""

import pytest

from moeplan.base.errors import TableError
from moeplan.engines.vllm import (lookup_candidates, nearest_batch_key, normalize_device_name, parse_tuning_file_name,
                                  tuning_file_name)


@pytest.mark.parametrize("raw,norm", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA_H100_80GB_HBM3"),
    ("NVIDIA  A100-SXM4-80GB", "NVIDIA_A100-SXM4-80GB"),  # runs of whitespace -> one _
    ("NVIDIA H200", "NVIDIA_H200"),
    ("NVIDIA H200 NVL", "NVIDIA_H200"),  # any H200 token -> NVIDIA_H200
    ("NVIDIA GH200 480GB", "NVIDIA_GH200_480GB"),  # GH200 is not the token H200
    ("AMD Instinct MI300X/VF", "AMD_Instinct_MI300X_VF"),  # '/' replaced too
    ("NVIDIA RTX A6000 / x", "NVIDIA_RTX_A6000_x"),  # mixed run of ' / ' -> one _
])
def test_device_names(raw, norm):
    assert normalize_device_name(raw) == norm


def test_spec_examples():
    assert tuning_file_name(8, 7168, "NVIDIA H100 80GB HBM3") == "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
    assert (tuning_file_name(256, 256, "NVIDIA H200", "fp8_w8a8", [128, 128])
            == "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json")
    # a zero entry keeps the block selector out of the name (int4 group size)
    assert (tuning_file_name(8, 7168, "NVIDIA H100 80GB HBM3", "int4_w4a16", [0, 128])
            == "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=int4_w4a16.json")


def test_parse_roundtrip():
    name = "E=32,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
    p = parse_tuning_file_name(name)
    assert p == {"E": 32, "N": 2048, "device": "NVIDIA_H100_80GB_HBM3", "dtype": "fp8_w8a8", "block_shape": [128, 128]}
    assert tuning_file_name(p["E"], p["N"], p["device"], p["dtype"], p["block_shape"]) == name


@pytest.mark.parametrize("bad", [
    "E=8,N=7168.json",
    "E=0,N=7168,device_name=X.json",
    "E=8,N=7168,device_name=X,dtype=int3.json",
    "E=8,N=7168,device_name=X,block_shape=[128, 128].json",  # SGLang's spaced form
    "E=8,N=7168,device_name=X.yaml",
])
def test_parse_rejects(bad):
    with pytest.raises(TableError):
        parse_tuning_file_name(bad)


def test_nearest_key():
    keys = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]
    assert nearest_batch_key(keys, 3) == 2  # tie 2/4 -> earlier key
    assert nearest_batch_key(keys, 5) == 4
    assert nearest_batch_key(keys, 20) == 16  # tie 16/24 -> earlier
    assert nearest_batch_key(keys, 10000) == 4096
    assert nearest_batch_key([60, 4], 32) == 60  # file order decides ties: 60 comes first
    with pytest.raises(TableError):
        nearest_batch_key([], 1)


def test_lookup_order():
    env = {"VLLM_TUNED_CONFIG_FOLDER": "/env/"}
    assert lookup_candidates("f.json", ["/a", "/env"], env) == ["/env/f.json", "/a/f.json"]
    assert lookup_candidates("f.json", ["/a"], {}) == ["/a/f.json"]
