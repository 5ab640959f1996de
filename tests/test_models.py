"""Tests for moeplan.models: presets, config.json conventions, quantization, errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moeplan.base import paths as models_paths
from moeplan.model import load as models_load, spec as models_spec
from moeplan.base.errors import ModelError
from moeplan.model.checkpoint_quant import CheckpointQuant, parse_quantization_config
from moeplan.model.spec import ModelSpec, clear_preset_cache, find_preset, list_presets, spec_from_preset
from moeplan.model.load import load_model, preset_rows
from moeplan.model.hf_config import model_from_config, read_config_file

REPO = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "configs"
REFERENCE = REPO.parent / "shared" / "reference" / "moe_models.json"
# CI lays shared/ beside the clone; elsewhere the reference checks cannot run.
needs_reference = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not present")

EXPECTED_ALIASES = [
    "dbrx",
    "deepseek-r1",
    "deepseek-v2",
    "deepseek-v2-lite",
    "deepseek-v3",
    "ernie-4.5-21b-a3b",
    "ernie-4.5-300b-a47b",
    "glm-4.5",
    "glm-4.5-air",
    "glm-4.7",
    "gpt-oss-120b",
    "gpt-oss-20b",
    "granite-3.0-1b-a400m",
    "granite-3.0-3b-a800m",
    "hunyuan-a13b",
    "hunyuan-large",
    "jamba-v0.1",
    "kimi-k2",
    "llama-4-maverick",
    "llama-4-scout",
    "minimax-m1",
    "minimax-m2",
    "mixtral-8x22b",
    "mixtral-8x7b",
    "olmoe-1b-7b",
    "phi-3.5-moe",
    "qwen1.5-moe-a2.7b",
    "qwen2-57b-a14b",
    "qwen3-235b-a22b",
    "qwen3-235b-a22b-fp8",
    "qwen3-30b-a3b",
    "qwen3-30b-a3b-fp8",
    "qwen3-coder-480b-a35b",
    "qwen3-next-80b-a3b-instruct",
    "qwen3-next-80b-a3b-thinking",
    "snowflake-arctic",
]


@pytest.fixture(autouse=True)
def _fresh_presets(monkeypatch):
    monkeypatch.delenv(models_paths.PRESETS_ENV, raising=False)
    clear_preset_cache()
    yield
    clear_preset_cache()


def _error(fn, *args) -> str:
    with pytest.raises(ModelError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _fixture(name: str) -> dict:
    return json.loads((FIX / name / "config.json").read_text())


def _shape(s: ModelSpec) -> tuple:
    return (
        s.num_experts,
        s.top_k,
        s.hidden_size,
        s.moe_intermediate_size,
        s.num_shared_experts,
        s.shared_expert_intermediate_size,
        s.num_hidden_layers,
        s.num_moe_layers,
    )


# ----------------------------------------------------------------------------- presets


def test_preset_aliases_exact():
    assert [s.alias for s in list_presets()] == EXPECTED_ALIASES


@needs_reference
def test_every_reference_entry_has_a_preset():
    ref = json.loads(REFERENCE.read_text())["models"]
    assert len(ref) == 36
    names = {s.name for s in list_presets()}
    for entry in ref:
        assert entry["name"].split(" (")[0] in names


@pytest.mark.parametrize("alias", EXPECTED_ALIASES)
def test_preset_loads_and_round_trips(alias):
    spec = find_preset(alias)
    assert spec.alias == alias
    for v in (spec.num_experts, spec.top_k, spec.hidden_size, spec.moe_intermediate_size):
        assert isinstance(v, int) and v > 0
    assert 1 <= spec.top_k <= spec.num_experts
    assert spec.num_moe_layers is not None and 0 < spec.num_moe_layers <= spec.num_hidden_layers
    # file == canonical form of the spec, and the canonical form rebuilds an equal spec
    path = Path(spec.source)
    assert path.name == f"{alias}.json" and path.parent == REPO / "configs"
    on_disk = json.loads(path.read_text())
    canonical = spec.to_preset_dict()
    assert {k: on_disk[k] for k in canonical} == canonical
    again = spec_from_preset(json.loads(json.dumps(canonical)), "roundtrip.json")
    assert again == spec and hash(again) == hash(spec)
    assert ModelSpec.from_name(alias) is spec
    json.dumps(spec.to_dict())  # JSON-able


@needs_reference
def test_presets_match_reference_numbers():
    ref = {m["name"].split(" (")[0]: m for m in json.loads(REFERENCE.read_text())["models"]}
    fixed = {"tencent/Tencent-Hunyuan-Large"}
    for spec in list_presets():
        m = ref[spec.name]
        assert (spec.num_experts, spec.top_k, spec.hidden_size, spec.num_hidden_layers) == (
            m["num_experts"],
            m["top_k"],
            m["hidden_size"],
            m["num_hidden_layers"],
        ), spec.alias
        if spec.name not in fixed:
            assert spec.moe_intermediate_size == m["moe_intermediate_size"], spec.alias
            assert spec.num_moe_layers == m["num_moe_layers"], spec.alias
            assert spec.num_shared_experts == m["num_shared_experts"], spec.alias


@needs_reference
def test_generator_is_idempotent():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_presets.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "alias, shape, dtype, activation, bias",
    [
        ("mixtral-8x7b", (8, 2, 4096, 14336, 0, None, 32, 32), ("bf16", None), "silu", False),
        ("deepseek-v3", (256, 8, 7168, 2048, 1, 2048, 61, 58), ("fp8_w8a8", (128, 128)), "silu", False),
        ("deepseek-v2", (160, 6, 5120, 1536, 2, 3072, 60, 59), ("bf16", None), "silu", False),
        ("kimi-k2", (384, 8, 7168, 2048, 1, 2048, 61, 60), ("fp8_w8a8", (128, 128)), "silu", False),
        ("qwen1.5-moe-a2.7b", (60, 4, 2048, 1408, 1, 5632, 24, 24), ("bf16", None), "silu", False),
        ("qwen3-30b-a3b-fp8", (128, 8, 2048, 768, 0, None, 48, 48), ("fp8_w8a8", (128, 128)), "silu", False),
        ("gpt-oss-20b", (32, 4, 2880, 2880, 0, None, 24, 24), ("mxfp4", None), "swigluoai", True),
        ("llama-4-maverick", (128, 1, 5120, 8192, 1, 8192, 48, 24), ("bf16", None), "silu", False),
        ("hunyuan-large", (16, 1, 6400, 18304, 1, 18304, 64, 64), ("bf16", None), "silu", False),
        ("minimax-m2", (256, 8, 3072, 1536, 0, None, 62, 62), ("fp8_w8a8", (128, 128)), "silu", False),
        ("jamba-v0.1", (16, 2, 4096, 14336, 0, None, 32, 16), ("bf16", None), "silu", False),
    ],
)
def test_preset_values(alias, shape, dtype, activation, bias):
    s = find_preset(alias)
    assert _shape(s) == shape
    assert s.default_dtype() == dtype
    assert (s.activation, s.expert_bias) == (activation, bias)


def test_preset_quantization_details():
    q = find_preset("deepseek-v3").quantization
    assert q == CheckpointQuant("fp8", "fp8_w8a8", (128, 128), False, False, "dynamic")
    assert q.describe() == "fp8 block [128,128]"
    assert q.raw["quant_method"] == "fp8"
    g = find_preset("gpt-oss-120b").quantization
    assert (g.method, g.scheme, g.block_shape, g.describe()) == ("mxfp4", "mxfp4", None, "mxfp4")
    assert find_preset("qwen3-30b-a3b").quantization is None


@pytest.mark.parametrize(
    "ref, alias",
    [
        ("deepseek-v3", "deepseek-v3"),
        ("DeepSeek-V3", "deepseek-v3"),
        ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
        ("DEEPSEEK-AI/DEEPSEEK-V3", "deepseek-v3"),
        ("  qwen3-30b-a3b-fp8 ", "qwen3-30b-a3b-fp8"),
        ("Qwen/Qwen3-30B-A3B-FP8", "qwen3-30b-a3b-fp8"),
        ("moonshotai/kimi-k2-instruct", "kimi-k2"),
        ("Kimi-K2-Instruct", "kimi-k2"),  # repo id without its org, when unambiguous
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout"),
        ("tencent/tencent-hunyuan-large", "hunyuan-large"),
    ],
)
def test_resolve_case_insensitive(ref, alias):
    assert find_preset(ref).alias == alias
    assert load_model(ref).alias == alias


def test_preset_rows():
    rows = preset_rows()
    assert [r["alias"] for r in rows] == EXPECTED_ALIASES
    assert all(list(r) == [k for k, _ in models_load.PRESET_COLUMNS] for r in rows)
    ds = next(r for r in rows if r["alias"] == "deepseek-v3")
    assert ds == {
        "alias": "deepseek-v3",
        "repo_id": "deepseek-ai/DeepSeek-V3",
        "experts": 256,
        "top_k": 8,
        "hidden": 7168,
        "expert_width": 2048,
        "shared_experts": "1 (2048)",
        "moe_layers": "58/61",
        "quantization": "fp8 block [128,128]",
    }
    mx = next(r for r in rows if r["alias"] == "mixtral-8x7b")
    assert (mx["shared_experts"], mx["moe_layers"], mx["quantization"]) == ("-", "32/32", "bf16")


def test_preset_load_is_fast_and_cached():
    t = time.process_time()  # CPU seconds: a busy or parallel test run must not fail it
    first = list_presets()
    assert time.process_time() - t < 0.25
    t = time.process_time()
    for _ in range(100):
        find_preset("deepseek-v3")
    assert time.process_time() - t < 0.05
    assert list_presets() == first


def test_presets_dir_env_override(tmp_path, monkeypatch):
    data = find_preset("mixtral-8x7b").to_preset_dict()
    data.update(alias="tiny-moe", name="me/Tiny-MoE", num_experts=4, top_k=2)
    (tmp_path / "tiny.json").write_text(json.dumps(data))
    monkeypatch.setenv(models_paths.PRESETS_ENV, str(tmp_path))
    assert [s.alias for s in list_presets()] == ["tiny-moe"]
    assert load_model("ME/tiny-moe").num_experts == 4
    msg = _error(find_preset, "mixtral-8x7b")
    assert "unknown model 'mixtral-8x7b'" in msg and "(valid: tiny-moe)" in msg


def test_preset_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(models_paths.PRESETS_ENV, str(tmp_path / "nope"))
    msg = _error(list_presets)
    assert str(tmp_path / "nope") in msg and models_paths.PRESETS_ENV in msg

    monkeypatch.delenv(models_paths.PRESETS_ENV)
    base = find_preset("olmoe-1b-7b").to_preset_dict()
    clear_preset_cache()

    dup = tmp_path / "dup"
    dup.mkdir()
    (dup / "a.json").write_text(json.dumps(base))
    (dup / "b.json").write_text(json.dumps({**base, "name": "x/y"}))
    monkeypatch.setenv(models_paths.PRESETS_ENV, str(dup))
    msg = _error(list_presets)
    assert "olmoe-1b-7b" in msg and "unique" in msg

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.json").write_text(json.dumps({**base, "top_k": 65}))
    monkeypatch.setenv(models_paths.PRESETS_ENV, str(bad))
    clear_preset_cache()
    msg = _error(list_presets)
    assert "a.json" in msg and "top_k=65" in msg and "1..64" in msg

    (bad / "a.json").write_text(json.dumps({k: v for k, v in base.items() if k != "hidden_size"}))
    clear_preset_cache()
    msg = _error(list_presets)
    assert "lacks hidden_size" in msg

    (bad / "a.json").write_text(json.dumps({**base, "alias": "Has Space"}))
    clear_preset_cache()
    assert "alias='Has Space'" in _error(list_presets)


# ------------------------------------------------------------------ config.json conventions

FIXTURE_EXPECT = {
    # name: (architecture, model_type, shape, activation, expert_bias, default_dtype)
    "mixtral": ("MixtralForCausalLM", "mixtral", (8, 2, 4096, 14336, 0, None, 32, 32), "silu", False, ("bf16", None)),
    "qwen2_moe": ("Qwen2MoeForCausalLM", "qwen2_moe", (60, 4, 2048, 1408, 1, 5632, 24, 24), "silu", False, ("bf16", None)),
    "qwen3_moe": ("Qwen3MoeForCausalLM", "qwen3_moe", (160, 8, 6144, 2560, 0, None, 62, 62), "silu", False, ("bf16", None)),
    "olmoe": ("OlmoeForCausalLM", "olmoe", (64, 8, 2048, 1024, 0, None, 16, 16), "silu", False, ("bf16", None)),
    "jamba": ("JambaForCausalLM", "jamba", (16, 2, 4096, 14336, 0, None, 32, 16), "silu", False, ("bf16", None)),
    "deepseek_v3": (
        "DeepseekV3ForCausalLM",
        "deepseek_v3",
        (256, 8, 7168, 2048, 1, 2048, 61, 58),
        "silu",
        False,
        ("fp8_w8a8", (128, 128)),
    ),
    "kimi_k2": (
        "DeepseekV3ForCausalLM",
        "kimi_k2",
        (384, 8, 7168, 2048, 1, 2048, 61, 60),
        "silu",
        False,
        ("fp8_w8a8", (128, 128)),
    ),
    "glm4_moe": ("Glm4MoeForCausalLM", "glm4_moe", (160, 8, 5120, 1536, 1, 1536, 92, 89), "silu", False, ("bf16", None)),
    "dbrx": ("DbrxForCausalLM", "dbrx", (16, 4, 6144, 10752, 0, None, 40, 40), "silu", False, ("bf16", None)),
    "ernie": ("Ernie4_5_MoeForCausalLM", "ernie4_5_moe", (64, 6, 2560, 1536, 2, 3072, 28, 27), "silu", False, ("bf16", None)),
    "hunyuan": ("HunYuanMoEV1ForCausalLM", "hunyuan", (64, 8, 4096, 3072, 1, 3072, 32, 32), "silu", False, ("bf16", None)),
    "llama4": (
        "Llama4ForConditionalGeneration",
        "llama4",
        (128, 1, 5120, 8192, 1, 8192, 48, 24),
        "silu",
        False,
        ("fp8_w8a8", None),
    ),
    "gpt_oss": ("GptOssForCausalLM", "gpt_oss", (32, 4, 2880, 2880, 0, None, 24, 24), "swigluoai", True, ("mxfp4", None)),
    "compressed_int4": (
        "Qwen3MoeForCausalLM",
        "qwen3_moe",
        (128, 8, 2048, 768, 0, None, 48, 48),
        "silu",
        False,
        ("int4_w4a16", (0, 128)),
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURE_EXPECT))
def test_fixture_config(name):
    arch, mtype, shape, act, bias, dtype = FIXTURE_EXPECT[name]
    spec = load_model(str(FIX / name / "config.json"))
    assert (spec.architecture, spec.model_type) == (arch, mtype)
    assert _shape(spec) == shape
    assert (spec.activation, spec.expert_bias) == (act, bias)
    assert spec.default_dtype() == dtype
    assert spec.source == str(FIX / name / "config.json")


@pytest.mark.parametrize("name", sorted(FIXTURE_EXPECT))
def test_folder_and_file_paths_agree(name):
    by_folder = load_model(str(FIX / name))
    by_file = load_model(FIX / name / "config.json")
    assert by_folder == by_file
    assert by_folder.source == by_file.source == str(FIX / name / "config.json")


def test_fixture_names_and_aliases():
    mix = load_model(FIX / "mixtral")
    assert (mix.name, mix.alias) == ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b-v0.1")
    ol = load_model(FIX / "olmoe")
    assert (ol.name, ol.alias) == ("olmoe", "olmoe")


def test_fixture_quantization_exact():
    ds = load_model(FIX / "deepseek_v3").quantization
    assert ds == CheckpointQuant("fp8", "fp8_w8a8", (128, 128), False, False, "dynamic")
    assert ds.raw == _fixture("deepseek_v3")["quantization_config"]
    gpt = load_model(FIX / "gpt_oss").quantization
    assert gpt == CheckpointQuant("mxfp4", "mxfp4", None, False, False, None)
    ct = load_model(FIX / "compressed_int4").quantization
    assert ct == CheckpointQuant("compressed-tensors", "int4_w4a16", (0, 128), False, False, None)
    assert ct.describe() == "int4_w4a16 group 128 (compressed-tensors)"
    # Llama-4: quantization_config read from the TOP level although the rest is in text_config
    l4 = load_model(FIX / "llama4").quantization
    assert l4 == CheckpointQuant("fbgemm_fp8", "fp8_w8a8", None, True, True, "dynamic")


def test_qwen_layer_selection_rules():
    cfg = _fixture("qwen2_moe")
    cfg.update(decoder_sparse_step=2, mlp_only_layers=[1, 4])  # odd layers minus layer 1 -> 11
    assert model_from_config(cfg, "q.json").num_moe_layers == 11
    q3 = _fixture("qwen3_moe")
    q3["shared_expert_intermediate_size"] = 4096  # qwen3_moe has no shared-expert code
    s = model_from_config(q3, "q3.json")
    assert (s.num_shared_experts, s.shared_expert_intermediate_size) == (0, None)


def test_qwen3_next_and_vl_moe():
    nxt = {
        "architectures": ["Qwen3NextForCausalLM"],
        "model_type": "qwen3_next",
        "hidden_size": 2048,
        "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512,
        "num_experts": 512,
        "num_experts_per_tok": 10,
        "num_hidden_layers": 48,
    }
    assert _shape(model_from_config(nxt, "n.json")) == (512, 10, 2048, 512, 1, 512, 48, 48)
    vl = {
        "architectures": ["Qwen3VLMoeForConditionalGeneration"],
        "model_type": "qwen3_vl_moe",
        "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
        "text_config": {
            "model_type": "qwen3_vl_moe_text",
            "hidden_size": 2048,
            "moe_intermediate_size": 768,
            "num_experts": 128,
            "num_experts_per_tok": 8,
            "num_hidden_layers": 48,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        },
    }
    s = model_from_config(vl, "vl.json")
    assert _shape(s) == (128, 8, 2048, 768, 0, None, 48, 48)
    assert (s.architecture, s.model_type, s.default_dtype()) == (
        "Qwen3VLMoeForConditionalGeneration",
        "qwen3_vl_moe",
        ("fp8_w8a8", (128, 128)),
    )


def test_deepseek_layer_freq_and_v2():
    cfg = _fixture("deepseek_v3")
    cfg.update(first_k_dense_replace=1, moe_layer_freq=2, num_hidden_layers=10)  # 2,4,6,8
    assert model_from_config(cfg, "d.json").num_moe_layers == 4
    v2 = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "hidden_size": 2048,
        "moe_intermediate_size": 1408,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "num_hidden_layers": 27,
    }
    assert _shape(model_from_config(v2, "v2.json")) == (64, 6, 2048, 1408, 2, 2816, 27, 26)


def test_glm_ignores_moe_layer_freq():
    cfg = _fixture("glm4_moe")
    cfg["moe_layer_freq"] = 2  # not part of the glm4_moe rule
    assert model_from_config(cfg, "g.json").num_moe_layers == 89


def test_jamba_offset_and_ernie_end_index():
    j = _fixture("jamba")
    j.update(expert_layer_period=4, expert_layer_offset=3)
    assert model_from_config(j, "j.json").num_moe_layers == 8
    e = _fixture("ernie")
    e.update(moe_layer_start_index=3, moe_layer_end_index=-1, moe_layer_interval=1)
    assert model_from_config(e, "e.json").num_moe_layers == 25  # layers 3..27
    e.update(moe_layer_interval=2)
    assert model_from_config(e, "e.json").num_moe_layers == 13  # odd layers 3..27


def test_hunyuan_int_fields_and_fallback_width():
    large = {
        "architectures": ["HunYuanForCausalLM"],
        "model_type": "hunyuan",
        "hidden_size": 6400,
        "intermediate_size": 18304,
        "moe_topk": 1,
        "num_experts": 16,
        "num_shared_expert": 1,
        "use_mixed_mlp_moe": True,
        "num_hidden_layers": 64,
    }
    s = model_from_config(large, "hy.json")
    assert _shape(s) == _shape(find_preset("hunyuan-large"))
    no_shared = dict(large, use_mixed_mlp_moe=False, moe_layer_num_skipped=4)
    assert _shape(model_from_config(no_shared, "hy.json")) == (16, 1, 6400, 18304, 0, None, 64, 60)
    h = _fixture("hunyuan")
    h["moe_topk"] = [2] + [8] * 31  # vLLM reads element [0]
    assert model_from_config(h, "h.json").top_k == 2


def test_llama4_scout_and_explicit_moe_layers():
    cfg = _fixture("llama4")
    cfg["text_config"].update(num_local_experts=16, interleave_moe_layer_step=1)
    del cfg["quantization_config"]
    s = model_from_config(cfg, "scout.json")
    assert _shape(s) == (16, 1, 5120, 8192, 1, 8192, 48, 48)
    assert s.quantization is None
    cfg["text_config"]["moe_layers"] = [1, 3, 5, 99]
    assert model_from_config(cfg, "scout.json").num_moe_layers == 3


def test_quantization_inside_text_config_is_a_fallback():
    cfg = _fixture("llama4")
    top = cfg.pop("quantization_config")
    cfg["text_config"]["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    assert model_from_config(cfg, "l.json").default_dtype() == ("fp8_w8a8", (128, 128))
    cfg["quantization_config"] = top  # the top level wins when both exist
    assert model_from_config(cfg, "l.json").quantization.method == "fbgemm_fp8"


def test_gpt_oss_experts_per_token_only():
    cfg = _fixture("gpt_oss")
    del cfg["num_experts_per_tok"]
    cfg["experts_per_token"] = 2
    s = model_from_config(cfg, "g.json")
    assert (s.top_k, s.activation, s.expert_bias) == (2, "swigluoai", True)


@pytest.mark.parametrize(
    "cfg, shape",
    [
        (
            {
                "architectures": ["PhiMoEForCausalLM"],
                "model_type": "phimoe",
                "hidden_size": 4096,
                "intermediate_size": 6400,
                "num_local_experts": 16,
                "num_experts_per_tok": 2,
                "num_hidden_layers": 32,
            },
            (16, 2, 4096, 6400, 0, None, 32, 32),
        ),
        (
            {
                "architectures": ["GraniteMoeForCausalLM"],
                "model_type": "granitemoe",
                "hidden_size": 1536,
                "intermediate_size": 512,
                "num_local_experts": 40,
                "num_experts_per_tok": 8,
                "num_hidden_layers": 32,
            },
            (40, 8, 1536, 512, 0, None, 32, 32),
        ),
        (
            {
                "architectures": ["GraniteMoeSharedForCausalLM"],
                "model_type": "granitemoeshared",
                "hidden_size": 1024,
                "intermediate_size": 512,
                "shared_intermediate_size": 1024,
                "num_local_experts": 32,
                "num_experts_per_tok": 8,
                "num_hidden_layers": 24,
            },
            (32, 8, 1024, 512, 1, 1024, 24, 24),
        ),
        (
            {
                "architectures": ["MiniMaxM1ForCausalLM"],
                "model_type": "minimax_m1",
                "hidden_size": 6144,
                "intermediate_size": 9216,
                "shared_intermediate_size": 0,
                "num_local_experts": 32,
                "num_experts_per_tok": 2,
                "num_hidden_layers": 80,
            },
            (32, 2, 6144, 9216, 0, None, 80, 80),
        ),
        (
            {
                "architectures": ["MiniMaxM2ForCausalLM"],
                "model_type": "mixtral",  # an early PR revision said mixtral: architectures[0] wins anyway
                "hidden_size": 3072,
                "intermediate_size": 1536,
                "num_local_experts": 256,
                "num_experts_per_tok": 8,
                "num_hidden_layers": 62,
                "num_mtp_modules": 3,
            },
            (256, 8, 3072, 1536, 0, None, 62, 62),
        ),
        (
            {
                "architectures": ["ArcticForCausalLM"],
                "model_type": "arctic",
                "hidden_size": 7168,
                "intermediate_size": 4864,
                "num_local_experts": 128,
                "num_experts_per_tok": 2,
                "num_hidden_layers": 35,
                "moe_layer_frequency": 1,
            },
            (128, 2, 7168, 4864, 0, None, 35, 35),
        ),
        (
            {
                "architectures": ["ArcticForCausalLM"],
                "hidden_size": 64,
                "intermediate_size": 32,
                "num_local_experts": 4,
                "num_experts_per_tok": 2,
                "num_hidden_layers": 6,
                "moe_layer_frequency": 2,
            },
            (4, 2, 64, 32, 0, None, 6, 3),
        ),
    ],
)
def test_mixtral_style_relatives(cfg, shape):
    assert _shape(model_from_config(cfg, "x.json")) == shape


def test_dispatch_fallbacks():
    # no architectures: model_type decides
    cfg = _fixture("deepseek_v3")
    del cfg["architectures"]
    assert model_from_config(cfg, "d.json").num_moe_layers == 58
    # unknown architecture and model_type: recognised by the field names
    ol = dict(_fixture("olmoe"), architectures=["MyOwnMoE"], model_type="mine")
    assert _shape(model_from_config(ol, "o.json")) == (64, 8, 2048, 1024, 0, None, 16, 16)
    ds = dict(_fixture("kimi_k2"), architectures=["SomethingNew"], model_type="new")
    assert model_from_config(ds, "k.json").num_experts == 384


def test_activation_mapping():
    cfg = dict(_fixture("mixtral"), hidden_act="gelu_pytorch_tanh")
    assert model_from_config(cfg, "m.json").activation == "gelu"
    cfg = dict(_fixture("mixtral"), hidden_act="swish")
    assert model_from_config(cfg, "m.json").activation == "silu"
    msg = _error(model_from_config, dict(_fixture("mixtral"), hidden_act="relu2"), "m.json")
    assert "'relu2'" in msg and "silu" in msg


# ------------------------------------------------------------------------ quantization


@pytest.mark.parametrize(
    "qc, expect, text",
    [
        (
            {"quant_method": "fp8", "activation_scheme": "static"},
            CheckpointQuant("fp8", "fp8_w8a8", None, False, False, "static"),
            "fp8 per-tensor static",
        ),
        (
            {"quant_method": "fp8", "activation_scheme": "dynamic"},
            CheckpointQuant("fp8", "fp8_w8a8", None, False, False, "dynamic"),
            "fp8 per-tensor",
        ),
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True},
            CheckpointQuant("gptq", "int4_w4a16", (0, 128), False, False, None),
            "int4_w4a16 group 128 (gptq)",
        ),
        (
            {"quant_method": "gptq", "bits": 8, "group_size": -1},
            CheckpointQuant("gptq", "int8_w8a16", None, True, False, None),
            "int8_w8a16 per-channel (gptq)",
        ),
        (
            {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True},
            CheckpointQuant("awq", "int4_w4a16", (0, 64), False, False, None),
            "int4_w4a16 group 64 (awq)",
        ),
        (
            {"quant_method": "awq", "w_bit": 4, "q_group_size": 128},
            CheckpointQuant("awq", "int4_w4a16", (0, 128), False, False, None),
            "int4_w4a16 group 128 (awq)",
        ),
        (
            {"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4", "group_size": 16}},
            CheckpointQuant("modelopt", "nvfp4", None, False, False, None),
            "nvfp4",
        ),
        (
            {"quant_method": "modelopt", "quant_algo": "FP8"},
            CheckpointQuant("modelopt", "fp8_w8a8", None, False, False, "static"),
            "fp8 per-tensor static (modelopt)",
        ),
    ],
)
def test_quant_methods(qc, expect, text):
    q = parse_quantization_config(qc, "q.json")
    assert q == expect
    assert q.describe() == text
    assert q.raw == qc


@pytest.mark.parametrize("qc, field", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method='bitsandbytes'"),
    ({"group_size": 32, "bits": 3}, "quant_method=None"),
    ({"quant_method": ["fp8"]}, "quant_method=['fp8']"),
    ({"quant_method": "gptq", "bits": 3, "group_size": 128}, "bits=3"),
    ({"quant_method": "modelopt", "quant_algo": "W4A8"}, "quant_algo='W4A8'"),
    ({"quant_method": "fp8", "activation_scheme": "sometimes"}, "activation_scheme='sometimes'"),
    ({"quant_method": "compressed-tensors", "config_groups": []}, "config_groups=[]"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": 8}}}, "config_groups.g"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 3, "type": "int"}}}},
     "num_bits=3"),
])
def test_unplannable_quantization_is_an_error_naming_the_field(qc, field):
    # never a silent bf16 plan: the field and the valid values are named
    msg = _error(parse_quantization_config, qc, "q.json")
    assert "q.json" in msg and field in msg and ("valid" in msg or "must be" in msg)


def _ct(weights, acts=None, fmt="float-quantized"):
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": acts}},
    }


@pytest.mark.parametrize(
    "qc, expect",
    [
        (
            _ct(
                {"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": False},
                {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
            ),
            CheckpointQuant("compressed-tensors", "fp8_w8a8", None, True, True, "dynamic"),
        ),
        (
            _ct(
                {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]},
                {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128, "dynamic": True},
            ),
            CheckpointQuant("compressed-tensors", "fp8_w8a8", (128, 128), False, False, "dynamic"),
        ),
        (
            _ct(
                {"num_bits": 8, "type": "float", "strategy": "tensor"},
                {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False},
            ),
            CheckpointQuant("compressed-tensors", "fp8_w8a8", None, False, False, "static"),
        ),
        (
            _ct({"num_bits": 8, "type": "float", "strategy": "channel"}),
            CheckpointQuant("compressed-tensors", "fp8_w8a16", None, True, False, None),
        ),
        (
            _ct(
                {"num_bits": 8, "type": "int", "strategy": "channel"},
                {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True},
                "int-quantized",
            ),
            CheckpointQuant("compressed-tensors", "int8_w8a8", None, True, True, "dynamic"),
        ),
        (
            _ct({"num_bits": 8, "type": "int", "strategy": "group", "group_size": 64}, None, "pack-quantized"),
            CheckpointQuant("compressed-tensors", "int8_w8a16", (0, 64), False, False, None),
        ),
        (
            _ct(
                {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
                {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "dynamic": "local"},
                "nvfp4-pack-quantized",
            ),
            CheckpointQuant("compressed-tensors", "nvfp4", None, False, False, "dynamic"),
        ),
        (
            _ct({"num_bits": 4, "type": "int", "strategy": "channel"}, None, "pack-quantized"),
            CheckpointQuant("compressed-tensors", "int4_w4a16", None, True, False, None),
        ),
    ],
)
def test_compressed_tensors(qc, expect):
    assert parse_quantization_config(qc, "ct.json") == expect


def test_quant_errors():
    msg = _error(parse_quantization_config, {"quant_method": "fp8", "weight_block_size": [128]}, "q.json")
    assert "weight_block_size=[128]" in msg and "[block_n, block_k]" in msg and "q.json" in msg
    msg = _error(parse_quantization_config, "fp8", "q.json")
    assert "quantization_config" in msg and "'fp8'" in msg
    msg = _error(parse_quantization_config, {"quant_method": "gptq", "bits": 4, "group_size": "big"}, "q.json")
    assert "group_size='big'" in msg


def test_checkpoint_quant_hash_ignores_raw():
    a = CheckpointQuant("fp8", "fp8_w8a8", (128, 128), raw={"x": 1})
    b = CheckpointQuant("fp8", "fp8_w8a8", (128, 128), raw={"y": 2})
    assert a == b and hash(a) == hash(b)
    assert a.to_dict()["block_shape"] == [128, 128]


# ------------------------------------------------------------------------------- errors


def test_unknown_model_messages():
    msg = _error(load_model, "foo")
    assert msg.startswith("unknown model 'foo': not a preset alias/repo id (valid: dbrx, deepseek-r1, ")
    assert "nor a path to a config.json or a folder holding one" in msg
    assert "did you mean" not in msg
    msg = _error(load_model, "deepseek-v3x")
    assert "did you mean 'deepseek-v3'" in msg
    msg = _error(load_model, "mistralai/Mixtral-8x7B-v0.2")
    assert "unknown model 'mistralai/Mixtral-8x7B-v0.2'" in msg and "'mixtral-8x7b'" in msg
    msg = _error(load_model, "org/Totally-Unknown")
    assert "unknown model 'org/Totally-Unknown'" in msg
    msg = _error(load_model, "./no/such/config.json")
    # a path names the missing path first, before the list of presets
    assert msg.startswith("model path './no/such/config.json' does not exist (no file or folder there)"), msg
    assert msg.index("does not exist") < msg.index("deepseek-v3")
    assert "valid: " in _error(find_preset, "zzz")
    assert "empty model reference" in _error(load_model, "")


def test_unreadable_paths(tmp_path, monkeypatch):
    empty = tmp_path / "weights"
    empty.mkdir()
    msg = _error(load_model, str(empty))
    assert str(empty) in msg and "no config.json" in msg
    msg = _error(read_config_file, tmp_path / "missing.json")
    assert "missing.json" in msg and "no such file" in msg

    cfg = tmp_path / "locked.json"
    cfg.write_text("{}")
    import builtins
    real = builtins.open

    def deny(file, *a, **k):
        if str(file) == str(cfg):
            raise PermissionError(13, "Permission denied")
        return real(file, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    msg = _error(load_model, str(cfg))
    assert str(cfg) in msg and "permission denied" in msg

    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"a": "\xff"}')
    monkeypatch.setattr(builtins, "open", real)
    assert "not UTF-8" in _error(load_model, str(bad))


def test_folder_named_like_a_preset_without_config(tmp_path, monkeypatch):
    (tmp_path / "dbrx").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_model("dbrx").alias == "dbrx"  # empty folder: the preset still resolves
    (tmp_path / "dbrx" / "config.json").write_text((FIX / "olmoe" / "config.json").read_text())
    assert load_model("dbrx").num_experts == 64  # a real config.json wins


def test_malformed_json(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{\n  "num_experts": 8,\n  "top_k" 2\n}\n')
    msg = _error(load_model, str(tmp_path))
    assert msg.startswith(f"config file '{p}': not valid JSON")
    assert "line 3 column 11" in msg
    p.write_text("[1, 2]")
    msg = _error(load_model, str(p))
    assert str(p) in msg and "list" in msg and "object" in msg


def test_dense_model_error():
    path = FIX / "dense_llama" / "config.json"
    msg = _error(load_model, str(path))
    assert msg == (
        f"'{path}' describes a dense model (LlamaForCausalLM): no experts field "
        "(num_local_experts / num_experts / n_routed_experts / moe_num_experts / ffn_config.moe_num_experts)"
    )
    dense_hy = {
        "architectures": ["HunYuanForCausalLM"],
        "model_type": "hunyuan",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_experts": 1,
        "moe_topk": [1],
        "num_hidden_layers": 32,
    }
    assert "dense model (HunYuanForCausalLM)" in _error(model_from_config, dense_hy, "h.json")
    only_dense_layers = dict(_fixture("qwen2_moe"), mlp_only_layers=list(range(24)))
    assert "0 of 24 layers" in _error(model_from_config, only_dense_layers, "q.json")


@pytest.mark.parametrize(
    "name, change, needles",
    [
        ("mixtral", {"num_local_experts": 0}, ["num_local_experts=0", "positive integer"]),
        ("mixtral", {"num_local_experts": -8}, ["num_local_experts=-8"]),
        ("mixtral", {"num_local_experts": 8.5}, ["num_local_experts=8.5"]),
        ("mixtral", {"num_local_experts": "8"}, ["num_local_experts='8'"]),
        ("mixtral", {"num_local_experts": True}, ["num_local_experts=True"]),
        ("mixtral", {"num_experts_per_tok": 0}, ["num_experts_per_tok=0"]),
        ("mixtral", {"num_experts_per_tok": 9}, ["num_experts_per_tok=9", "num_local_experts=8", "1..8"]),
        ("mixtral", {"intermediate_size": 0}, ["intermediate_size=0"]),
        ("mixtral", {"hidden_size": None}, ["has no 'hidden_size'"]),
        ("mixtral", {"num_local_experts": None}, ["has no 'num_local_experts'", "MixtralForCausalLM"]),
        ("mixtral", {"num_hidden_layers": 0}, ["num_hidden_layers=0"]),
        ("deepseek_v3", {"n_routed_experts": 0}, ["n_routed_experts=0"]),
        ("deepseek_v3", {"first_k_dense_replace": -1}, ["first_k_dense_replace=-1"]),
        ("ernie", {"moe_k": 65}, ["moe_k=65", "moe_num_experts=64"]),
        ("hunyuan", {"moe_topk": []}, ["moe_topk=[]"]),
        ("hunyuan", {"moe_intermediate_size": [0] * 32}, ["moe_intermediate_size=0"]),
        ("dbrx", {"ffn_config": None}, ["has no 'ffn_config'"]),
        ("qwen2_moe", {"mlp_only_layers": 3}, ["mlp_only_layers=3"]),
    ],
)
def test_invalid_numbers(name, change, needles):
    cfg = _fixture(name)
    cfg.update(change)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    msg = _error(model_from_config, cfg, "/cfg/config.json")
    assert "'/cfg/config.json'" in msg
    for n in needles:
        assert n in msg


def test_dbrx_nested_invalid():
    cfg = _fixture("dbrx")
    cfg["ffn_config"]["moe_top_k"] = 17
    msg = _error(model_from_config, cfg, "d.json")
    assert "ffn_config.moe_top_k=17" in msg and "ffn_config.moe_num_experts=16" in msg


def test_llama4_nested_invalid_names_text_config():
    cfg = _fixture("llama4")
    cfg["text_config"]["num_local_experts"] = 0
    assert "text_config.num_local_experts=0" in _error(model_from_config, cfg, "l.json")


def test_top_level_not_object():
    assert "list" in _error(model_from_config, [1], "x.json")


def test_modelspec_validation():
    base = find_preset("mixtral-8x7b")
    kw = {k: getattr(base, k) for k in base.__dataclass_fields__}
    for key, value, needle in [
        ("top_k", 9, "top_k=9 exceeds num_experts=8"),
        ("num_experts", 0, "num_experts=0"),
        ("activation", "relu", "activation='relu'"),
        ("num_moe_layers", 33, "num_moe_layers=33"),
        ("shared_expert_intermediate_size", 128, "num_shared_experts=0"),
    ]:
        bad = copy.copy(kw)
        bad[key] = value
        msg = _error(lambda: ModelSpec(**bad))
        assert needle in msg


@settings(max_examples=60, deadline=None)
@given(
    E=st.integers(1, 512),
    k=st.integers(1, 600),
    K=st.integers(1, 16384),
    N=st.integers(1, 32768),
    L=st.integers(1, 128),
    first=st.integers(0, 130),
    freq=st.integers(1, 4),
)
def test_deepseek_rule_property(E, k, K, N, L, first, freq):
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "n_routed_experts": E,
        "num_experts_per_tok": k,
        "hidden_size": K,
        "moe_intermediate_size": N,
        "num_hidden_layers": L,
        "first_k_dense_replace": first,
        "moe_layer_freq": freq,
    }
    expected_layers = len([i for i in range(L) if i >= first and i % freq == 0])
    if k > E or expected_layers == 0:
        with pytest.raises(ModelError):
            model_from_config(cfg, "p.json")
        return
    s = model_from_config(cfg, "p.json")
    assert (s.num_experts, s.top_k, s.hidden_size, s.moe_intermediate_size) == (E, k, K, N)
    assert s.num_moe_layers == expected_layers


# ------------------------------------------------------------------------------ purity


def test_import_is_pure_and_fast():
    code = (
        "import sys, time; t = time.process_time(); import moeplan.model.spec as m; "
        "m.find_preset('deepseek-v3'); dt = time.process_time() - t; "
        "bad = [x for x in ('torch', 'triton', 'rich', 'typer', 'pandas', 'numpy') if x in sys.modules]; "
        "print(bad, dt)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    bad, dt = out.stdout.rsplit(" ", 1)
    assert bad == "[]"
    assert float(dt) < 0.3


def test_models_source_imports_only_stdlib():
    for path in sorted((REPO / "moeplan" / "model").glob("*.py")):
        src = path.read_text()
        imports = {
            line.split()[1].split(".")[0]
            for line in src.splitlines()
            if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
        }
        assert imports <= {"difflib", "json", "os", "re", "dataclasses", "pathlib", "typing", "moeplan"}, path
    assert "from moeplan.base.errors import ModelError" in (REPO / "moeplan" / "model" / "spec.py").read_text()
