"""`moeplan matrix`, matrix files and `verify --stale` through the real app: expansion and dedup,
invalid combinations, present / stale / missing, the GitHub output, shards, one-line errors."""

import json
import subprocess
import sys
from importlib import metadata

import pytest
from typer.testing import CliRunner

from moeplan.fleet import matrix as mx
from moeplan.cli.app import app
from moeplan.engines.registry import PROFILES, choose_profile

runner = CliRunner()
H100 = "NVIDIA H100 80GB HBM3"
MIXTRAL_TP2 = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
MIXTRAL_TP8 = "E=8,N=1792,device_name=NVIDIA_H100_80GB_HBM3.json"
DSV3_TP8 = "E=256,N=256,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
DSV3_EP8 = "E=32,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json"
TABLE = ('{\n    "triton_version": "%s",\n    "1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, '
         '"GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}\n}\n')


def run(*args):
    return runner.invoke(app, list(args), env={"VLLM_TUNED_CONFIG_FOLDER": ""})


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    monkeypatch.setattr("moeplan.engines.vllm.engine_config_dir", lambda: None)


@pytest.fixture
def tiny(tmp_path):
    """A model whose TP=1 table is Mixtral-8x7B's TP=2 table (E=8, N=7168, bf16)."""
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 8,
        "num_experts_per_tok": 2, "hidden_size": 1024, "intermediate_size": 7168, "num_hidden_layers": 2}))
    return str(d)


def write(tmp_path, text, name="m.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def matrix_json(*args):
    r = run("matrix", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_tables_shared_across_models_and_layouts_are_one_job(tmp_path, tiny):
    f = write(tmp_path, f'models = ["mixtral-8x7b", "{tiny}"]\ndevices = ["{H100}"]\n'
                        '[[layouts]]\ntp = 1\n[[layouts]]\ntp = 2\n[[layouts]]\ntp = 8\n')
    (tmp_path / "none").mkdir()
    d = matrix_json(f, "--tuned-dir", str(tmp_path / "none"))
    names = [t["file_name"] for t in d["tables"]]
    assert names == sorted(names) and len(names) == len(set(names))
    shared = next(t for t in d["tables"] if t["file_name"] == MIXTRAL_TP2)
    assert shared["used_by"] == [
        {"model": "mixtral-8x7b", "layout": {"tp": 2, "dp": 1, "ep": False, "placement": "linear"}, "dtype": "auto"},
        {"model": tiny, "layout": {"tp": 1, "dp": 1, "ep": False, "placement": "linear"}, "dtype": "auto"}]
    assert shared["status"] == "missing" and shared["found"] is None and shared["device"] == H100
    assert shared["command"] == (f"moeplan tune mixtral-8x7b --tp 2 --dtype auto --device-name '{H100}' "
                                 f"--out {tmp_path / 'none'}")
    assert set(d["tables"][0]) == {"file_name", "device", "status", "found", "used_by", "command"}
    assert len(names) == 5  # mixtral at tp 1, 2 (shared with tiny tp 1), 8; tiny at tp 2 (N=3584), 8 (N=896)
    assert d["invalid"] == []


def test_invalid_combinations_are_reported_not_fatal(tmp_path):
    f = write(tmp_path, json.dumps({"models": ["deepseek-v3"], "devices": [H100],
                                    "layouts": [{"tp": 8}, {"tp": 32}, {"tp": 8, "ep": True}]}), "m.json")
    d = matrix_json(f)
    assert [t["file_name"] for t in d["tables"]] == [DSV3_TP8, DSV3_EP8]
    assert len(d["invalid"]) == 1
    bad = d["invalid"][0]
    assert (bad["model"], bad["layout"]["tp"], bad["dtype"], bad["device"]) == ("deepseek-v3", 32, "auto", H100)
    assert "64" in bad["reason"] and "128" in bad["reason"]  # N=64 per shard against the 128-wide block


def _current(folder, name, triton=None, profile=None, csv=True):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(TABLE % (triton or metadata.version("triton")))
    if csv:
        cols = "batch_size,median_us" + (",engine_profile" if profile != "none" else "")
        row = "1,10.0" + (f",{profile or choose_profile(None).profile.name}" if profile != "none" else "")
        (folder / (name[:-5] + ".csv")).write_text(f"{cols}\n{row}\n")


def test_present_stale_missing_and_the_engine_folder(tmp_path, monkeypatch):
    tuned = tmp_path / "tuned"
    _current(tuned, MIXTRAL_TP2)  # current in every respect
    _current(tuned, MIXTRAL_TP8, triton="2.0.0")  # another Triton
    _current(tuned, DSV3_TP8, profile=next(p for p in PROFILES if p != choose_profile(None).profile.name))
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / DSV3_EP8).write_text(TABLE % "1.0")  # the engine's own table: never judged
    monkeypatch.setattr("moeplan.engines.vllm.engine_config_dir", lambda: str(engine))
    f = write(tmp_path, f'models = ["mixtral-8x7b", "deepseek-v3"]\ndevices = ["{H100}"]\n'
                        '[[layouts]]\ntp = 2\n[[layouts]]\ntp = 8\n[[layouts]]\ntp = 8\nep = true\n')
    d = matrix_json(f, "--tuned-dir", str(tuned))
    status = {t["file_name"]: (t["status"], t["found"]) for t in d["tables"]}
    assert status[MIXTRAL_TP2] == ("present", str(tuned / MIXTRAL_TP2))
    assert status[MIXTRAL_TP8] == ("stale", str(tuned / MIXTRAL_TP8))
    assert status[DSV3_TP8] == ("stale", str(tuned / DSV3_TP8))
    assert status[DSV3_EP8] == ("present", str(engine / DSV3_EP8))
    assert {s for s, _ in status.values()} == {"present", "stale", "missing"}
    # --github: the missing and the stale tables (a Triton upgrade re-tunes); --missing-only: the missing
    gh = json.loads(run("matrix", f, "--tuned-dir", str(tuned), "--github").stdout)
    todo = sorted(n for n, (s, _) in status.items() if s in ("missing", "stale"))
    assert [e["table"] for e in gh["include"]] == todo
    assert all(e["device"] == H100 for e in gh["include"])
    assert all(e["force"] == (status[e["table"]][0] == "stale") for e in gh["include"])
    order = sorted(status)
    assert [e["shard"] for e in gh["include"]] == [f"{order.index(n) + 1}/{len(order)}" for n in todo]
    gh = json.loads(run("matrix", f, "--tuned-dir", str(tuned), "--github", "--missing-only").stdout)
    missing = sorted(n for n, (s, _) in status.items() if s == "missing")
    assert [e["table"] for e in gh["include"]] == missing and len(missing) < len(todo)


def test_the_matrix_engine_is_what_tables_are_judged_against(tmp_path):
    tuned = tmp_path / "tuned"
    current = choose_profile(None).profile.name
    older = next(p for p in PROFILES if p != current)
    _current(tuned, MIXTRAL_TP2, profile=older)
    for engine, status in ((older, "present"), (current, "stale")):
        f = write(tmp_path, f'models = ["mixtral-8x7b"]\ndevices = ["{H100}"]\nengine = "{engine}"\n'
                            '[[layouts]]\ntp = 2\n')
        (t,) = matrix_json(f, "--tuned-dir", str(tuned))["tables"]
        assert t["status"] == status
        assert t["command"].endswith(f"--engine {engine} --out {tuned}")


def test_verify_stale_flags_each_reason_and_fails(tmp_path):
    tuned = tmp_path / "tuned"
    _current(tuned, MIXTRAL_TP2)
    r = run("verify", str(tuned), "--stale")
    assert (r.exit_code, r.stdout) == (0, f"ok   {MIXTRAL_TP2}\n1 table(s), 0 with problems\n")
    _current(tuned, MIXTRAL_TP8, triton="2.0.0", profile="none")
    _current(tuned, DSV3_TP8, csv=False)
    r = run("verify", str(tuned), "--stale")
    assert r.exit_code == 1
    installed, profile = metadata.version("triton"), choose_profile(None).profile.name
    assert r.stdout.splitlines() == [
        f"FAIL {DSV3_TP8}: stale: no measurements CSV ({DSV3_TP8[:-5]}.csv) beside it",
        f"FAIL {MIXTRAL_TP8}: stale: tuned with Triton 2.0.0, installed {installed}",
        f"FAIL {MIXTRAL_TP8}: stale: engine profile unknown (the CSV has no engine_profile column), current {profile}",
        f"ok   {MIXTRAL_TP2}",
        "3 table(s), 2 with problems"]
    assert run("verify", str(tuned)).exit_code == 0  # without --stale only the format counts


def test_shards_are_disjoint_complete_and_stable(tmp_path):
    f = write(tmp_path, f'models = ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b"]\n'
                        f'devices = ["{H100}", "NVIDIA H200"]\n[[layouts]]\ntp = 2\n[[layouts]]\ntp = 8\nep = true\n')
    every = [t["file_name"] for t in matrix_json(f)["tables"]]
    assert len(every) == 12
    for n in (1, 3, 5, 12, 13):
        parts = [[t["file_name"] for t in matrix_json(f, "--shard", f"{i}/{n}")["tables"]] for i in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == sorted(every)  # complete and disjoint
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
        assert parts == [[t["file_name"] for t in matrix_json(f, "--shard", f"{i}/{n}")["tables"]]
                         for i in range(1, n + 1)]  # stable


@pytest.mark.parametrize("text, needle", [
    ("models = [", "not valid TOML"),
    ('models = ["mixtral-8x7b"]', "needs 'devices'"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\ngpus = 2', "unknown key(s) gpus; valid: models, layouts"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\ndtypes = ["int3"]', "dtype 'int3' is unknown; valid: auto"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\n[[layouts]]\ntp = 0', "layouts[0].tp 0 is out of range; valid: 1..1024"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\n[[layouts]]\nep = "yes"', "layouts[0].ep = 'yes' must be true"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\nengine = "vllm-9"', "engine 'vllm-9' is not a known engine"),
    ('models = ["mixtral-8x7b"]\ndevices = ["x"]\nbatch_sizes = [0]', "batch_sizes entry 0 is out of range; valid: 1..65536"),
    ('models = ["no-such-model"]\ndevices = ["x"]', "no-such-model"),
])
def test_bad_matrix_files_get_one_line_and_exit_2(tmp_path, text, needle):
    r = run("matrix", write(tmp_path, text))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("moeplan: error: ") and needle in r.stderr, r.stderr


def test_bad_json_unreadable_file_bad_shard_and_two_outputs(tmp_path):
    for args, needle in [
        ((write(tmp_path, "{", "m.json"),), "not valid JSON"),
        ((str(tmp_path / "nope.toml"),), f"cannot read matrix file '{tmp_path / 'nope.toml'}'"),
        ((write(tmp_path, f'models = ["mixtral-8x7b"]\ndevices = ["{H100}"]'), "--shard", "3/2"),
         "--shard '3/2' is invalid; expected I/N with 1 <= I <= N"),
        ((write(tmp_path, f'models = ["mixtral-8x7b"]\ndevices = ["{H100}"]'), "--shard", "x"), "--shard 'x'"),
        ((write(tmp_path, f'models = ["mixtral-8x7b"]\ndevices = ["{H100}"]'), "--json", "--github"), "pick one"),
    ]:
        r = run("matrix", *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)


def test_human_output_names_counts_and_invalid_lines(tmp_path):
    f = write(tmp_path, f'models = ["deepseek-v3"]\ndevices = ["{H100}"]\n[[layouts]]\ntp = 32\n[[layouts]]\ntp = 8\n')
    r = run("matrix", f, "--tuned-dir", str(tmp_path))
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].strip() == f"{f}: 1 table(s) (0 present, 0 stale, 1 missing)"
    assert DSV3_TP8 in r.stdout
    assert r.stdout.splitlines()[-1].startswith("invalid: deepseek-v3 tp=32 auto on NVIDIA H100 80GB HBM3: ")


def test_parse_shard_and_matrix_library():
    assert mx.parse_shard("2/3") == (2, 3)
    m = mx.parse_matrix('{"models": ["mixtral-8x7b"], "devices": ["NVIDIA H200"]}')
    assert m.layouts == (mx.LayoutEntry(),) and m.dtypes == ("auto",)


def test_matrix_of_36_presets_6_layouts_3_dtypes_is_fast_and_no_fleet_command_imports_torch(tmp_path):
    code = r"""
import json, sys, time
from pathlib import Path
from typer.testing import CliRunner
from moeplan.cli.app import app
from moeplan.base.paths import presets_dir
aliases = sorted(p.stem for p in presets_dir().glob("*.json"))
layouts = [{"tp": 1}, {"tp": 2}, {"tp": 4}, {"tp": 8}, {"tp": 8, "ep": True}, {"tp": 4, "dp": 4, "ep": True}]
f = Path(sys.argv[1])
f.write_text(json.dumps({"models": aliases, "layouts": layouts, "dtypes": ["auto", "bf16", "fp8_w8a8"],
                         "devices": ["NVIDIA H100 80GB HBM3"]}))
t0 = time.process_time()  # CPU seconds: a busy or parallel run must not fail it
r = CliRunner().invoke(app, ["matrix", str(f), "--json"])
dt = time.process_time() - t0
d = json.loads(r.stdout)
tuned = str(presets_dir().parent / "tuned")  # diff and verify --stale stay free of torch and triton too
assert CliRunner().invoke(app, ["diff", tuned, tuned]).exit_code == 0
assert CliRunner().invoke(app, ["verify", tuned, "--stale"]).exit_code in (0, 1)
assert "torch" not in sys.modules and "triton" not in sys.modules
print(len(aliases), len(d["tables"]), len(d["invalid"]), round(dt, 3))
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    n_presets, n_tables, n_invalid, seconds = r.stdout.split()
    assert n_presets == "36" and int(n_tables) > 100 and int(n_invalid) > 0
    assert float(seconds) < 1.0


def test_sglang_matrix_looks_in_sglang_roots(tmp_path, tiny, monkeypatch):
    # an SGLang matrix: names in SGLang's grammar, tables in <dir>/configs/triton_<installed>/, a
    # tuned table without its _down pair is stale (GEMM2 would run the up entries)
    monkeypatch.setattr("moeplan.engines.sglang.engine_config_dir", lambda *a: None)
    from moeplan.engines import sglang

    f = write(tmp_path, f'models = ["{tiny}"]\ndevices = ["{H100}"]\nengine = "sglang-0.5.23"\n'
                        '[[layouts]]\ntp = 1\n[[layouts]]\ntp = 2\n')
    tv = metadata.version("triton")
    folder = tmp_path / "out" / "configs" / sglang.version_folder(tv)
    folder.mkdir(parents=True)
    entry = '{"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4, ' \
            '"num_stages": 3}}\n'
    csv = "table,engine_profile,batch_size,phase,median_us,is_winner\nx,sglang-0.5.23,1,confirm,1.0,True\n"
    tp1, tp2 = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3", "E=8,N=3584,device_name=NVIDIA_H100_80GB_HBM3"
    for name in (tp1, tp2):
        (folder / f"{name}.json").write_text(entry)
        (folder / f"{name}.csv").write_text(csv)
    (folder / f"{tp1}_down.json").write_text(entry)
    d = matrix_json(f, "--tuned-dir", str(tmp_path / "out"))
    st = {t["file_name"]: t for t in d["tables"]}
    assert st[tp1 + ".json"]["status"] == "present" and st[tp1 + ".json"]["found"] == str(folder / f"{tp1}.json")
    assert st[tp2 + ".json"]["status"] == "stale"
    assert "--engine sglang-0.5.23" in st[tp1 + ".json"]["command"]
    r = run("matrix", f, "--tuned-dir", str(tmp_path / "out"))
    assert r.exit_code == 0 and f"no {tp2}_down.json beside it" in " ".join(r.output.split()), r.output
