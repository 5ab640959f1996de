"""What a user meets (issue 21): output readable at 80/100/120 columns, `moeplan export`, the KV
cache in `plan`, and the fixes found trying moeplan as a new user would. Everything through the app."""

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app
from moeplan.base import paths

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
SHIPPED = paths.shipped_tables_dir()
DSV3_EP8_H200 = "E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"
DSV3_TP8_H200 = "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"
TABLE_RE = re.compile(r"E=\d+,N=\d+,device_name=[A-Za-z0-9_.()+-]+(?:,dtype=\w+)?(?:,block_shape=\[\d+,\d+\])?\.json")


def run(*args, columns=None, env=None):
    e = {"COLUMNS": str(columns)} if columns else {}
    e.update(env or {})
    return CliRunner().invoke(app, list(args), env=e)


@pytest.fixture
def bare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLLM_TUNED_CONFIG_FOLDER", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    return tmp_path


def assert_readable(out: str, width: int, names=()):
    """No cut cell anywhere; table lines within the width; every file name whole."""
    assert "…" not in out, out
    for line in out.splitlines():
        if len(line) > width:  # only a line printed whole on purpose: it holds a name or a command
            assert TABLE_RE.search(line) or "moeplan tune" in line or "/" in line, (width, line)
    for n in names:
        assert n in out, (n, out)


# ------------------------------------------------------------------ 1. readable at 80/100/120


@pytest.mark.parametrize("width", [80, 100, 120])
def test_plan_fits_the_width_and_keeps_numbers_whole(bare, width):
    args = ["plan", "deepseek-v3", "--gpus", "8", "--device-name", H200, "--tuned-dir", str(SHIPPED)]
    r = run(*args, columns=width)
    assert r.exit_code == 0, r.output
    d = json.loads(run(*args, "--json").stdout)
    assert_readable(r.stdout, width, [DSV3_TP8_H200, DSV3_EP8_H200])
    rows = [l.split() for l in r.stdout.splitlines() if re.match(r"^\s*\d+\s+\d+\s+\d+\s", l)]
    assert len(rows) == len(d["layouts"])
    for row, lay in zip(rows, d["layouts"]):  # the ranked order, and each number as --json has it
        assert row[1:3] == [str(lay["tp"]), str(lay["dp"])]
        assert f"{lay['moe_us']['1'] / 1000:.2f}" in row and f"{lay['moe_us']['1024'] / 1000:.2f}" in row
        assert f"{lay['memory_gib']['total']:.1f}" in row
    if width == 80:
        assert "--wide shows every column" in r.stdout


def test_plan_wide_has_every_column(bare):
    r = run("plan", "deepseek-v3", "--gpus", "8", "--device-name", H200, "--wide", columns=80)
    assert r.exit_code == 0 and "…" not in r.stdout
    for h in ("experts", "other", "free", "source", "comm", "B/tok", "M=256", "round_robin"):
        assert h in r.stdout, h
    assert "not shown at this width" not in r.stdout


@pytest.mark.parametrize("width", [80, 120])
def test_resolve_at_width_names_the_moe_tp_and_ranges(bare, width):
    r = run("resolve", "deepseek-v3", "--tp", "8", "--dp", "2", "--ep", "--placement", "round_robin",
            "--device-name", H200, "--tuned-dir", str(SHIPPED), columns=width)
    assert r.exit_code == 0, r.output
    name = "E=16,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"
    assert_readable(r.stdout, width, [name])
    assert "MoE TP" in r.stdout and "the MoE TP size is 1" in r.stdout and "attention still" in r.stdout
    assert "0-240 step 16" in r.stdout  # device 0's 16 experts, every 16th: whole, never cut


def test_resolve_missing_table_prints_the_tune_command_that_makes_it(bare):
    r = run("resolve", "qwen3-30b-a3b", "--tp", "2", "--ep", "--device-name", H200, "--engine", "vllm-0.33",
            "--tuned-dir", str(bare), columns=80)
    assert r.exit_code == 0, r.output
    line = next(l.strip() for l in r.stdout.splitlines() if l.strip().startswith("moeplan tune "))
    d = json.loads(run("resolve", "qwen3-30b-a3b", "--tp", "2", "--ep", "--device-name", H200, "--json",
                       "--tuned-dir", str(bare)).stdout)
    assert d["tables"][0]["command"] == line
    # the command names the same table: run its options through `resolve`
    args = shlex.split(line)[2:]
    again = json.loads(run("resolve", *args, "--json", "--tuned-dir", str(bare)).stdout)
    assert [t["tuning_file"] for t in again["tables"]] == [t["tuning_file"] for t in d["tables"]]


@pytest.mark.parametrize("width", [80, 120])
def test_show_at_width(bare, width):
    p = SHIPPED / DSV3_TP8_H200
    r = run("show", str(p), columns=width)
    assert r.exit_code == 0, r.output
    assert_readable(r.stdout, width, [DSV3_TP8_H200])
    table = json.loads(p.read_text())
    for M, cfg in table.items():
        if M == "triton_version":
            continue
        row = next(l.split() for l in r.stdout.splitlines() if l.split()[:1] == [M])
        assert row[1:] == [str(v) for v in cfg.values()]
    assert ("BM = BLOCK_SIZE_M" in r.stdout) == (width < 90)


@pytest.mark.parametrize("width", [80, 120])
def test_matrix_at_width_keeps_file_names_whole(bare, width):
    f = bare / "fleet.toml"
    f.write_text(f'models = ["deepseek-v3", "qwen3-30b-a3b"]\ndevices = ["{H200}", "{H100}"]\n'
                 '[[layouts]]\ntp = 8\n[[layouts]]\ntp = 8\nep = true\n')
    r = run("matrix", str(f), "--tuned-dir", str(SHIPPED), columns=width)
    assert r.exit_code == 0, r.output
    names = [t["file_name"] for t in json.loads(run("matrix", str(f), "--tuned-dir", str(SHIPPED),
                                                    "--json").stdout)["tables"]]
    assert len(names) == 8
    assert_readable(r.stdout, width, names)
    wide = run("matrix", str(f), "--tuned-dir", str(SHIPPED), "--wide", columns=80)
    assert wide.exit_code == 0 and "…" not in wide.stdout and all(n in wide.stdout for n in names)


def test_diff_at_80_columns(bare):
    a, b = bare / "a", bare / "b"
    a.mkdir(), b.mkdir()
    text = (SHIPPED / DSV3_TP8_H200).read_text()
    (a / DSV3_TP8_H200).write_text(text)
    t = json.loads(text)
    t["8"].update(BLOCK_SIZE_N=256, BLOCK_SIZE_K=64, num_warps=8, num_stages=5)
    (b / DSV3_TP8_H200).write_text(json.dumps(t, indent=4) + "\n")
    r = run("diff", str(a), str(b), columns=80)
    assert r.exit_code == 1
    assert_readable(r.stdout, 80, [DSV3_TP8_H200])
    assert all(len(l) <= 80 for l in r.stdout.splitlines() if DSV3_TP8_H200 not in l)
    assert r.stdout.splitlines()[1].startswith("  1 of ")
    wide = run("diff", str(a), str(b), "--wide", columns=80)
    assert wide.stdout.splitlines()[0].startswith(DSV3_TP8_H200 + ": 1 of ")


# ------------------------------------------------------------------ 2. export


def test_export_layout_copies_names_missing_and_prints_the_engine_lines(bare):
    to = bare / "out"
    r = run("export", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H200, "--tuned-dir", str(SHIPPED),
            "--to", str(to), columns=80)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in to.iterdir()) == [DSV3_EP8_H200]
    assert (to / DSV3_EP8_H200).read_bytes() == (SHIPPED / DSV3_EP8_H200).read_bytes()
    assert f"export VLLM_TUNED_CONFIG_FOLDER={to}" in r.stdout
    assert (f"VLLM_TUNED_CONFIG_FOLDER={to} vllm serve deepseek-ai/DeepSeek-V3 --tensor-parallel-size 8 "
            "--enable-expert-parallel") in r.stdout
    again = json.loads(run("export", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H200, "--tuned-dir",
                           str(SHIPPED), "--to", str(to), "--json").stdout)
    assert [c["action"] for c in again["copied"]] == ["unchanged"] and again["missing"] == []
    # a table nobody tuned: exit 1, its tune command, nothing copied for it
    r = run("export", "qwen3-30b-a3b", "--tp", "2", "--dp", "2", "--ep", "--device-name", H200,
            "--tuned-dir", str(SHIPPED), "--to", str(bare / "out2"), "--json")
    d = json.loads(r.stdout)
    assert r.exit_code == 1 and d["copied"] == [] and not (bare / "out2").exists()
    assert d["missing"][0]["command"].startswith("moeplan tune qwen3-30b-a3b --tp 2 --dp 2 --ep ")
    assert "--data-parallel-size 2 --enable-expert-parallel" in d["serve"][0]


def test_export_refuses_to_overwrite_a_different_file_without_force(bare):
    to = bare / "out"
    to.mkdir()
    (to / DSV3_EP8_H200).write_text("{}\n")
    args = ["export", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H200, "--tuned-dir", str(SHIPPED),
            "--to", str(to)]
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("moeplan: error: --to ") and "--force" in r.stderr and len(r.stderr.splitlines()) == 1
    assert (to / DSV3_EP8_H200).read_text() == "{}\n"
    r = run(*args, "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["copied"][0]["action"] == "replaced"
    assert (to / DSV3_EP8_H200).read_bytes() == (SHIPPED / DSV3_EP8_H200).read_bytes()
    assert sorted(p.name for p in to.iterdir()) == [DSV3_EP8_H200]  # no temporary file left


def test_export_matrix(bare):
    f = bare / "fleet.toml"
    f.write_text(f'models = ["deepseek-v3"]\ndevices = ["{H200}"]\n[[layouts]]\ntp = 8\n[[layouts]]\ntp = 8\nep = true\n')
    d = json.loads(run("export", "--matrix", str(f), "--to", str(bare / "o"), "--tuned-dir", str(SHIPPED),
                       "--json").stdout)
    assert sorted(c["file_name"] for c in d["copied"]) == sorted([DSV3_TP8_H200, DSV3_EP8_H200])
    assert len(d["serve"]) == 2 and any(s.endswith("--enable-expert-parallel") for s in d["serve"])
    r = run("export", "--to", str(bare / "o"))
    assert r.exit_code == 2 and "MODEL" in r.stderr and "--matrix" in r.stderr


# ------------------------------------------------------------------ 3. KV cache


def test_kv_bytes_per_token_match_published_figures():
    from moeplan.model.load import load_model
    from moeplan.planner.kvcache import gqa_bytes_per_token, kv_per_token

    # "Insights into DeepSeek-V3" (ISCA 2025, arXiv:2505.09343), Table 1, KV cache per token at bf16:
    # DeepSeek-V3 (MLA) 70.272 KB, Qwen-2.5 72B (GQA) 327.680 KB, LLaMA-3.1 405B (GQA) 516.096 KB.
    assert kv_per_token(load_model("deepseek-v3"), 8, "bfloat16", "auto")[0] == 70_272  # replicated over TP
    assert gqa_bytes_per_token(80, 8, 128, 2) == 327_680
    assert gqa_bytes_per_token(126, 8, 128, 2) == 516_096
    # "The weight of remembering" (future-shock.ai): Llama 3 8B 128 KiB, DeepSeek-V3 69 KiB per token;
    # a llama.cpp user's DeepSeek-V3.2 at 2^20 tokens: 68.625 GiB (provide.ai)
    assert gqa_bytes_per_token(32, 8, 128, 2) == 128 * 1024
    assert round(70_272 / 1024) == 69 and 70_272 * 2**20 / 2**30 == 68.625
    # DeepSeek-V2 paper (arXiv:2405.04434), Table 1: MLA caches (d_c + d_h^R) l = 4.5 d_h l values
    v2 = load_model("deepseek-v2")
    assert kv_per_token(v2, 1, "bfloat16", "auto")[0] == 4.5 * 128 * v2.num_hidden_layers * 2
    assert kv_per_token(load_model("kimi-k2"), 8, "bfloat16", "fp8")[0] == 61 * 576
    # GQA shards heads over TP, at least one per device
    mix = load_model("mixtral-8x7b")
    assert [kv_per_token(mix, tp, "bfloat16", "auto")[0] for tp in (1, 2, 8, 16)] == \
        [32 * 2 * 8 * 128 * 2, 32 * 2 * 4 * 128 * 2, 32 * 2 * 128 * 2, 32 * 2 * 128 * 2]


def plan_json(*args):
    r = run("plan", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_plan_kv_capacity_through_the_app(bare):
    from moeplan.planner.hardware import GiB

    base = ["mixtral-8x7b", "--gpus", "2", "--device-name", H200, "--batch-sizes", "1,64"]
    d = plan_json(*base)
    cap = d["device"]["memory_gib"] * GiB
    for lay in d["layouts"]:
        kv = lay["kv_cache"]
        budget = int(0.9 * cap) - lay["memory_gib"]["total"] * GiB - kv["reserve_gib"] * GiB
        assert abs(kv["kv_gib"] * GiB - budget) < 0.02 * GiB
        per_rank = kv["tokens_per_dp_rank"]
        assert per_rank == int(kv["kv_gib"] * GiB // kv["bytes_per_token"]) or \
            abs(per_rank - kv["kv_gib"] * GiB / kv["bytes_per_token"]) < 0.01 * per_rank
        assert kv["tokens"] == per_rank * lay["dp"] and kv["sequences"] == per_rank // 8192 * lay["dp"]
        assert lay["fits"] == (lay["weights_fit"] and kv["sequences"] >= 1)
    fp8 = plan_json(*base, "--kv-cache-dtype", "fp8")
    tok = {(l["tp"], l["dp"], l["ep"]): l["kv_cache"]["tokens"] for l in d["layouts"]}
    for l in fp8["layouts"]:
        assert l["kv_cache"]["tokens"] in range(2 * tok[(l["tp"], l["dp"], l["ep"])] - 2,
                                                2 * tok[(l["tp"], l["dp"], l["ep"])] + 3)
    more = plan_json(*base, "--gpu-memory-utilization", "0.95", "--context-len", "32768")
    assert more["context_len"] == 32768 and more["gpu_memory_utilization"] == 0.95
    assert all(l["kv_cache"]["sequences"] == l["kv_cache"]["tokens_per_dp_rank"] // 32768 * l["dp"]
               for l in more["layouts"])
    assert max(l["kv_cache"]["tokens"] for l in more["layouts"]) > max(tok.values())
    # 80 GiB H100s: DeepSeek-V3 on 8 leaves no KV cache, so no layout fits
    assert not any(l["fits"] for l in plan_json("deepseek-v3", "--gpus", "8")["layouts"])


@pytest.mark.parametrize("opt,value,needle", [("--gpu-memory-utilization", "1.5", "fraction in (0, 1]"),
                                              ("--context-len", "0", "1..16777216"),
                                              ("--kv-cache-dtype", "int4", "auto, fp8")])
def test_plan_kv_options_bad_values(bare, opt, value, needle):
    r = run("plan", "mixtral-8x7b", "--gpus", "2", opt, value)
    assert r.exit_code == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"moeplan: error: {opt} ") and needle in r.stderr


def test_plan_ranks_fitting_layouts_by_time_then_kv_tokens(bare):
    d = plan_json("deepseek-v3", "--gpus", "8", "--device-name", H200)
    keys = [(not l["fits"], l["score_us"], -l["kv_cache"]["tokens"]) for l in d["layouts"]]
    assert keys == sorted(keys)
    # MLA's latent is replicated over TP: data-parallel attention holds more tokens
    by = {(l["tp"], l["dp"], l["ep"]): l["kv_cache"]["tokens"] for l in d["layouts"]}
    assert by[(1, 8, False)] > by[(8, 1, False)]


# ------------------------------------------------------------------ 4. fixes


def test_ratio_for_prefers_the_same_card():
    from moeplan.planner.plan import CalibrationTable, ratio_for

    h100 = CalibrationTable("E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json", 8, 7168, "bf16", {1: 2.0}, {1: 3.0},
                            "NVIDIA_H100_80GB_HBM3")
    h200 = CalibrationTable("E=128,N=768,device_name=NVIDIA_H200.json", 128, 768, "bf16", {1: 5.0}, {1: 7.0},
                            "NVIDIA_H200")
    assert ratio_for([h100, h200], 8, 7168, "bf16", 1, True, "NVIDIA_H200") == (5.0, h200.name)
    assert ratio_for([h100, h200], 8, 7168, "bf16", 1, True, "NVIDIA_H100_80GB_HBM3") == (2.0, h100.name)
    assert ratio_for([h100, h200], 8, 7168, "bf16", 1, True) == (2.0, h100.name)  # no card: nearest shape


def test_help_names_real_engine_profiles():
    from moeplan.engines.registry import PROFILES

    out = run("plan", "--help", columns=200).stdout
    vllm = [n for n, p in PROFILES.items() if p.engine == "vllm"]
    assert "vllm-0.10" not in out and len(vllm) >= 3 and all(p in out for p in vllm)
    sgl = run("plan", "deepseek-v3", "--gpus", "8", "--engine", "sglang-0.5.23")  # not planned yet: one line
    assert sgl.exit_code == 2 and sgl.stdout == "" and "plan models vLLM's tables only" in sgl.stderr
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "vllm-0.10" not in readme


def test_matrix_model_paths_are_relative_to_the_matrix_file(bare, tiny_model):
    sub = bare / "fleet"
    sub.mkdir()
    (sub / "models").mkdir()
    (sub / "models" / "config.json").write_text(tiny_model.read_text())
    (sub / "m.toml").write_text('models = ["models/config.json"]\ndevices = ["NVIDIA H200"]\n')
    elsewhere = bare / "elsewhere"
    elsewhere.mkdir()
    import os

    os.chdir(elsewhere)
    r = run("matrix", str(sub / "m.toml"), "--json", "--tuned-dir", str(elsewhere))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["tables"][0]["file_name"] == "E=4,N=32,device_name=NVIDIA_H200.json"
    # an unknown path says so first, before the list of presets
    (sub / "bad.toml").write_text('models = ["nope/config.json"]\ndevices = ["NVIDIA H200"]\n')
    r = run("matrix", str(sub / "bad.toml"))
    assert r.exit_code == 2 and r.stderr.startswith("moeplan: error: model path 'nope/config.json' does not exist")


@pytest.mark.parametrize("cmd", [["resolve", "mixtral-8x7b", "--tp", "2"], ["plan", "mixtral-8x7b", "--gpus", "2"],
                                 ["matrix", "FILE"]])
def test_a_missing_tuned_dir_is_an_error(bare, cmd):
    f = bare / "m.toml"
    f.write_text('models = ["mixtral-8x7b"]\ndevices = ["NVIDIA H200"]\n')
    args = [str(f) if a == "FILE" else a for a in cmd]
    r = run(*args, "--tuned-dir", "/does/not/exist")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == ("moeplan: error: --tuned-dir '/does/not/exist' does not exist; pass a folder of tuning tables "
                        "(or leave --tuned-dir out: ./tuned, then moeplan's shipped tables)\n")


def test_report_extra_is_matplotlib_only():
    import tomllib

    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert meta["project"]["optional-dependencies"]["report"] == ["matplotlib>=3.7"]


def test_report_title_wraps_and_names_both_folders():
    from moeplan.planner.report import TableRun, chart_title
    from moeplan.tables.measurements import CsvPoint  # noqa: F401

    run_ = TableRun(DSV3_TP8_H200, {}, {})
    title = chart_title(run_, "tuned", "exhaustive")
    assert all(len(l) <= 80 for l in title.splitlines())
    assert "winner in tuned vs the default heuristic vs winner in exhaustive" in title.replace("\n", " ")
