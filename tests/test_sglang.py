"""SGLang as an engine: names, the merged shared expert, folders and lookup order, tables SGLang
can load (checked by a plain loader written here from the spec), through the app (sglang_engine.md)."""

import json
import os

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app
from moeplan.engines import sglang
from moeplan.engines.registry import choose_profile, default_config, get_profile
from moeplan.engines.knobs import KernelConfig
from moeplan.tables.table import TuningTable, parse_table, write_table
from moeplan.base.errors import TableError

runner = CliRunner()
ENG = "sglang-0.5.23"
DSV3_TP8 = "E=257,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128]"
CFG = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
       "num_stages": 3}


def resolve_json(*args, env=None):
    r = runner.invoke(app, ["resolve", *args, "--engine", ENG, "--json"],
                      env={"SGLANG_MOE_CONFIG_DIR": "", "VLLM_TUNED_CONFIG_FOLDER": "", **(env or {})})
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# ---- a plain SGLang loader, written from the spec (§1.1-1.4), to load what moeplan writes ----

def sglang_loads(root, triton_version, E, N, device, dtype=None, block=None, per_channel=False, down=False):
    """(path, {int key: entry}) as SGLang 0.5 would load them, or (None, None)."""
    name = f"E={E},N={N},device_name={device.replace(' ', '_')}"
    if dtype:
        name += f",dtype={dtype}"
    if block and all(block):
        name += f",block_shape=[{block[0]}, {block[1]}]"
    if per_channel:
        name += ",per_channel_quant=True"
    name += ("_down" if down else "") + ".json"
    configs = os.path.join(root, "configs")
    mine = "triton_" + triton_version.replace(".", "_")
    candidates = [os.path.join(configs, mine, name)]
    versions = [d[len("triton_"):].replace("_", ".") for d in os.listdir(configs) if d.startswith("triton_")]
    versions.sort(key=lambda v: [int(x) for x in v.split(".")], reverse=True)
    candidates += [os.path.join(configs, "triton_" + v.replace(".", "_"), name) for v in versions
                   if v != triton_version]
    for p in candidates:
        if os.path.exists(p):
            with open(p) as f:
                return p, {int(k): v for k, v in json.load(f).items()}  # every key int()-ed
    if down:
        return sglang_loads(root, triton_version, E, N, device, dtype, block, per_channel, False)
    return None, None


def put(root, folder, name, obj=None):
    d = root / "configs" / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(obj or {"1": CFG}, indent=4) + "\n")
    return str(d / name)


# ---- names ---------------------------------------------------------------------------

def test_dsv3_tp8_merges_the_shared_expert():
    d = resolve_json("deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200")
    t = d["tables"][0]
    assert (t["tuning_file"], t["E"], t["topk"], t["merged_shared_experts"]) == (DSV3_TP8 + ".json", 257, 9, 1)
    assert t["down"]["tuning_file"] == DSV3_TP8 + "_down.json"
    assert {x["kernel_experts"] for x in d["devices"]} == {257}
    assert {x["num_local_experts"] for x in d["devices"]} == {256}
    # the merged expert's weights sit beside the routed ones: w13/w2 and their scales hold 257
    assert (d["quant"]["w1"]["scale_shape"], d["quant"]["w2"]["scale_shape"]) == ([257, 4, 56], [257, 56, 2])


def test_dsv3_ep8_no_merge():
    d = resolve_json("deepseek-v3", "--tp", "8", "--ep", "--device-name", "NVIDIA H200")
    names = [t["tuning_file"] for t in d["tables"]]
    assert names == ["E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"]
    assert d["tables"][0]["topk"] == 8 and "EP" in d["shared_expert_merge"]


def test_h200_nvl_keeps_its_name_vllm_collapses():
    d = resolve_json("mixtral-8x7b", "--tp", "2", "--device-name", "NVIDIA H200 NVL")
    assert d["tables"][0]["tuning_file"] == "E=8,N=7168,device_name=NVIDIA_H200_NVL.json"
    r = runner.invoke(app, ["resolve", "mixtral-8x7b", "--tp", "2", "--device-name", "NVIDIA H200 NVL", "--json",
                            "--engine", "vllm-0.33"], env={"VLLM_TUNED_CONFIG_FOLDER": ""})
    assert json.loads(r.stdout)["tables"][0]["tuning_file"] == "E=8,N=7168,device_name=NVIDIA_H200.json"


def test_glm45_per_channel_fp8_merges():
    d = resolve_json("glm-4.5", "--tp", "8", "--dtype", "fp8_w8a8", "--per-channel", "--per-token",
                     "--device-name", "NVIDIA H200")
    assert d["tables"][0]["tuning_file"] == "E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json"


def test_int8_w8a8_is_a_dtype_and_per_channel():
    d = resolve_json("mixtral-8x7b", "--tp", "2", "--dtype", "int8_w8a8", "--per-channel", "--per-token",
                     "--device-name", "NVIDIA H100 80GB HBM3")
    assert d["tables"][0]["tuning_file"] == \
        "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=int8_w8a8,per_channel_quant=True.json"


def test_int4_names_the_packed_n():
    d = resolve_json("mixtral-8x7b", "--tp", "2", "--dtype", "int4_w4a16", "--block-shape", "0,128",
                     "--device-name", "NVIDIA H100 80GB HBM3")
    assert d["tables"][0]["tuning_file"] == "E=8,N=3584,device_name=NVIDIA_H100_80GB_HBM3,dtype=int4_w4a16.json"
    assert d["devices"][0]["N"] == 7168


def test_scheme_without_sglang_table_is_one_error_line():
    r = runner.invoke(app, ["resolve", "mixtral-8x7b", "--dtype", "fp8_w8a16", "--engine", ENG,
                            "--device-name", "NVIDIA H100 80GB HBM3"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("moeplan: error: --dtype fp8_w8a16 has no table in SGLang") and r.stderr.count("\n") == 1


def test_name_round_trip():
    for name in (DSV3_TP8 + ".json", DSV3_TP8 + "_down.json",
                 "E=161,N=192,device_name=NVIDIA_H200,dtype=fp8_w8a8,per_channel_quant=True.json",
                 "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"):
        p = sglang.parse_tuning_file_name(name)
        assert sglang.tuning_file_name(p["E"], p["N"], p["device"], p["dtype"], p["block_shape"],
                                       p["per_channel_quant"], p["down"]) == name
    with pytest.raises(TableError):
        sglang.parse_tuning_file_name("E=8,N=1,device_name=X,block_shape=[128,128].json")  # vLLM's spelling


# ---- engine choice -------------------------------------------------------------------

def test_choose_profile_sglang_only():
    only = {"sglang": "0.5.23", "triton": "3.8.0"}
    c = choose_profile(None, version_of=only.get)
    assert (c.profile.name, c.engine_version, c.warning) == (ENG, "0.5.23", None)
    assert choose_profile(None, version_of={"sglang": "0.4.10"}.get).profile.name == "sglang-0.4.10"
    both = {"sglang": "0.5.23", "vllm": "0.33.0"}
    assert choose_profile(None, version_of=both.get).profile.name == "vllm-0.33"
    assert choose_profile(None, version_of=lambda _: None).profile.name == "vllm-0.33"
    assert sglang.serving_triton(ENG, find=only.get) == ("3.8.0", "the installed triton")
    assert sglang.serving_triton(ENG, find=lambda _: None)[0] == "3.8.0"


# ---- folders and lookup ------------------------------------------------------------------

def test_fallback_newest_first_and_exact_wins(tmp_path):
    bundled = tmp_path / "sgl"
    p32 = put(bundled, "triton_3_2_0", DSV3_TP8 + ".json")
    p36 = put(bundled, "triton_3_6_0", DSV3_TP8 + ".json")
    (bundled / "configs" / "triton_3_8_0").mkdir()
    args = ["deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200", "--engine-configs", str(bundled)]
    t = resolve_json(*args, "--triton-version", "3.5.1")["tables"][0]
    assert (t["engine_loads"], t["engine_loads_via"], t["triton_folder"]) == (p36, "fallback", "triton_3_6_0")
    assert t["engine_loads"] == sglang_loads(str(bundled), "3.5.1", 257, 256, "NVIDIA H200", "fp8_w8a8",
                                             [128, 128])[0]
    assert "fallback folder triton_3_6_0" in t["warnings"][0]
    t = resolve_json(*args, "--triton-version", "3.2.0")["tables"][0]
    assert (t["engine_loads"], t["engine_loads_via"]) == (p32, "exact")
    down = t["down"]
    assert (down["engine_loads"], down["engine_loads_via"]) == (p32, "up table")  # no _down: GEMM2 reuses up
    pd = put(bundled, "triton_3_2_0", DSV3_TP8 + "_down.json")
    down = resolve_json(*args, "--triton-version", "3.2.0")["tables"][0]["down"]
    assert (down["engine_loads"], down["engine_loads_via"]) == (pd, "exact")


def test_env_dir_hides_bundled_tables(tmp_path):
    bundled, mine = tmp_path / "sgl", tmp_path / "mine"
    put(bundled, "triton_3_8_0", DSV3_TP8 + ".json")
    (mine / "configs").mkdir(parents=True)
    d = resolve_json("deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200", "--engine-configs", str(bundled),
                     env={"SGLANG_MOE_CONFIG_DIR": str(mine)})
    t = d["tables"][0]
    assert t["engine_loads"] is None and t["engine_root"] == str(mine)
    assert t["found"] is None or t["found"].startswith(str(mine))  # the bundled copy is not what SGLang reads
    assert d["engine"]["warnings"] and "hides SGLang's bundled tables" in d["engine"]["warnings"][0]


def test_tuned_root_export_and_copy_hint(tmp_path):
    bundled, tuned = tmp_path / "sgl", tmp_path / "tuned"
    put(bundled, "triton_3_1_0", "other.json")
    path = put(tuned, "triton_3_8_0", DSV3_TP8 + ".json")
    t = resolve_json("deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200", "--engine-configs", str(bundled),
                     "--tuned-dir", str(tuned))["tables"][0]
    assert (t["found"], t["source"], t["engine_loads"]) == (path, "tuned", None)
    assert t["export"] == f"export SGLANG_MOE_CONFIG_DIR={tuned}"
    assert t["copy_bundled"] == f"cp -rn {bundled}/configs/. {tuned}/configs/"
    r = runner.invoke(app, ["resolve", "deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200", "--engine", ENG,
                            "--engine-configs", str(bundled), "--tuned-dir", str(tuned)],
                      env={"SGLANG_MOE_CONFIG_DIR": ""})
    assert r.exit_code == 0 and "copy them first" in r.stdout and "E=257" in r.stdout


def test_bad_triton_folder_warns(tmp_path):
    bundled = tmp_path / "sgl"
    put(bundled, "triton_3_x_0", "other.json")
    t = resolve_json("deepseek-v3", "--tp", "8", "--device-name", "NVIDIA H200",
                     "--engine-configs", str(bundled))["tables"][0]
    assert any("ValueError" in w for w in t["warnings"])


# ---- tables SGLang can load ----------------------------------------------------------------

def test_sglang_table_has_no_version_key_and_loads(tmp_path):
    root = tmp_path / "root"
    folder = root / "configs" / "triton_3_8_0"
    folder.mkdir(parents=True)
    t = TuningTable({1: KernelConfig(16, 64, 128, 1, 4, 3), 64: KernelConfig(32, 128, 128, 16, 4, 2)},
                    triton_version="3.8.0", engine="sglang", extras={64: {"USE_TMA": True}})
    write_table(folder / (DSV3_TP8 + "_down.json"), t)
    text = (folder / (DSV3_TP8 + "_down.json")).read_text()
    assert "triton_version" not in text and text.endswith("}\n")
    path, entries = sglang_loads(str(root), "3.8.0", 257, 256, "NVIDIA H200", "fp8_w8a8", [128, 128], down=True)
    assert path.endswith("_down.json") and sorted(entries) == [1, 64] and entries[64]["USE_TMA"] is True
    assert list(entries[64]) == list(CFG) + ["USE_TMA"]
    back = parse_table(text, "t", "sglang")
    assert back.entries == t.entries and back.extras == {64: {"USE_TMA": True}}
    with pytest.raises(TableError, match="crashes on"):
        parse_table(json.dumps({"triton_version": "3.8.0", "1": CFG}), "t", "sglang")
    vllm_text = TuningTable(t.entries, triton_version="3.8.0").to_json()
    assert vllm_text.startswith('{\n    "triton_version": "3.8.0"')  # vLLM's tables keep their key


# ---- default rule ----------------------------------------------------------------------------

def test_default_rule():
    p = get_profile(ENG)
    dflt = lambda M, E, dtype=None, block=None: default_config(M, E, 256, 7168, 9, dtype, block,  # noqa: E731
                                                               heuristic=p.heuristic).short()
    assert dflt(4, 257, "fp8_w8a8", [128, 128]) == dflt(4096, 257, "fp8_w8a8", [128, 128]) == "M64/N128/K128/G32/w4/s3"
    assert dflt(8, 16, "fp8_w8a8") == "M64/N128/K128/G1/w4/s4" and dflt(64, 16, "fp8_w8a8") == "M128/N256/K128/G32/w8/s4"
    assert dflt(8, 16) == "M16/N32/K64/G1/w4/s3" and dflt(17, 16, "int8_w8a8") == "M64/N64/K32/G8/w4/s3"
    d = resolve_json("deepseek-v3", "--tp", "8", "--ep", "--device-name", "NVIDIA H200", "--batch-size", "8")
    assert d["tables"][0]["entry"] == {"source": "default", "batch_key": None, "config": {
        "BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 32, "num_warps": 4,
        "num_stages": 3}}


# ---- verify / show / diff / staleness / matrix -------------------------------------------------

def test_verify_show_diff_understand_sglang_tables(tmp_path):
    a, b = tmp_path / "a" / "configs" / "triton_3_8_0", tmp_path / "b" / "configs" / "triton_3_8_0"
    for d, bn in ((a, 64), (b, 128)):
        d.mkdir(parents=True)
        write_table(d / (DSV3_TP8 + ".json"), TuningTable({1: KernelConfig(16, bn, 128, 1, 4, 3)}, engine="sglang"))
        (d / (DSV3_TP8 + "_down.json")).write_text(json.dumps({"1": {**CFG, "USE_TMA": True}}, indent=4) + "\n")
    r = runner.invoke(app, ["verify", str(a), "--strict"])
    assert (r.exit_code, r.stdout) == (0, f"ok   {DSV3_TP8}.json\nok   {DSV3_TP8}_down.json\n2 table(s), 0 with problems\n")
    (a / "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json").write_text(
        json.dumps({"triton_version": "3.8.0", "1": CFG}, indent=4) + "\n")
    r = runner.invoke(app, ["verify", str(a)])
    assert r.exit_code == 1 and "FAIL E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json: has a triton_version key" in r.stdout
    r = runner.invoke(app, ["show", str(a / (DSV3_TP8 + "_down.json"))])
    assert r.exit_code == 0 and "USE_TMA" in r.stdout and "engine=sglang GEMM2" in r.stdout and "triton=3.8.0" in r.stdout
    r = runner.invoke(app, ["diff", str(a / (DSV3_TP8 + ".json")), str(b / (DSV3_TP8 + ".json")), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["tables"][0]["batch_sizes"][0]["change"] == "changed"


def test_verify_stale_knows_the_triton_folder(tmp_path, monkeypatch):
    from moeplan.tables.staleness import Installation, stale_reasons

    for folder in ("triton_3_8_0", "triton_3_6_0"):
        d = tmp_path / "configs" / folder
        d.mkdir(parents=True)
        write_table(d / (DSV3_TP8 + ".json"), TuningTable({1: KernelConfig(16, 64, 128, 1, 4, 3)}, engine="sglang"))
        (d / (DSV3_TP8 + ".csv")).write_text(f"M,engine_profile\n1,{ENG}\n")
    inst = Installation("3.8.0", ENG)
    assert stale_reasons(tmp_path / "configs" / "triton_3_8_0" / (DSV3_TP8 + ".json"), inst) == []
    (why,) = stale_reasons(tmp_path / "configs" / "triton_3_6_0" / (DSV3_TP8 + ".json"), inst)
    assert why.startswith("in SGLang folder triton_3_6_0, installed Triton 3.8.0 reads triton_3_8_0 first")


def test_matrix_engine_sglang_names_sglang_files(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(f'models = ["deepseek-v3"]\ndevices = ["NVIDIA H200"]\nengine = "{ENG}"\n'
                 '[[layouts]]\ntp = 8\n[[layouts]]\ntp = 8\nep = true\n')
    r = runner.invoke(app, ["matrix", str(f), "--json"])
    assert r.exit_code == 0, r.output
    names = sorted(t["file_name"] for t in json.loads(r.stdout)["tables"])
    assert names == sorted([DSV3_TP8 + ".json",
                            "E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"])


# ---- kernel profile rules (pure: the search space and the launch plan) -------------------------

def test_sglang_space_refuses_bk_that_does_not_divide_the_block():
    from moeplan.engines.launch import ShapeInfo, plan_launch
    from moeplan.tune.space import SearchSpace, engine_space

    p, v = get_profile(ENG), get_profile("vllm-0.33")
    space = engine_space(p)
    assert len(space) == 1920 and {c.BLOCK_SIZE_M for c in space} == {16, 32, 64, 128, 256}
    shape = ShapeInfo(257, 256, 7168, 9, "fp8_w8a8", (128, 128))
    kept = SearchSpace.build(space, shape, 1 << 30, p)
    ks = {c.BLOCK_SIZE_K for c in kept.configs}
    assert ks == {64, 128}  # BK 256 would read one scale per 256 columns of a 128-column block: wrong
    assert kept.report.quant_block == 1920 // 3 and kept.report.clamped_k == 0
    assert SearchSpace.build(engine_space(v), shape, 1 << 30, v).report.clamped_k > 0  # vLLM clamps BK 256 to 128
    # swap: any SM 9.x for SGLang, exactly 9.0 for vLLM; align always runs (no naive tiles)
    assert p.uses_swap("fp8_w8a8", (9, 0), 32, 128) and p.uses_swap("fp8_w8a8", (9, 1), 32, 128)
    assert not v.uses_swap("fp8_w8a8", (9, 1), 32, 128) and not p.uses_swap("int8_w8a8", (9, 0), 32, 128)
    small = ShapeInfo(256, 256, 7168, 8, "fp8_w8a8", (128, 128))
    assert plan_launch(v, small, 1, 16, 64).naive and not plan_launch(p, small, 1, 16, 64).naive


# ---- tune --engine sglang-...: the pair SGLang loads (interpreter, deterministic cost model) ----------

SGL_SPACE = {"BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32, 64, 128], "BLOCK_SIZE_K": [64], "GROUP_SIZE_M": [1],
             "num_warps": [4], "num_stages": [3]}  # holds SGLang's default at M <= E: {16, 32, 64, G1}


@pytest.mark.interpreter
def test_tune_writes_the_pair_sglang_loads(tiny_model, tmp_path, monkeypatch):
    import pandas as pd
    import triton

    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")  # GEMM2's optimum (BN 128) differs from the layer's (BN 64)
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
    space, out = tmp_path / "space.json", tmp_path / "o"
    space.write_text(json.dumps(SGL_SPACE))
    args = ["tune", str(tiny_model), "--engine", ENG, "--interpret", "--batch-sizes", "2", "--search-space",
            str(space), "--out", str(out), "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    folder = out / "configs" / sglang.version_folder(triton.__version__)  # the Triton that was measured
    up, down = "E=4,N=32,device_name=cpu_interpreter.json", "E=4,N=32,device_name=cpu_interpreter_down.json"
    assert (folder / up).is_file() and (folder / down).is_file()
    for name in (up, down):  # no triton_version key (SGLang int()s every key)
        assert list(json.loads((folder / name).read_text())) == ["2"]
    p_up, e_up = sglang_loads(str(out), triton.__version__, 4, 32, "cpu_interpreter")
    p_dn, e_dn = sglang_loads(str(out), triton.__version__, 4, 32, "cpu_interpreter", down=True)
    assert (p_up, p_dn) == (str(folder / up), str(folder / down))
    # the up entry beat SGLang's default {16,32,64,G1} (BN 64), GEMM2's own entry beat the up entry
    assert e_up[2] == {**CFG, "BLOCK_SIZE_K": 64}
    assert e_dn[2] == {**CFG, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64}  # BLOCK_SIZE_M tied to the up entry
    df = pd.read_csv(folder / (up[:-5] + ".csv"))
    dn = df[df.phase.str.startswith("down_")]
    assert set(dn.phase) == {"down_screen", "down_confirm", "down_check", "down_ab"}
    assert set(dn.table) == {down} and set(df[~df.phase.str.startswith("down_")].table) == {up}
    won = dn[dn.is_winner & (dn.phase == "down_ab")].iloc[0]
    assert won.config == KernelConfig(16, 128, 64, 1, 4, 3).short() and won.decision.startswith("winner: margin")
    flat = " ".join(r.output.split())
    assert "0 of 1 down entries repeat the up entry, 1 beat it in the A/B" in flat
    assert f"export SGLANG_MOE_CONFIG_DIR={out}" in flat
    # resolve finds both where tune wrote them
    t = resolve_json(str(tiny_model), "--device-name", "cpu_interpreter", "--tuned-dir", str(out),
                     "--triton-version", triton.__version__)["tables"][0]
    assert (t["found"], t["source"], t["down"]["found"]) == (str(folder / up), "tuned", str(folder / down))
    # interrupted inside the down search: the resumed run measures the rest and writes the same pair
    pair = {n: (folder / n).read_bytes() for n in (up, down)}
    records = next(folder.glob(".moeplan-tune/*/records.jsonl"))
    lines = records.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if json.loads(line)["phase"] == "down_confirm")
    records.write_text("\n".join(lines[:cut + 1]) + "\n")
    for n in (up, down):
        (folder / n).unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert pair == {n: (folder / n).read_bytes() for n in (up, down)}
    assert len(records.read_text().splitlines()) == len(lines)  # only what was lost was measured again
    # the same command again: the pair is up to date, nothing is measured or written
    before = {n: (folder / n).stat().st_mtime_ns for n in (up, down)}
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "up to date" in " ".join(r.output.split()), r.output
    assert before == {n: (folder / n).stat().st_mtime_ns for n in (up, down)}
    # verify reads both under SGLang's rules (the folder of the pair)
    r = runner.invoke(app, ["verify", str(folder), "--strict"])
    assert r.exit_code == 0, r.output
    assert up in r.output and down in r.output


def test_tune_refuses_a_down_table_without_its_up_table(tiny_model, tmp_path):
    import triton

    folder = tmp_path / "o" / "configs" / sglang.version_folder(triton.__version__)
    folder.mkdir(parents=True)
    (folder / "E=4,N=32,device_name=cpu_interpreter_down.json").write_text(json.dumps({"2": CFG}))
    r = runner.invoke(app, ["tune", str(tiny_model), "--engine", ENG, "--interpret", "--batch-sizes", "2",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "exists without its up table" in r.stderr and "--force" in r.stderr


def test_python_api_engine():
    import moeplan

    res = moeplan.resolve("deepseek-v3", tp=8, device_name="NVIDIA H200", engine=ENG)
    assert [t.file_name for t in res.tables()] == [DSV3_TP8 + ".json"]
    d = moeplan.describe(res, env={})
    assert d["engine"]["profile"] == ENG and d["tables"][0]["down"]["tuning_file"] == DSV3_TP8 + "_down.json"
    assert moeplan.resolve("deepseek-v3", tp=8, device_name="NVIDIA H200").tables()[0].E == 256


@pytest.mark.interpreter
def test_tune_matrix_for_sglang_then_nothing_to_do(tiny_model, tmp_path, monkeypatch):
    import triton

    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
    monkeypatch.setattr("moeplan.engines.sglang.engine_config_dir", lambda *a: None)
    space, out, m = tmp_path / "space.json", tmp_path / "o", tmp_path / "m.toml"
    space.write_text(json.dumps(SGL_SPACE))
    m.write_text(f'models = ["{tiny_model.parent}"]\ndevices = ["cpu_interpreter"]\nbatch_sizes = [2]\n'
                 f'engine = "{ENG}"\n')
    args = ["tune", "--matrix", str(m), "--interpret", "--search-space", str(space), "--out", str(out), "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    folder = out / "configs" / sglang.version_folder(triton.__version__)
    assert sorted(p.name for p in folder.glob("*.json")) == ["E=4,N=32,device_name=cpu_interpreter.json",
                                                             "E=4,N=32,device_name=cpu_interpreter_down.json"]
    r = runner.invoke(app, ["matrix", str(m), "--tuned-dir", str(out), "--json"])
    assert r.exit_code == 0 and [t["status"] for t in json.loads(r.stdout)["tables"]] == ["present"], r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "nothing to tune" in r.output, r.output


def test_serving_hint_per_release(tmp_path):
    from moeplan.tables.sglang_lookup import serving_hint

    bundled = tmp_path / "pkg"
    (bundled / "configs").mkdir(parents=True)
    new = serving_hint(str(tmp_path / "o"), ENG, str(bundled))
    assert new[1] == f"  export SGLANG_MOE_CONFIG_DIR={tmp_path / 'o'}"
    assert new[2].startswith(f"  cp -rn {bundled}/configs/. {tmp_path / 'o'}/configs/")  # the variable hides them
    old = serving_hint(str(tmp_path / "o"), "sglang-0.4.10", str(bundled))  # 0.4 has no variable
    assert old[1] == f"  cp -rn {tmp_path / 'o'}/configs/. {bundled}/configs/" and "export" not in " ".join(old)
    assert "installed" in serving_hint(str(tmp_path / "o"), ENG, None)[2]


@pytest.mark.interpreter
def test_the_builtin_space_holds_the_default_its_domains_lack(tiny_model, tmp_path, monkeypatch):
    """SGLang's default above M = E (BK 32, G 8) lies outside the tuning domains it shares with
    vLLM: without --search-space the default joins the space, so the evidence rule can fall back
    to it; a user's own space that lacks it stays as given ("space excludes default")."""
    import pandas as pd
    import triton
    from moeplan.engines.sglang import default_config as sgl_default
    from moeplan.tune.space import parse_search_space

    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
    small = {**SGL_SPACE, "BLOCK_SIZE_M": [16, 64], "BLOCK_SIZE_N": [64]}  # no BLOCK_SIZE_K 32, no G 8
    monkeypatch.setattr("moeplan.tune.space.engine_space", lambda profile: parse_search_space(json.dumps(small), "domains"))
    d = sgl_default(8, 4, 32, 64, 2)  # M = 8 > E = 4
    assert (d.BLOCK_SIZE_K, d.GROUP_SIZE_M) == (32, 8)
    folder = lambda out: out / "configs" / sglang.version_folder(triton.__version__)  # noqa: E731
    decisions = {}
    for name, extra in (("builtin", []), ("user", ["--search-space", str(tmp_path / "space.json")])):
        (tmp_path / "space.json").write_text(json.dumps(small))
        out = tmp_path / name
        r = runner.invoke(app, ["tune", str(tiny_model), "--engine", ENG, "--interpret", "--batch-sizes", "8",
                                "--out", str(out), "--quiet", *extra])
        assert r.exit_code == 0, r.output
        df = pd.read_csv(folder(out) / "E=4,N=32,device_name=cpu_interpreter.csv")
        up = df[~df.phase.str.startswith("down_")]
        decisions[name] = up.decision.dropna().iloc[0]
        assert d.short() in set(up[up.phase == "confirm"].config)  # the A/B's other side, either way
    assert not decisions["builtin"].startswith("space excludes default"), decisions
    assert decisions["user"].startswith("space excludes default"), decisions
