"""`moeplan resolve` and `moeplan models` through typer's runner: exit codes, exact output, JSON."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app
from moeplan.model.spec import list_presets

H100 = "NVIDIA H100 80GB HBM3"
runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, list(args), env=env or {"VLLM_TUNED_CONFIG_FOLDER": ""})


def run_json(*args, env=None):
    r = run(*args, "--json", env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_mixtral_tp2_json():
    d = run_json("resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100)
    assert d["model"]["name"] == "mistralai/Mixtral-8x7B-v0.1"
    assert d["quant"]["config_name"] is None and d["quant"]["scheme"] == "bf16"
    assert [(x["device"], x["tp_size"], x["tp_rank"], x["ep_size"], x["use_ep"], x["N"]) for x in d["devices"]] == [
        (0, 2, 0, 1, False, 7168), (1, 2, 1, 1, False, 7168)]
    assert all(x["local_experts"] == list(range(8)) and x["num_local_experts"] == 8 for x in d["devices"])
    assert {x["tuning_file"] for x in d["devices"]} == {"E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"}


def test_deepseek_auto_is_fp8_block():
    d = run_json("resolve", "deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200")
    assert d["quant"]["config_name"] == "fp8_w8a8" and d["quant"]["block_shape"] == [128, 128]
    assert d["devices"][0]["tuning_file"] == "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"
    # scale shapes for this device: a1 (M, K/128), w1 (E, 2N/128, K/128), w2 (E, K/128, N/128)
    assert d["quant"]["a1"]["scale_shape"] == ["M", 56]
    assert d["quant"]["w1"]["scale_shape"] == [256, 4, 56] and d["quant"]["w2"]["scale_shape"] == [256, 56, 2]


def test_deepseek_ep8_linear():
    d = run_json("resolve", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H100)
    assert d["devices"][3]["local_experts"] == list(range(96, 128))
    assert {x["tuning_file"] for x in d["devices"]} == {
        "E=32,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"}
    assert [x["ep_rank"] for x in d["devices"]] == list(range(8))
    assert all(x["tp_size"] == 1 and x["use_ep"] for x in d["devices"])


def test_uneven_ep_split_gives_two_files():
    # Mixtral 8 experts over 3 EP ranks: 3, 3, 2 -> E=3 and E=2 files
    d = run_json("resolve", "mixtral-8x7b", "--tp", "3", "--ep", "--device-name", H100)
    assert [x["num_local_experts"] for x in d["devices"]] == [3, 3, 2]
    assert [t["E"] for t in d["tables"]] == [3, 2]
    assert d["tables"][1]["devices"] == [2]


def test_round_robin_and_all2all():
    d = run_json("resolve", "qwen3-30b-a3b", "--dp", "4", "--ep", "--placement", "round_robin",
                 "--all2all-backend", "deepep_low_latency", "--device-name", H100)
    assert d["devices"][1]["local_experts"][:3] == [1, 5, 9]
    assert all(x["use_all2all_kernels"] and x["use_deepep_ll_kernels"] for x in d["devices"])


def test_dp_without_ep_flattens_tp():
    d = run_json("resolve", "qwen3-30b-a3b", "--tp", "2", "--dp", "2", "--device-name", H100)
    assert [(x["tp_size"], x["tp_rank"], x["dp_rank"]) for x in d["devices"]] == [(4, 0, 0), (4, 1, 0), (4, 2, 1), (4, 3, 1)]
    assert d["devices"][0]["N"] == 768 // 4


@pytest.mark.parametrize("args,name", [
    (["--dtype", "fp8_w8a8"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8.json"),
    (["--dtype", "fp8_w8a8", "--per-token", "--per-channel"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8.json"),
    (["--dtype", "fp32"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=float32.json"),
    (["--dtype", "int8_w8a8"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"),
    (["--dtype", "int4_w4a16", "--block-shape", "0,128"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=int4_w4a16.json"),
    (["--dtype", "int8_w8a16", "--block-shape", "0,64"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=int8_w8a16.json"),
    (["--dtype", "fp8_w8a16"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a16.json"),
    (["--dtype", "mxfp4"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"),
    (["--dtype", "nvfp4"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"),
    (["--dtype", "fp8_w8a8", "--block-shape", "128,128"], "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"),
])
def test_dtype_file_names(args, name):
    d = run_json("resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100, *args)
    assert d["devices"][0]["tuning_file"] == name


def test_gpt_oss_auto_is_mxfp4():
    d = run_json("resolve", "gpt-oss-20b", "--device-name", H100)
    assert d["quant"]["scheme"] == "mxfp4" and d["quant"]["config_name"] is None
    assert d["devices"][0]["tuning_file"] == "E=32,N=2880,device_name=NVIDIA_H100_80GB_HBM3.json"
    assert d["quant"]["w1"]["scale_shape"] == [32, 5760, 90]  # groups of 32 along K=2880


def test_unknown_device(monkeypatch):
    d = run_json("resolve", "mixtral-8x7b", "--device-name", "NVIDIA H100 80GB HBM3")
    assert d["layout"]["device_name"] == "NVIDIA_H100_80GB_HBM3"
    # no GPU (nvidia-smi finds none): the device part of the name is unknown and nothing is looked up
    monkeypatch.setattr("moeplan.base.gpu.local_device_name", lambda: None)
    d = run_json("resolve", "mixtral-8x7b")
    assert d["layout"]["device_name"] is None
    assert d["devices"][0]["tuning_file"] == "E=8,N=14336,device_name=<unknown>.json"
    assert d["devices"][0]["tuning_file_found"] is None and d["tables"][0]["tried"] == []
    # with a GPU present its name is used
    monkeypatch.setattr("moeplan.base.gpu.local_device_name", lambda: "NVIDIA H200")
    assert run_json("resolve", "mixtral-8x7b")["devices"][0]["tuning_file"] == "E=8,N=14336,device_name=NVIDIA_H200.json"


def _table(path, entries):
    body = {"triton_version": "3.6.0"}
    body.update({str(m): {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1,
                          "num_warps": 4, "num_stages": 3} for m, bm in entries})
    path.write_text(json.dumps(body, indent=4) + "\n")


def test_lookup_env_first_then_tuned_dirs(tmp_path):
    name = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
    env_dir, other = tmp_path / "env", tmp_path / "other"
    env_dir.mkdir(), other.mkdir()
    _table(other / name, [(1, 16), (64, 32)])
    d = run_json("resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100, "--tuned-dir", str(other),
                 "--batch-size", "40", env={"VLLM_TUNED_CONFIG_FOLDER": str(env_dir)})
    assert d["devices"][0]["tuning_file_found"] == str(other / name)
    assert d["tables"][0]["tried"] == [str(env_dir / name), str(other / name)]
    assert d["tables"][0]["entry"] == {"source": "table", "batch_key": 64, "config": {
        "BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}}
    _table(env_dir / name, [(1, 64)])  # the env folder wins once it holds the file
    d = run_json("resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100, "--tuned-dir", str(other),
                 "--batch-size", "40", env={"VLLM_TUNED_CONFIG_FOLDER": str(env_dir)})
    assert d["devices"][0]["tuning_file_found"] == str(env_dir / name)
    assert d["tables"][0]["entry"]["config"]["BLOCK_SIZE_M"] == 64


def test_default_entry_without_table(tmp_path):
    d = run_json("resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100, "--tuned-dir", str(tmp_path),
                 "--batch-size", "2048")  # M // E = 256 > 128 -> GROUP_SIZE_M 16
    assert d["tables"][0]["entry"] == {"source": "default", "batch_key": None, "config": {
        "BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 16, "num_warps": 8, "num_stages": 3}}


def test_human_output():
    r = run("resolve", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H100, "--batch-size", "4")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "E=32,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json" in out
    assert "M=4 uses" in out and "float8_e4m3fn" in out and "(32, 32, 56)" in out


@pytest.mark.parametrize("args,needle", [
    (["resolve", "no-such-model"], "unknown model 'no-such-model'"),
    (["resolve", "mixtral-8x7b", "--tp", "0"], "--tp 0"),
    (["resolve", "mixtral-8x7b", "--dp", "0"], "--dp 0"),
    (["resolve", "mixtral-8x7b", "--tp", "3"], "does not divide the expert intermediate size 14336"),
    (["resolve", "mixtral-8x7b", "--tp", "16", "--ep"], "exceeds the model's 8 experts"),
    (["resolve", "mixtral-8x7b", "--dtype", "int3"], "unknown dtype 'int3'"),
    (["resolve", "mixtral-8x7b", "--dtype", "fp8_w8a8", "--block-shape", "128x128"], "block shape '128x128' is malformed"),
    (["resolve", "mixtral-8x7b", "--dtype", "fp8_w8a8", "--block-shape", "128,128", "--per-token"], "cannot be combined"),
    (["resolve", "deepseek-v3", "--tp", "32"], "block_n = 128"),
    (["resolve", "mixtral-8x7b", "--dtype", "int4_w4a16", "--block-shape", "0,100"], "group size 100"),
    (["resolve", "mixtral-8x7b", "--placement", "zigzag", "--ep", "--tp", "2"], "placement 'zigzag'"),
    (["resolve", "mixtral-8x7b", "--batch-size", "0"], "--batch-size 0"),
    (["resolve", "mixtral-8x7b", "--tp", "two"], "'--tp'"),
    (["resolve", "mixtral-8x7b", "--no-such-flag"], "--no-such-flag"),
])
def test_errors_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("moeplan: error: ") and needle in lines[0], r.stderr


def test_config_json_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    r = run("resolve", str(bad))
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and str(bad) in r.stderr
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                   "intermediate_size": 128, "num_hidden_layers": 2}))
    r = run("resolve", str(dense))
    assert r.exit_code == 2 and "dense" in r.stderr and len(r.stderr.splitlines()) == 1


def test_config_json_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_experts": 16,
        "num_experts_per_tok": 4, "hidden_size": 256, "moe_intermediate_size": 96, "num_hidden_layers": 2}))
    d = run_json("resolve", str(tmp_path), "--tp", "2", "--device-name", H100)
    assert d["devices"][1]["tuning_file"] == "E=16,N=48,device_name=NVIDIA_H100_80GB_HBM3.json"


@pytest.mark.parametrize("spec", list_presets(), ids=lambda s: s.alias)
def test_every_preset_resolves(spec):
    d = run_json("resolve", spec.alias, "--device-name", H100)
    assert d["model"]["num_experts"] == spec.num_experts
    assert d["devices"][0]["tuning_file"].startswith(f"E={spec.num_experts},N={spec.moe_intermediate_size},")
    assert run_json("resolve", spec.name.upper(), "--device-name", H100)["model"]["alias"] == spec.alias


def test_models_command():
    r = run("models", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert len(rows) == len(list_presets()) >= 36
    r = run("models")
    assert r.exit_code == 0 and "deepseek-v3" in r.stdout


def test_resolve_does_not_import_torch():
    code = ("import sys; from moeplan.cli.app import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['resolve', 'deepseek-v3', '--tp', '8', '--device-name', 'X', '--json']); "
            "assert r.exit_code == 0, r.output; "
            "bad = [m for m in ('torch', 'triton', 'pandas') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "moeplan", "resolve", "mixtral-8x7b", "--device-name", H100, "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["devices"][0]["N"] == 14336
