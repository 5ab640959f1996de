"""`moeplan plan`: memory arithmetic against hand-computed numbers, layout validity, measured
times from CSVs, the JSON shape and ranking, bad input. CLI tests run `moeplan.cli.app`."""

import json
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moeplan.cli.app import app
from moeplan.engines.registry import PROFILES
from moeplan.planner.hardware import GiB, Card, card_for
from moeplan.model.spec import find_preset, list_presets
from moeplan.layout.parallel import Layout, check_layout
from moeplan.layout.resolve import QuantRequest, resolve
from moeplan.base.errors import PlanError
from moeplan.planner.plan import PlanRequest, TuningData, candidate_layouts, make_plan, memory
from moeplan.tables.measurements import parse_tuning_csv

H100 = "NVIDIA H100 80GB HBM3"
runner = CliRunner()
PROFILE = PROFILES["vllm-0.33"]


def run(*args):
    return runner.invoke(app, list(args), env={"VLLM_TUNED_CONFIG_FOLDER": ""})


def plan_json(*args):
    r = run("plan", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def mem(alias, tp=1, dp=1, ep=False):
    res = resolve(find_preset(alias), Layout(tp=tp, dp=dp, ep=ep), QuantRequest(), H100)
    return memory(res, Card.from_name(H100))


# ---- memory, by hand ---------------------------------------------------------------------------


def test_memory_mixtral_tp2_bf16():
    m = mem("mixtral-8x7b", tp=2)
    # 32 layers x 8 experts x (w1 2N x K + w2 K x N) with N = 14336 / 2, bf16
    assert m.experts == 32 * 8 * 3 * 7168 * 4096 * 2
    attention = 32 * (2 * 4096 * 32 * 128 // 2 + 2 * 4096 * 128 * (8 // 2)) * 2  # q,o split; 4 of 8 kv heads
    routers = 32 * 4096 * 8 * 2
    embed_and_head = 2 * 32000 * 4096 // 2 * 2  # untied, split over TP along the vocabulary
    assert m.parts == {"attention": attention, "routers": routers, "embeddings + lm_head": embed_and_head}
    assert m.other == attention + routers + embed_and_head == 1_606_418_432
    assert m.total == 45_097_156_608 + 1_606_418_432 and m.fits
    assert m.free == 80 * GiB - m.total


def test_memory_follows_dtype():
    def other(alias, dtype):
        res = resolve(find_preset(alias), Layout(tp=2), QuantRequest(dtype=dtype), H100)
        return memory(res, Card.from_name(H100))
    bf16, fp32, fp8 = (other("mixtral-8x7b", d) for d in ("bf16", "fp32", "fp8_w8a8"))
    assert fp32.other == 2 * bf16.other and fp32.experts == 2 * bf16.experts
    # the engine's fp8 quantizes every linear layer (one fp32 scale per tensor: (E,) for the experts)
    assert fp8.experts == 32 * (8 * 3 * 7168 * 4096 + 2 * 8 * 4)
    assert fp8.parts["attention"] < bf16.parts["attention"] / 1.99
    assert fp8.parts["embeddings + lm_head"] == bf16.parts["embeddings + lm_head"]  # kept in bf16


def test_memory_deepseek_v3_tp8_fp8_block_dense_layers_and_shared_expert():
    m = mem("deepseek-v3", tp=8)
    # routed experts: N = 2048 / 8 = 256, fp8 (1 byte) + fp32 scales per 128x128 block:
    # w1 (2N=512 / 128) x (7168 / 128) = 4 x 56, w2 (7168 / 128) x (256 / 128) = 56 x 2 blocks
    per_expert = 3 * 256 * 7168 * 1 + (4 * 56 + 56 * 2) * 4
    assert m.experts == 58 * 256 * per_expert == 81_758_552_064
    lin = 1 + 4 / (128 * 128)  # the rest of the model is fp8 with block scales too
    mla_replicated = 7168 * 1536 + 7168 * (512 + 64)  # q_a_proj, kv_a_proj_with_mqa
    mla_split = 1536 * 128 * (128 + 64) + 512 * 128 * (128 + 128) + 128 * 128 * 7168  # q_b, kv_b, o
    expected = {
        "attention": int(61 * (mla_replicated + mla_split / 8) * lin),
        "dense MLP": int(3 * 3 * 7168 * 18432 / 8 * lin),  # first 3 layers dense, width 18432
        "shared experts": int(58 * 3 * 7168 * 2048 / 8 * lin),  # one shared expert of width 2048 per MoE layer
        "routers": 58 * 7168 * 256 * 2,
        "embeddings + lm_head": 2 * 129280 * 7168 // 8 * 2,
    }
    assert m.parts == expected
    assert not m.fits  # 79.3 GiB of weights on an 80 GiB card: no room for the KV cache
    assert round(m.total / GiB, 1) == 79.3


def test_memory_gpt_oss_120b_mxfp4_one_gpu():
    m = mem("gpt-oss-120b")
    # 4-bit weights, one E8M0 byte per 32 values along K (w1: 2N x K/32, w2: K x N/32), bf16 biases 2N + K
    per_expert = 3 * 2880 * 2880 // 2 + (2 * 2880 * 90 + 2880 * 90) + (2 * 2880 + 2880) * 2
    assert m.experts == 36 * 128 * per_expert == 60_993_699_840
    # attention stays bf16 (the checkpoint's modules_to_not_convert): 64 q heads and 8 kv heads of 64
    assert m.parts["attention"] == 36 * (2 * 2880 * 64 * 64 + 2 * 2880 * 64 * 8) * 2
    assert m.parts["embeddings + lm_head"] == 2 * 201088 * 2880 * 2
    assert m.fits and round(m.total / GiB, 1) == 60.8


def test_ep_memory_is_the_fullest_device():
    # 256 experts over 3 EP ranks: 86, 85, 85; the first device is the fullest
    m = mem("deepseek-v3", tp=1, dp=3, ep=True)
    per_expert = 3 * 2048 * 7168 + (32 * 56 + 56 * 16) * 4  # w1: 4096/128 x 56 blocks, w2: 56 x 16
    assert m.experts == 58 * 86 * per_expert


def test_presets_add_up_to_their_advertised_sizes():
    """Total parameters from the memory model (bf16 bytes / 2 at TP1) within 5% of the model card's."""
    advertised = {"mixtral-8x7b": 46.7e9, "mixtral-8x22b": 141e9, "deepseek-v2": 236e9, "deepseek-v2-lite": 15.7e9,
                  "deepseek-v3": 671e9, "qwen1.5-moe-a2.7b": 14.3e9, "qwen2-57b-a14b": 57e9,
                  "qwen3-30b-a3b": 30.5e9, "qwen3-235b-a22b": 235e9, "qwen3-coder-480b-a35b": 480e9,
                  "gpt-oss-20b": 21e9, "gpt-oss-120b": 117e9, "llama-4-scout": 109e9, "llama-4-maverick": 400e9,
                  "kimi-k2": 1.04e12, "glm-4.5": 355e9, "glm-4.5-air": 106e9, "ernie-4.5-21b-a3b": 21e9,
                  "ernie-4.5-300b-a47b": 300e9, "jamba-v0.1": 52e9, "minimax-m1": 456e9, "minimax-m2": 230e9,
                  "qwen3-next-80b-a3b-instruct": 80e9, "dbrx": 132e9, "olmoe-1b-7b": 6.9e9, "phi-3.5-moe": 42e9,
                  "hunyuan-a13b": 80e9, "hunyuan-large": 389e9, "snowflake-arctic": 480e9,
                  "granite-3.0-3b-a800m": 3.3e9, "granite-3.0-1b-a400m": 1.3e9}
    for alias, n in advertised.items():
        res = resolve(find_preset(alias), Layout(), QuantRequest(dtype="bf16"), H100)
        params = memory(res, Card.from_name(H100)).total / 2
        assert abs(params / n - 1) < 0.05, (alias, params / 1e9)  # names round: ERNIE "21B" counts 21.8B


def test_every_preset_has_the_rest_of_the_model():
    for spec in list_presets():
        assert spec.vocab_size and spec.num_attention_heads and spec.head_dim, spec.alias
        res = resolve(spec, Layout(), QuantRequest(dtype="bf16"), H100)
        assert memory(res, Card.from_name(H100)).unknown == (), spec.alias


# ---- layouts -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(alias=st.sampled_from(["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "gpt-oss-20b", "llama-4-scout",
                              "qwen3-next-80b-a3b-instruct", "olmoe-1b-7b"]),
       gpus=st.integers(1, 40))
def test_invalid_layouts_never_appear(alias, gpus):
    spec = find_preset(alias)
    try:
        p = make_plan(spec, Card.from_name(H100), "", PlanRequest(gpus=gpus), TuningData(), PROFILE)
    except PlanError as e:
        assert f"on {gpus} GPU" in str(e)
        return
    seen = set()
    for lp in p.layouts:
        lay = lp.res.layout
        assert lay.tp * lay.dp == gpus
        assert spec.num_attention_heads % lay.tp == 0
        check_layout(lay, spec.num_experts, spec.moe_intermediate_size)  # raises if the engine would refuse it
        assert not lay.use_ep or gpus <= spec.num_experts
        key = (lay.tp, lay.dp, lay.use_ep, lay.placement)
        assert key not in seen
        seen.add(key)
    # and every candidate left out is one the engine refuses
    assert len(p.layouts) + len(p.invalid) == len(candidate_layouts(spec, gpus))


def test_round_robin_only_for_grouped_experts():
    assert any(l.placement == "round_robin" for l in candidate_layouts(find_preset("deepseek-v3"), 8))
    assert not any(l.placement == "round_robin" for l in candidate_layouts(find_preset("kimi-k2"), 8))


def test_json_shape_and_ranking():
    d = plan_json("qwen3-30b-a3b", "--gpus", "4", "--batch-sizes", "1,64")
    assert d["gpus"] == 4 and d["model"]["alias"] == "qwen3-30b-a3b"
    keys = {"tp", "dp", "ep", "placement", "fits", "memory_gib", "moe_us", "moe_source", "comm_bytes_per_token",
            "tables"}
    for lay in d["layouts"]:
        assert keys <= set(lay)
        assert set(lay["memory_gib"]) == {"experts", "other", "total", "free"}
        assert set(lay["moe_us"]) == {"1", "64"}
        assert lay["moe_source"] in ("measured", "modelled", "measured+modelled")
        assert lay["tables"] and all("exists" in t and "file" in t for t in lay["tables"])
    ranks = [(not l["fits"], l["score_us"], -l["memory_gib"]["free"]) for l in d["layouts"]]
    assert ranks == sorted(ranks)
    # equal MoE time: TP over 4 holds a quarter of the attention per device, DP 4 all of it
    tp4, dp4 = (next(l for l in d["layouts"] if l["tp"] == t and not l["ep"]) for t in (4, 1))
    assert tp4["moe_us"] == dp4["moe_us"] and d["layouts"].index(tp4) < d["layouts"].index(dp4)
    tp4 = next(l for l in d["layouts"] if l["tp"] == 4 and not l["ep"])
    assert tp4["comm_bytes_per_token"] == 2 * 3 / 4 * 2048 * 2  # ring all-reduce of a bf16 hidden state
    ep = next(l for l in d["layouts"] if l["dp"] == 4 and l["ep"])
    assert ep["comm_bytes_per_token"] == 8 * 3 / 4 * 2048 * (2 + 2)  # dispatch + combine of 8 copies


def test_engine_profile_chooses_the_default_config_of_missing_tables():
    new = plan_json("mixtral-8x7b", "--gpus", "4", "--batch-sizes", "256", "--engine", "vllm-0.33")
    old = plan_json("mixtral-8x7b", "--gpus", "4", "--batch-sizes", "256", "--engine", "vllm-0.12")
    assert new["engine"]["profile"] == "vllm-0.33" and new["engine"]["reason"] == "--engine vllm-0.33"
    cfg = lambda d: d["layouts"][0]["tables"][0]["default_configs"]["256"]  # noqa: E731
    assert cfg(new) == "M64/N128/K64/G1/w8/s3" and cfg(old) == "M64/N64/K32/G8/w4/s3"


# ---- measured times ----------------------------------------------------------------------------

CSV_HEAD = "table,batch_size,phase,config,median_us,is_winner,is_default,floor_us\n"


def test_measured_times_come_from_the_csv(tmp_path):
    name = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3"
    (tmp_path / f"{name}.json").write_text('{"1": {}}')
    rows = [
        "t,1,screen,a,90.0,True,False,50.0",
        "t,1,confirm,a,100.0,True,False,50.0",  # confirm re-measures the finalists: it wins over screen
        "t,1,confirm,b,120.0,False,True,50.0",
        "t,64,confirm,a,400.0,True,False,300.0",
        "t,64,confirm,c,380.0,False,False,300.0",  # faster but not the winner: ignored
    ]
    (tmp_path / f"{name}.csv").write_text(CSV_HEAD + "\n".join(rows) + "\n")
    d = plan_json("mixtral-8x7b", "--gpus", "2", "--tuned-dir", str(tmp_path), "--batch-sizes", "1,64,512")
    tp2 = next(l for l in d["layouts"] if l["tp"] == 2 and not l["ep"])
    assert tp2["tables"][0]["exists"] and tp2["tables"][0]["path"] == str(tmp_path / f"{name}.json")
    assert tp2["moe_us"]["1"] == 100.0 * 32 and tp2["moe_us"]["64"] == 400.0 * 32  # x 32 MoE layers
    assert tp2["moe_source_by_batch"] == {"1": "measured", "64": "measured", "512": "modelled"}
    assert tp2["moe_source"] == "measured+modelled"
    ep = next(l for l in d["layouts"] if l["ep"])
    assert ep["moe_source"] == "modelled" and not ep["tables"][0]["exists"]


def test_parse_tuning_csv():
    pts = parse_tuning_csv(CSV_HEAD + "t,4,screen,a,10,True,True,5\nt,4,check,a,,True,False,5\n")
    assert pts[4].winner_us == 10 and pts[4].default_us == 10 and pts[4].floor_us == 5
    with pytest.raises(PlanError, match="lacks the columns"):
        parse_tuning_csv("a,b\n1,2\n")


def test_modelled_time_scales_the_floor_by_the_measured_ratio(tmp_path):
    name = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3"
    (tmp_path / f"{name}.json").write_text("{}")
    (tmp_path / f"{name}.csv").write_text(CSV_HEAD + "t,1,confirm,a,300,True,False,100\n"
                                                     "t,1,confirm,b,600,False,True,100\n")
    d = plan_json("mixtral-8x7b", "--gpus", "2", "--tuned-dir", str(tmp_path), "--batch-sizes", "1",
                  "--device-name", "NVIDIA H200")
    # On the H200 no table exists: the engine runs its default, so the default's ratio (6x) applies.
    (tmp_path / "none").mkdir()
    base = plan_json("mixtral-8x7b", "--gpus", "2", "--tuned-dir", str(tmp_path / "none"), "--batch-sizes", "1",
                     "--device-name", "NVIDIA H200")
    a = next(l for l in d["layouts"] if l["tp"] == 2 and not l["ep"])
    b = next(l for l in base["layouts"] if l["tp"] == 2 and not l["ep"])
    assert a["moe_source"] == b["moe_source"] == "modelled"
    assert a["moe_us"]["1"] == pytest.approx(6 * b["moe_us"]["1"], rel=1e-3)  # no CSV at all: the bare floor


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["mixtral-8x7b", "--gpus", "0"], "--gpus 0 is out of range; valid: 1..1024"),
    (["mixtral-8x7b", "--gpus", "-2"], "--gpus -2 is out of range; valid: 1..1024"),
    (["mixtral-8x7b", "--gpus", "9"], "GPU counts with a valid layout: 1, 2, 3, 4, 5, 6, 7, 8, 14"),
    (["no-such-model", "--gpus", "2"], "unknown model 'no-such-model'"),
    (["mixtral-8x7b", "--gpus", "2", "--gpu-mem", "-3"], "--gpu-mem -3.0 is invalid"),
    (["mixtral-8x7b", "--gpus", "2", "--gpu-mem", "0"], "--gpu-mem 0.0 is invalid"),
    (["mixtral-8x7b", "--gpus", "2", "--gpu-mem", "lots"], "--gpu-mem 'lots' is invalid; expected GiB per GPU"),
    (["mixtral-8x7b", "--gpus", "2", "--batch-sizes", "1,x"], "--batch-sizes '1,x': 'x' is not a batch size"),
    (["mixtral-8x7b", "--gpus", "2", "--batch-sizes", "0"], "--batch-sizes '0': '0' is not a batch size"),
    (["mixtral-8x7b", "--gpus", "2", "--device-name", "Voodoo 5"], "'Voodoo 5' is not a card"),
    (["mixtral-8x7b", "--gpus", "2", "--engine", "vllm-9"], "not a known engine profile"),
    (["mixtral-8x7b", "--gpus", "2", "--link-gbps", "0"], "--link-gbps 0.0 is out of range"),
    (["mixtral-8x7b", "--gpus", "2", "--dtype", "fp7"], "unknown dtype 'fp7'"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = run("plan", *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("moeplan: error: ") and needle in lines[0], r.stderr


def test_unknown_card_with_gpu_mem():
    card, why = card_for("Voodoo 5", 24)
    assert card.memory_bytes == 24 * GiB and "unknown card" in why
    d = plan_json("olmoe-1b-7b", "--gpus", "1", "--device-name", "Voodoo 5", "--gpu-mem", "24")
    assert d["device"]["memory_gib"] == 24 and d["layouts"][0]["fits"]


def test_human_output_names_profile_card_and_tables(tmp_path):
    # an empty --tuned-dir: the table is missing there (the repo ships an H200 one)
    r = run("plan", "deepseek-v3", "--gpus", "8", "--device-name", "NVIDIA H200", "--tuned-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "engine profile vllm-0.33" in r.stdout and "NVIDIA H200" in r.stdout
    assert "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json\n     missing\n" in r.stdout


def test_plan_is_pure_and_fast():
    # CPU seconds of the process (not wall time, which other jobs on a shared machine stretch)
    code = ("import sys, time; t = time.process_time(); from moeplan.cli.app import app; "
            "from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['plan', 'deepseek-v3', '--gpus', '16', '--json']); "
            "assert r.exit_code == 0, r.output; dt = time.process_time() - t; "
            "bad = [m for m in ('torch', 'triton', 'pandas', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad; assert dt < 1.0, dt")
    subprocess.run([sys.executable, "-c", code], check=True)
    t = time.process_time()
    make_plan(find_preset("kimi-k2"), Card.from_name(H100), "", PlanRequest(gpus=64), TuningData(), PROFILE)
    assert time.process_time() - t < 1.0


@pytest.mark.parametrize("module", ["moeplan.planner.plan", "moeplan.planner.hardware", "moeplan.planner.report"])
def test_planning_modules_import_no_heavy_packages(module):
    code = (f"import sys; import {module}; "
            "bad = [m for m in ('torch', 'triton', 'pandas', 'matplotlib', 'numpy', 'rich', 'typer') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_json_reader_fills_the_rest_of_the_model():
    from moeplan.model.hf_config import model_from_config

    ds = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "n_routed_experts": 256,
          "num_experts_per_tok": 8, "hidden_size": 7168, "moe_intermediate_size": 2048, "n_shared_experts": 1,
          "num_hidden_layers": 61, "first_k_dense_replace": 3, "intermediate_size": 18432, "vocab_size": 129280,
          "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
          "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "n_group": 8,
          "tie_word_embeddings": False, "hidden_act": "silu"}
    spec = model_from_config(ds, "ds.json")
    preset = find_preset("deepseek-v3")
    rest = ("vocab_size", "num_attention_heads", "head_dim", "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim",
            "v_head_dim", "dense_intermediate_size", "num_expert_groups", "tie_word_embeddings")
    assert {k: getattr(spec, k) for k in rest} == {k: getattr(preset, k) for k in rest}
    jamba = {"architectures": ["JambaForCausalLM"], "num_experts": 16, "num_experts_per_tok": 2, "hidden_size": 4096,
             "intermediate_size": 14336, "num_hidden_layers": 32, "vocab_size": 65536, "num_attention_heads": 32,
             "num_key_value_heads": 8, "attn_layer_period": 8, "attn_layer_offset": 4, "mamba_d_state": 16,
             "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 256, "hidden_act": "silu"}
    j, jp = model_from_config(jamba, "j.json"), find_preset("jamba-v0.1")
    assert (j.num_attention_layers, j.linear_mixer_params, j.head_dim) == (4, jp.linear_mixer_params, 128)
    assert j.to_dict()["num_key_value_heads"] == 8
    oss = {"architectures": ["GptOssForCausalLM"], "num_local_experts": 32, "num_experts_per_tok": 4,
           "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 4, "num_attention_heads": 64,
           "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 201088,
           "layer_types": ["sliding_attention", "full_attention"] * 2}
    assert model_from_config(oss, "o.json").num_attention_layers == 4  # sliding-window layers are attention
