"""A corpus of hostile inputs over every command and option (resolve, models, show, verify,
tune --interpret), generated from a few tables of bad values.

Every case must give: exit code 2, exactly one stderr line `moeplan: error: ...` naming the
value, nothing on stdout, no traceback, and no file or folder left behind (the working
folder and the shared hostile files are compared before and after). Tune cases must fail at
validation: a guard makes any case that reaches the first measurement fail loudly, so the
corpus costs milliseconds per case and never runs a kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
KNOBS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")
GOOD_ENTRY = dict(zip(KNOBS, (16, 64, 64, 1, 4, 3)))
TINY = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 4,
        "num_experts_per_tok": 2, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 1,
        "hidden_act": "silu"}
TABLE_NAME = "E=4,N=32,device_name=cpu_interpreter.json"  # what `tune TINY --interpret` writes


def _tiny(**change) -> dict:
    d = dict(TINY)
    for k, v in change.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def _write_files(d: Path) -> None:
    """Every hostile file the cases name, relative to `d`."""
    def js(name, obj):
        (d / name).write_text(json.dumps(obj))

    (d / "binary.json").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    (d / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    (d / "nan.json").write_text('{"num_local_experts": NaN}')
    (d / "bigint.json").write_text('{"num_local_experts": ' + "9" * 5000 + "}")
    (d / "empty.json").write_text("")
    (d / "list.json").write_text("[1, 2]")
    with open(d / "huge.json", "wb") as f:  # sparse: over the 4 MiB cap without writing it
        f.truncate((4 << 20) + 1)
    (d / "folder").mkdir()
    (d / "folder" / "notes.txt").write_text("no tables here")
    os.mkfifo(d / "fifo.json")  # reading a FIFO would block: refused by its type first
    # config.json files that parse but describe nonsense
    js("cfg_experts.json", _tiny(num_local_experts=10**9))
    js("cfg_hidden0.json", _tiny(hidden_size=0))
    js("cfg_hidden_huge.json", _tiny(hidden_size=2**40))
    js("cfg_layers.json", _tiny(num_hidden_layers=10**9))
    js("cfg_topk.json", _tiny(num_experts_per_tok=9))
    js("cfg_float.json", _tiny(intermediate_size=32.5))
    js("cfg_string.json", _tiny(num_local_experts="8"))
    js("cfg_dense.json", {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 1})
    js("cfg_q_unknown.json", _tiny(quantization_config={"quant_method": "mystery4"}))
    js("cfg_q_list.json", _tiny(quantization_config=[{"quant_method": "fp8"}]))
    js("cfg_q_method_list.json", _tiny(quantization_config={"quant_method": ["fp8"]}))
    js("cfg_q_nomethod.json", _tiny(quantization_config={"bits": 4}))
    js("cfg_q_ct_groups.json", _tiny(quantization_config={"quant_method": "compressed-tensors",
                                                          "config_groups": ["group_0"]}))
    js("cfg_q_ct_weights.json", _tiny(quantization_config={"quant_method": "compressed-tensors",
                                                           "config_groups": {"group_0": {"weights": 8}}}))
    js("cfg_q_ct_bits.json", _tiny(quantization_config={
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 3, "type": "int"}}}}))
    js("cfg_q_gptq_bits.json", _tiny(quantization_config={"quant_method": "gptq", "bits": 2, "group_size": 128}))
    js("cfg_q_block.json", _tiny(quantization_config={"quant_method": "fp8", "weight_block_size": [128, 0]}))
    js("cfg_q_algo.json", _tiny(quantization_config={"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}))
    js("cfg_markup.json", _tiny(num_local_experts="[bold red]8[/bold red]"))
    js("cfg_act.json", _tiny(hidden_act={"name": "x" * 100_000}))
    js("cfg_mlp_only.json", dict(_tiny(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                                       num_experts=4, moe_intermediate_size=32), mlp_only_layers="all"))
    # tuning tables
    js("t_bm3.json", {"1": dict(GOOD_ENTRY, BLOCK_SIZE_M=3)})
    js("t_huge_bm.json", {"1": dict(GOOD_ENTRY, BLOCK_SIZE_M=2**40)})
    js("t_stages.json", {"1": dict(GOOD_ENTRY, num_stages=999)})
    js("t_warps.json", {"1": dict(GOOD_ENTRY, num_warps=3)})
    js("t_group.json", {"1": dict(GOOD_ENTRY, GROUP_SIZE_M=10**6)})
    js("t_empty.json", {})
    js("t_version_only.json", {"triton_version": "3.6.0"})
    (d / "t_dupe.json").write_text('{"1": %s, "1": %s}' % (json.dumps(GOOD_ENTRY), json.dumps(GOOD_ENTRY)))
    js("t_key0.json", {"0": GOOD_ENTRY})
    js("t_keyx.json", {"x": GOOD_ENTRY})
    js("t_key01.json", {"01": GOOD_ENTRY})
    js("t_key_huge.json", {"99999999999": GOOD_ENTRY})
    js("t_entry_list.json", {"1": [16, 64, 64, 1, 4, 3]})
    js("t_missing_knob.json", {"1": {k: v for k, v in GOOD_ENTRY.items() if k != "num_warps"}})
    js("t_extra_knob.json", {"1": dict(GOOD_ENTRY, waves=2)})
    js("t_bool_knob.json", {"1": dict(GOOD_ENTRY, num_warps=True)})
    js("t_float_knob.json", {"1": dict(GOOD_ENTRY, BLOCK_SIZE_N=64.0)})
    js("t_version_int.json", {"triton_version": 3, "1": GOOD_ENTRY})
    (d / "[bold]t_markup.json").write_text(json.dumps({"1": dict(GOOD_ENTRY, BLOCK_SIZE_M=3)}))
    (d / "t_esc\x1b[2J.json").write_text(json.dumps({"1": dict(GOOD_ENTRY, BLOCK_SIZE_M=3)}))
    # search spaces
    js("s_empty.json", [])
    js("s_object_huge.json", {k: list(range(1, 50)) for k in KNOBS})
    js("s_entry_int.json", [7])
    js("s_missing.json", [{"BLOCK_SIZE_M": 16}])
    js("s_bm3.json", [dict(GOOD_ENTRY, BLOCK_SIZE_M=3)])
    js("s_object_unknown.json", {"BLOCK_SIZE_X": [16]})
    js("s_object_empty_list.json", dict({k: [v] for k, v in GOOD_ENTRY.items()}, num_warps=[]))
    js("s_string.json", "BLOCK_SIZE_M=16")
    js("s_huge_bm.json", [dict(GOOD_ENTRY, BLOCK_SIZE_M=2**40)])  # a power of two, far outside the engine
    js("s_stages.json", {**{k: [v] for k, v in GOOD_ENTRY.items()}, "num_stages": [3, 9]})
    (d / "s_nan.json").write_text(json.dumps([GOOD_ENTRY]).replace("16", "NaN", 1))
    # captured routing ids (TINY: 4 experts, top-2)
    js("r_range.json", [[0, 9], [1, 2]])
    js("r_negative.json", [[-1, 2]])
    js("r_shape.json", [[0, 1, 2]])
    js("r_flat.json", [0, 1, 2])
    js("r_float.json", [[0.5, 1.5]])
    js("r_ragged.json", [[0, 1], [2]])
    js("r_strings.json", [["a", "b"]])
    js("r_empty.json", [])
    (d / "r_garbage.pt").write_bytes(b"not a torch file" * 10)
    (d / "r_garbage.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "r_deep.json").write_text("[" * 100 + "]" * 100)
    (d / "r_latin1.json").write_bytes(b"[[0, 1]] \xff")
    # preset folders for `models` ($MOEPLAN_PRESETS_DIR)
    for name, content in (("p_binary", bytes(range(256))), ("p_deep", b"[" * 40 + b"]" * 40),
                          ("p_experts", None), ("p_alias", None), ("p_quant", None), ("p_list", b"[]")):
        (d / name).mkdir()
        preset = dict(alias="tiny", name="org/tiny", model_type="mixtral", architecture="MixtralForCausalLM",
                      num_experts=4, top_k=2, hidden_size=64, moe_intermediate_size=32, num_shared_experts=0,
                      shared_expert_intermediate_size=None, num_hidden_layers=1, num_moe_layers=1,
                      activation="silu", expert_bias=False, quantization=None)
        if name == "p_experts":
            preset["num_experts"] = 10**9
        if name == "p_alias":
            preset["alias"] = "Tiny\x1b[31m"
        if name == "p_quant":
            preset["quantization"] = {"quant_method": "mystery4"}
        (d / name / "tiny.json").write_bytes(content if content is not None else json.dumps(preset).encode())
    # output folders whose contents clash with what `tune` writes there
    for name in ("o_csv_dir", "o_table_dir", "o_ckpt_file", "o_bad_table", "o_binary_table", "o_ckpt_dir_file"):
        (d / name).mkdir()
    (d / "o_csv_dir" / (TABLE_NAME[:-5] + ".csv")).mkdir()
    (d / "o_table_dir" / TABLE_NAME).mkdir()
    (d / "o_ckpt_file" / ".moeplan-tune").write_text("not a folder")
    js("o_bad_table/" + TABLE_NAME, {"1": dict(GOOD_ENTRY, BLOCK_SIZE_M=3)})
    (d / "o_binary_table" / TABLE_NAME).write_bytes(bytes(range(256)))
    # a good tiny model, for the tune cases that break one option at a time
    (d / "tiny").mkdir()
    js("tiny/config.json", TINY)
    _write_fleet_files(d)


def _write_fleet_files(d: Path) -> None:
    """Matrix files and folders of tables whose measurements CSV is hostile."""
    head = 'models = ["mixtral-8x7b"]\ndevices = ["NVIDIA H200"]\n'
    for name, text in MATRIX_TEXT.items():
        keep = [line for line in head.splitlines(True) if line.split(" ")[0] not in text.split(" ")[0]]
        (d / name).write_text(text if name.startswith("mj_") else "".join(keep) + text)
    many = ", ".join(f'"m{i}"' for i in range(1000))
    devs = ", ".join(f'"D{i}"' for i in range(1000))
    (d / "m_combos.toml").write_text(f"models = [{many}]\ndevices = [{devs}]\ndtypes = [\"auto\", \"fp8_w8a8\"]\n"
                                     + "".join(f"[[layouts]]\ntp = {t}\n" for t in (1, 2, 4, 8)))
    (d / "m_deep.toml").write_text("models = " + "[" * 200 + "]" * 200 + '\ndevices = ["H200"]\n')
    (d / "m_tables.toml").write_text(head + "[" + ".".join(["a"] * 40) + "]\nx = 1\n")
    (d / "m_invalid.toml").write_text('models = ["tiny"]\ndevices = ["cpu_interpreter"]\n[[layouts]]\ntp = 3\n')
    table = (ROOT / "tuned" / PLAN_TABLE).read_text()
    head_csv = "table,engine_profile,batch_size,phase,median_us,is_winner,is_default,floor_us\n"
    row = "t,vllm-0.33,{M},confirm,{us},True,True,{floor}\n"
    for name, body in CSV_BODIES.items():
        (d / name).mkdir()
        (d / name / PLAN_TABLE).write_text(table)
        csv_path = d / name / (PLAN_TABLE[:-5] + ".csv")
        if name == "c_fifo":
            os.mkfifo(csv_path)
        elif name == "c_folder":
            csv_path.mkdir()
        elif name == "c_huge":
            with open(csv_path, "wb") as f:
                f.truncate((64 << 20) + 1)
        elif isinstance(body, bytes):
            csv_path.write_bytes(head_csv.encode() + body)
        else:
            csv_path.write_text(head_csv + "".join(row.format(M=M, us=us, floor=f) for M, us, f in body)
                                if isinstance(body, list) else body)
    (d / "c_good").mkdir()
    (d / "c_good" / PLAN_TABLE).write_text(table)
    (d / "c_good" / (PLAN_TABLE[:-5] + ".csv")).write_text(head_csv + row.format(M=1, us=10, floor=5))


def _case(cmd: str, argv: list, needle: str, env: dict | None = None):
    return pytest.param(argv, needle, env, id=f"{cmd}:{' '.join(argv[1:])[:60]!r}")


# ---- the corpus ------------------------------------------------------------------------------

BAD_FILES = [  # (file, what the message must name)
    ("binary.json", "binary.json"), ("latin1.json", "latin1.json"), ("deep.json", "deep.json"),
    ("nan.json", "nan.json"), ("bigint.json", "bigint.json"), ("empty.json", "empty.json"),
    ("list.json", "list"), ("huge.json", "huge.json"), ("fifo.json", "fifo.json"), ("/dev/zero", "/dev/zero"),
    ("/dev/null", "/dev/null"),
]
BAD_CONFIGS = [
    ("cfg_experts.json", "num_local_experts=1000000000"), ("cfg_hidden0.json", "hidden_size=0"),
    ("cfg_hidden_huge.json", "hidden_size=1099511627776"), ("cfg_layers.json", "num_hidden_layers=1000000000"),
    ("cfg_topk.json", "num_experts_per_tok=9"), ("cfg_float.json", "intermediate_size=32.5"),
    ("cfg_string.json", "num_local_experts='8'"), ("cfg_dense.json", "dense model"),
    ("cfg_q_unknown.json", "quant_method='mystery4'"), ("cfg_q_list.json", "quantization_config must be a JSON object"),
    ("cfg_q_method_list.json", "quant_method=['fp8']"), ("cfg_q_nomethod.json", "quant_method=None"),
    ("cfg_q_ct_groups.json", "config_groups=['group_0']"), ("cfg_q_ct_weights.json", "config_groups.group_0"),
    ("cfg_q_ct_bits.json", "num_bits=3"), ("cfg_q_gptq_bits.json", "bits=2"),
    ("cfg_q_block.json", "weight_block_size=[128, 0]"), ("cfg_q_algo.json", "quant_algo='W4A8_AWQ'"),
    ("cfg_markup.json", "[bold red]8[/bold red]"), ("cfg_act.json", "hidden_act="),
    ("cfg_mlp_only.json", "mlp_only_layers='all'"),
]
BAD_MODEL_REFS = [("", "empty model reference"), ("   ", "empty model reference"), ("no-such-model", "no-such-model"),
                  ("\x1b[31mred", "\\x1b[31mred"), ("a\x00b", "a\\x00b"), ("x" * 5000, "xxxx"),
                  ("[bold]nope[/bold]", "[bold]nope[/bold]"), ("/etc/passwd", "/etc/passwd"),
                  ("folder", "no config.json"), ("~no-such-user/config.json", "~no-such-user"),
                  ("\udcff.json", "\\udcff"), ("/".join(["é" * 100] * 40), "too long")]
BAD_DEVICE_NAMES = [",dtype=fp8_w8a8", "H100,dtype=fp8_w8a8", "a=b", "NVIDIA/H100", "[red]H100[/red]",
                    "H100]", "\x1b[2JH100", "H100\n", "H100\t", "A" * 300, "", " ", "_H100", "NVIDIA H100\u202e",
                    "Ｈ100", "H100;rm -rf"]
LAYOUT = [  # (options, needle) shared by resolve and tune
    (["--tp", "abc"], "'abc'"), (["--tp", "0"], "--tp 0"), (["--tp", "-1"], "--tp -1"),
    (["--tp", "1e3"], "'1e3'"), (["--tp", "99999999999999999999"], "99999999999999999999"),
    (["--tp", "2048"], "--tp 2048"), (["--tp=²"], "'²'"), (["--dp", "x"], "'x'"), (["--dp", "0"], "--dp 0"),
    (["--dp", "1025"], "--dp 1025"), (["--tp", "64", "--dp", "64"], "4096"),
    (["--placement", "zigzag", "--ep", "--tp", "2"], "'zigzag'"), (["--placement", "", "--ep", "--tp", "2"], "''"),
    (["--all2all-backend", "[red]x"], "'[red]x'"), (["--all2all-backend", "\x1b"], "'\\x1b'"),
    (["--dtype", "fp9"], "'fp9'"), (["--dtype", ""], "''"), (["--dtype", "auto\x00"], "'auto\\x00'"),
    (["--dtype", "fp8_w8a8", "--block-shape", "128x128"], "'128x128'"),
    (["--dtype", "fp8_w8a8", "--block-shape", "1,2,3"], "'1,2,3'"),
    (["--dtype", "fp8_w8a8", "--block-shape", ""], "''"),
    (["--dtype", "fp8_w8a8", "--block-shape", "-1,-1"], "-1"),
    (["--dtype", "fp8_w8a8", "--block-shape", "[,]"], "'[,]'"),
    (["--dtype", "fp8_w8a8", "--block-shape", "²,1"], "'²,1'"),
    (["--dtype", "fp8_w8a8", "--block-shape", "1" + "0" * 20 + ",128"], "1" + "0" * 20),
    (["--dtype", "bf16", "--per-token"], "--per-token"),
]

RESOLVE = [_case("resolve", ["resolve", f], n)
           for f, n in BAD_FILES + BAD_CONFIGS]
RESOLVE += [_case("resolve", ["resolve", ref], n) for ref, n in BAD_MODEL_REFS]
RESOLVE += [_case("resolve", ["resolve", "tiny", *opts], n) for opts, n in LAYOUT]
RESOLVE += [_case("resolve", ["resolve", "tiny", "--device-name", dn], repr(dn)[1:-1][:40])
            for dn in BAD_DEVICE_NAMES]
RESOLVE += [_case("resolve", ["resolve", "tiny", *opts], n) for opts, n in [
    (["--batch-size", "0"], "--batch-size 0"), (["--batch-size", "-5"], "--batch-size -5"),
    (["--batch-size", "abc"], "'abc'"), (["--batch-size", "1" + "0" * 30], "1" + "0" * 30),
    (["--tuned-dir", ""], "--tuned-dir ''"), (["--tuned-dir", "a\x1bb"], "a\\x1bb"),
    (["--tuned-dir", "x" * 5000], "too long"), (["--bogus"], "--bogus"), (["--json=maybe"], "--json"),
    # engine profiles and the engine's shipped-table folder
    (["--engine", "vllm-9"], "'vllm-9'"), (["--engine", ""], "--engine ''"), (["--engine", "vllm-0.33\x1b[2J"], "\\x1b"),
    (["--engine", "[bold]vllm[/bold]"], "'[bold]vllm[/bold]'"), (["--engine-configs", ""], "--engine-configs ''"),
    (["--engine-configs", "missing-folder"], "missing-folder"), (["--engine-configs", "binary.json"], "binary.json"),
    (["--engine-configs", "a\x1bb"], "a\\x1bb"), (["--engine-configs", "x" * 5000], "too long"),
]]

MODELS = [_case("models", ["models", *opts], n) for opts, n in [
    (["--bogus"], "--bogus"), (["extra"], "extra"), (["--json", "x"], "x"), (["--json=1"], "--json")]]
MODELS += [_case("models", ["models"], n, {"MOEPLAN_PRESETS_DIR": env}) for env, n in [
    ("p_binary", "tiny.json"), ("p_deep", "tiny.json"), ("p_experts", "num_experts=1000000000"),
    ("p_alias", "Tiny\\x1b[31m"), ("p_quant", "quant_method='mystery4'"), ("p_list", "tiny.json"),
    ("no-such-folder", "no-such-folder")]]

SHOW = [_case("show", ["show", f], n) for f, n in BAD_FILES]
SHOW += [_case("show", ["show", f], n) for f, n in [
    ("", "''"), ("missing.json", "missing.json"), ("folder", "folder"), ("a\x1bb.json", "a\\x1bb.json"),
    ("t_bm3.json", "BLOCK_SIZE_M=3"), ("t_huge_bm.json", "BLOCK_SIZE_M=1099511627776"),
    ("t_stages.json", "num_stages=999"), ("t_warps.json", "num_warps=3"), ("t_group.json", "GROUP_SIZE_M=1000000"),
    ("t_empty.json", "no batch-size entries"), ("t_version_only.json", "no batch-size entries"),
    ("t_dupe.json", "'1' appears more than once"), ("t_key0.json", "'0'"), ("t_keyx.json", "'x'"),
    ("t_key01.json", "'01'"), ("t_key_huge.json", "'99999999999'"), ("t_entry_list.json", "entry '1'"),
    ("t_missing_knob.json", "num_warps"), ("t_extra_knob.json", "waves"), ("t_bool_knob.json", "num_warps=True"),
    ("t_float_knob.json", "BLOCK_SIZE_N=64.0"), ("t_version_int.json", "triton_version 3"),
    ("[bold]t_markup.json", "[bold]t_markup.json"), ("t_esc\x1b[2J.json", "t_esc\\x1b[2J.json"),
    ("x" * 300 + ".json", "xxxx"), ("/".join(["é" * 100] * 40), "too long"),
]]

VERIFY = [_case("verify", ["verify", *opts], n) for opts, n in [
    ([""], "''"), (["missing"], "'missing'"), (["binary.json"], "binary.json"), (["folder"], "folder"),
    (["a\x1bb"], "a\\x1bb"), (["x" * 5000], "too long"), (["/dev/null"], "/dev/null"),
    (["folder", "--strict=yes"], "--strict"), (["folder", "--bogus"], "--bogus")]]


def _tune(*opts, model="tiny"):
    return ["tune", model, "--interpret", "--out", "out", "--batch-sizes", "2", *opts]


TUNE = [_case("tune", _tune(model=f), n) for f, n in BAD_FILES + BAD_CONFIGS]
TUNE += [_case("tune", _tune(model=ref), n) for ref, n in BAD_MODEL_REFS]
TUNE += [_case("tune", _tune(*opts), n) for opts, n in LAYOUT]
TUNE += [_case("tune", _tune("--device-name", dn), repr(dn)[1:-1][:40]) for dn in BAD_DEVICE_NAMES]
TUNE += [_case("tune", _tune("--device-name", "NVIDIA H100 80GB HBM3"), "cannot be used with --interpret")]
TUNE += [_case("tune", _tune(*opts), n) for opts, n in [
    (["--batch-sizes", ""], "''"), (["--batch-sizes", "0"], "'0'"), (["--batch-sizes", "x"], "'x'"),
    (["--batch-sizes", "1,,2"], "'1,,2'"), (["--batch-sizes", "²"], "'²'"), (["--batch-sizes", "1e3"], "'1e3'"),
    (["--batch-sizes", "-1"], "'-1'"), (["--batch-sizes", "99999999"], "'99999999'"),
    (["--batch-sizes", ",".join(map(str, range(1, 100)))], "99 sizes"),
    (["--search-space", ""], "--search-space ''"), (["--search-space", "missing.json"], "missing.json"),
    (["--search-space", "folder"], "folder"), (["--search-space", "/dev/zero"], "/dev/zero"),
    (["--search-space", "binary.json"], "binary.json"), (["--search-space", "latin1.json"], "latin1.json"),
    (["--search-space", "deep.json"], "deep.json"), (["--search-space", "huge.json"], "huge.json"),
    (["--search-space", "s_nan.json"], "s_nan.json"), (["--search-space", "s_empty.json"], "s_empty.json"),
    (["--search-space", "s_object_huge.json"], "s_object_huge.json"),
    (["--search-space", "s_entry_int.json"], "entry 0"), (["--search-space", "s_missing.json"], "BLOCK_SIZE_N"),
    (["--search-space", "s_bm3.json"], "BLOCK_SIZE_M=3"), (["--search-space", "s_object_unknown.json"], "BLOCK_SIZE_X"),
    (["--search-space", "s_object_empty_list.json"], "num_warps"), (["--search-space", "s_string.json"], "str"),
    (["--search-space", "s_huge_bm.json"], "BLOCK_SIZE_M=1099511627776"),
    (["--search-space", "s_stages.json"], "num_stages=9"), (["--batch-sizes", "65537"], "'65537'"),
    (["--strategy", "slow"], "'slow'"), (["--strategy", ""], "''"), (["--strategy", "[b]x"], "'[b]x'"),
    (["--out", ""], "--out ''"), (["--out", "binary.json"], "binary.json"), (["--out", "binary.json/sub"], "binary.json"),
    (["--out", "a\x00b"], "a\\x00b"), (["--out", "x" * 5000], "too long"), (["--out", "o/" + "n" * 300], "255 bytes"),
    (["--gpus", "x"], "'x'"), (["--gpus", "-1"], "'-1'"), (["--gpus", "0,,1"], "''"), (["--gpus", "99999"], "'99999'"),
    (["--gpus", "²"], "'²'"),
    (["--routing", ""], "--routing ''"), (["--routing", "zipf:abc"], "zipf:abc"), (["--routing", "zipf:0"], "zipf:0"),
    (["--routing", "zipf:nan"], "zipf:nan"), (["--routing", "zipf:inf"], "zipf:inf"),
    (["--routing", "zipf:1e999"], "zipf:1e999"), (["--routing", "nope.pt"], "nope.pt"),
    (["--routing", "/dev/zero"], "/dev/zero"), (["--routing", "a\x1bb"], "a\\x1bb"),
    (["--routing", "r_range.json"], "0..9"), (["--routing", "r_negative.json"], "-1..2"),
    (["--routing", "r_shape.json"], "(1, 3)"), (["--routing", "r_flat.json"], "(3,)"),
    (["--routing", "r_float.json"], "float"), (["--routing", "r_ragged.json"], "r_ragged.json"),
    (["--routing", "r_strings.json"], "r_strings.json"), (["--routing", "r_empty.json"], "r_empty.json"),
    (["--routing", "r_garbage.pt"], "r_garbage.pt"), (["--routing", "r_garbage.npy"], "r_garbage.npy"),
    (["--routing", "r_deep.json"], "r_deep.json"), (["--routing", "r_latin1.json"], "r_latin1.json"),
    (["--routing", "binary.json"], "binary.json"), (["--routing", "huge.json"], "huge.json"),
    (["--seed", "-1"], "--seed -1"), (["--seed", str(2**32)], str(2**32)), (["--seed", "abc"], "'abc'"),
    (["--seed", "1" + "0" * 30], "1" + "0" * 30),
    (["--point-timeout", "0"], "--point-timeout 0"), (["--point-timeout", "-1"], "--point-timeout -1"),
    (["--point-timeout", "nan"], "nan"), (["--point-timeout", "inf"], "inf"), (["--point-timeout", "abc"], "'abc'"),
    (["--point-timeout", "1e9"], "1000000000"),
    (["--restart-every", "-1"], "--restart-every -1"), (["--restart-every", "abc"], "'abc'"),
    (["--restart-every", "10000000"], "10000000"),
    (["--compile-threads", "-1"], "--compile-threads -1"), (["--compile-threads", "1000"], "1000"),
    (["--compile-threads", "abc"], "'abc'"),
    (["--dtype", "nvfp4"], "--dtype nvfp4"), (["--bogus"], "--bogus"),
    (["--engine", "vllm-9"], "'vllm-9'"), (["--engine", ""], "--engine ''"), (["--engine", "\x07"], "\\x07"),
]]
TUNE += [_case("tune", [*_tune(), "--out", out], n) for out, n in [  # the last --out wins
    ("o_csv_dir", ".csv' is a folder"), ("o_table_dir", ".json' is a folder"), ("o_ckpt_file", ".moeplan-tune' is a file"),
    ("o_bad_table", "BLOCK_SIZE_M=3"), ("o_binary_table", "not UTF-8"),
]]


# ---- fleets: matrix files, measurements CSVs, plan and report --------------------------------------

MATRIX_TEXT = {
    "m_engine_list.toml": 'engine = ["x"]\n', "m_engine_table.toml": "engine = {}\n",
    "m_engine_int.toml": "engine = 3\n", "m_dtypes_int.toml": "dtypes = [8]\n",
    "m_device.toml": 'devices = ["[/x]"]\n', "m_device_comma.toml": 'devices = ["H100,dtype=fp8_w8a8"]\n',
    "m_device_slash.toml": 'devices = ["NVIDIA/H100"]\n', "m_device_esc.toml": 'devices = ["H100\\u001b[2J"]\n',
    "m_models_esc.toml": 'models = ["a\\u001b[31m"]\n', "m_models_int.toml": "models = [1]\n",
    "m_models_empty.toml": 'models = [""]\n', "m_batch_big.toml": "batch_sizes = [65537]\n",
    "m_batch_zero.toml": "batch_sizes = [0]\n", "m_batch_bool.toml": "batch_sizes = [true]\n",
    "m_batch_float.toml": "batch_sizes = [1.5]\n", "m_batch_many.toml": f"batch_sizes = {list(range(1, 66))}\n",
    "m_batch_str.toml": 'batch_sizes = "1,2"\n', "m_tp_big.toml": "[[layouts]]\ntp = 2048\n",
    "m_tp_str.toml": '[[layouts]]\ntp = "8"\n', "m_tpdp.toml": "[[layouts]]\ntp = 64\ndp = 64\n",
    "m_placement.toml": '[[layouts]]\nep = true\nplacement = ["linear"]\n',
    "m_layout_key.toml": "[[layouts]]\nfoo = 1\n", "m_key.toml": "gpus = 2\n", "m_layouts_str.toml": 'layouts = "tp=8"\n',
    "m_bad.toml": "models = [\n", "mj_nan.json": '{"models": ["mixtral-8x7b"], "devices": ["H200"], "batch_sizes": [NaN]}',
    "mj_deep.json": '{"models": ' + "[" * 100 + "]" * 100 + "}", "mj_list.json": "[1]",
}
MATRIX_CASES = [(f, n) for f, n in BAD_FILES if f not in ("list.json",)] + [
    ("list.json", "expected an object"), ("missing.toml", "missing.toml"), ("folder", "folder"),
    ("m_engine_list.toml", "engine ['x']"), ("m_engine_table.toml", "engine {}"), ("m_engine_int.toml", "engine 3"),
    ("m_dtypes_int.toml", "'dtypes'"), ("m_device.toml", "'[/x]'"), ("m_device_comma.toml", "'H100,dtype=fp8_w8a8'"),
    ("m_device_slash.toml", "'NVIDIA/H100'"), ("m_device_esc.toml", "\\x1b[2J"), ("m_models_esc.toml", "\\x1b[31m"),
    ("m_models_int.toml", "'models'"), ("m_models_empty.toml", "'models'"), ("m_batch_big.toml", "65537"),
    ("m_batch_zero.toml", "entry 0"), ("m_batch_bool.toml", "True"), ("m_batch_float.toml", "1.5"),
    ("m_batch_many.toml", "65 sizes"), ("m_batch_str.toml", "'1,2'"), ("m_tp_big.toml", "layouts[0].tp 2048"),
    ("m_tp_str.toml", "layouts[0].tp '8'"), ("m_tpdp.toml", "4096 devices"), ("m_placement.toml", "['linear']"),
    ("m_layout_key.toml", "foo"), ("m_key.toml", "gpus"), ("m_layouts_str.toml", "'tp=8'"), ("m_bad.toml", "TOML"),
    ("mj_nan.json", "mj_nan.json"), ("mj_deep.json", "nests"), ("mj_list.json", "expected an object"),
    ("m_combos.toml", "8,000,000 combinations"), ("m_deep.toml", "nests"), ("m_tables.toml", "nests"),
]
MATRIX = [_case("matrix", ["matrix", f], n) for f, n in MATRIX_CASES]
MATRIX += [_case("matrix", ["matrix", "m_invalid.toml", "--shard", sh], n) for sh, n in [
    ("²/2", "'²/2'"), ("1/0", "'1/0'"), ("0/1", "'0/1'"), ("3/2", "'3/2'"), ("1/9999999", "'1/9999999'"),
    ("a/b", "'a/b'"), ("", "''"), ("1/2/3", "'1/2/3'"), ("-1/2", "'-1/2'")]]
MATRIX += [_case("matrix", ["matrix", "m_engine_list.toml", *o], n) for o, n in [
    (["--tuned-dir", "a\x1bb"], "a\\x1bb"), (["--json", "--github"], "--json and --github")]]
TUNE += [_case("tune", ["tune", "--matrix", f, "--interpret", "--out", "out"], n) for f, n in [
    ("m_device.toml", "'[/x]'"), ("m_engine_list.toml", "engine ['x']"), ("m_combos.toml", "combinations"),
    ("fifo.json", "fifo.json"), ("/dev/zero", "/dev/zero"), ("m_batch_big.toml", "65537"),
    ("m_invalid.toml", "none of its 1 combination(s) can be served")]]
TUNE += [_case("tune", ["tune", "--matrix", "m_invalid.toml", "--interpret", "--out", "out", "--shard", "²/1"], "'²/1'")]

PLAN_TABLE = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"  # mixtral-8x7b at TP2 on the default card
CSV_BODIES = {
    "c_big_m": [("1" + "0" * 400, 10, 5)], "c_digits": [("²", 10, 5)], "c_neg_m": [("-4", 10, 5)],
    "c_ratio": [(1, "1e308", 5)], "c_inf": [(1, "inf", 5)], "c_neg_us": [(1, -5, 5)], "c_word": [(1, "fast", 5)],
    "c_floor": [(1, 10, "1e300")], "c_field": [(1, "1" * 5000, 5)], "c_long": "x" * 200_000 + "\n1,2\n",
    "c_extra": "batch_size,phase,median_us,is_winner\n1,confirm,10,True,surplus\n", "c_cols": "a,b\n1,2\n",
    "c_binary": b"1,confirm,\xff\xfe,True,True,5\n", "c_fifo": None, "c_folder": None, "c_huge": None,
}
CSV_CASES = [("c_big_m", "line 2: batch_size '1000"), ("c_digits", "batch_size '²'"), ("c_neg_m", "'-4'"),
             ("c_ratio", "median_us '1e308'"), ("c_inf", "median_us 'inf'"), ("c_neg_us", "median_us '-5'"),
             ("c_word", "'fast'"), ("c_floor", "floor_us '1e300'"), ("c_field", "5,000 characters"),
             ("c_long", "c_long"), ("c_extra", "more fields"), ("c_cols", "lacks the columns"),
             ("c_binary", "not UTF-8"), ("c_fifo", "not a regular file"), ("c_folder", "is a folder"),
             ("c_huge", "over the limit")]
PLAN = [_case("plan", ["plan", "mixtral-8x7b", "--gpus", "2", "--tuned-dir", c], n) for c, n in CSV_CASES]
PLAN += [_case("plan", ["plan", "mixtral-8x7b", "--gpus", "2", *o], n) for o, n in [
    (["--gpus", "0"], "--gpus 0"), (["--gpus", "1025"], "--gpus 1025 is out of range"),
    (["--gpus", "99999999999999"], "--gpus 99999999999999"), (["--gpus", "abc"], "'abc'"),
    (["--gpus-per-node", "0"], "--gpus-per-node 0"), (["--gpus-per-node", "5000"], "--gpus-per-node 5000"),
    (["--tuned-dir", ""], "--tuned-dir ''"), (["--tuned-dir", "a\x1bb"], "a\\x1bb"), (["--tuned-dir", "x" * 5000], "too long"),
    (["--batch-sizes", "1" + "0" * 400], "'1000"), (["--batch-sizes", "²"], "'²'"), (["--batch-sizes", "1_000"], "'1_000'"),
    (["--batch-sizes", ""], "''"), (["--batch-sizes", ",".join(map(str, range(1, 70)))], "69 sizes"),
    (["--batch-sizes", "2000000"], "'2000000'"), (["--link-gbps", "nan"], "nan"), (["--link-gbps", "inf"], "inf"),
    (["--link-gbps", "1e9"], "--link-gbps"), (["--node-link-gbps", "0"], "--node-link-gbps"),
    (["--gpu-mem", "nan"], "--gpu-mem nan"), (["--gpu-mem", "1e400"], "--gpu-mem"), (["--gpu-mem", "abc"], "'abc'"),
    (["--engine", "vllm-9"], "'vllm-9'"), (["--engine", "[/x]"], "'[/x]'"), (["--bogus"], "--bogus")]]
PLAN += [_case("plan", ["plan", "mixtral-8x7b", "--gpus", "2", "--device-name", dn], repr(dn)[1:-1][:40])
         for dn in BAD_DEVICE_NAMES + ["[/x]"]]
PLAN += [_case("plan", ["plan", ref, "--gpus", "2"], n) for ref, n in BAD_MODEL_REFS + BAD_FILES[:4]]
REPORT = [_case("report", ["report", c, "--out", "rep"], n) for c, n in CSV_CASES]
REPORT += [_case("report", ["report", *o], n) for o, n in [
    (["c_good", "--out", "binary.json"], "--out 'binary.json' is a file"), (["c_good", "--out", ""], "--out ''"),
    (["c_good", "--out", "a\x1bb"], "a\\x1bb"), (["c_good", "--out", "binary.json/sub"], "binary.json"),
    (["c_good", "--vs", "missing", "--out", "rep"], "'missing'"), ([""], "''"), (["missing", "--out", "rep"], "'missing'"),
    (["folder", "--out", "rep"], "no tuning table"), (["c_good", "--out", "x" * 5000], "too long")]]
VERIFY += [_case("verify", ["verify", c, "--stale"], n) for c, n in CSV_CASES if c in (
    "c_long", "c_binary", "c_fifo", "c_folder", "c_huge", "c_field")]


# ---- the harness -----------------------------------------------------------------------------

def _tree(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = None if p.is_dir() or p.is_fifo() else p.stat().st_size
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    _write_files(d)
    return d


@pytest.fixture
def workdir(hostile, monkeypatch):
    monkeypatch.chdir(hostile)
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("VLLM_TUNED_CONFIG_FOLDER", raising=False)
    monkeypatch.delenv("MOEPLAN_PRESETS_DIR", raising=False)
    # `tiny` as a model reference is the good tiny config.json folder in the working folder

    import moeplan.model.spec as models
    from moeplan.tune import job

    def reached(*_a, **_k):  # a hostile case got past validation: fail loudly, measure nothing
        raise AssertionError("validation let a hostile tune through to planning")

    monkeypatch.setattr(job.TableJob, "plan", reached)
    models.clear_preset_cache()
    before = _tree(hostile)
    yield hostile
    models.clear_preset_cache()
    assert _tree(hostile) == before, "a file or folder was created, changed or left behind"


def _check(workdir, argv, needle, env=None):
    r = CliRunner().invoke(app, argv, env=env)
    err = r.stderr
    assert r.exit_code == 2, (r.exit_code, r.stdout, err, r.exception)
    assert "Traceback" not in r.stdout + err
    assert r.stdout == "", r.stdout
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("moeplan: error: "), err
    assert needle in lines[0], (needle, lines[0])
    assert lines[0].isprintable(), lines[0]  # control characters never reach the terminal raw


@pytest.mark.parametrize("argv, needle, env", RESOLVE)
def test_resolve(workdir, argv, needle, env):
    _check(workdir, argv, needle, env)


@pytest.mark.parametrize("argv, needle, env", MODELS)
def test_models(workdir, argv, needle, env):
    env = {k: str(workdir / v) for k, v in (env or {}).items()}
    _check(workdir, argv, needle, env)


@pytest.mark.parametrize("argv, needle, env", SHOW)
def test_show(workdir, argv, needle, env):
    _check(workdir, argv, needle, env)


@pytest.mark.parametrize("argv, needle, env", VERIFY)
def test_verify(workdir, argv, needle, env):
    _check(workdir, argv, needle, env)


@pytest.mark.parametrize("argv, needle, env", TUNE)
def test_tune(workdir, argv, needle, env):
    _check(workdir, argv, needle, env)


@pytest.mark.parametrize("argv, needle, env", MATRIX + PLAN + REPORT)
def test_fleet(workdir, argv, needle, env):
    _check(workdir, argv, needle, env)


def test_corpus_size():
    counts = {"resolve": len(RESOLVE), "models": len(MODELS), "show": len(SHOW), "verify": len(VERIFY),
              "tune": len(TUNE), "matrix": len(MATRIX), "plan": len(PLAN), "report": len(REPORT)}
    assert sum(counts.values()) >= 400 and min(counts.values()) >= 5, counts
