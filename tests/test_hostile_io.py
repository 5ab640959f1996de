"""The input layer's own rules, and the hostile cases the corpus cannot express as one argv:
Ctrl-C, failures after the first folder is created, corrupt checkpoints, and what reaches
stdout (markup and control characters in user data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from moeplan.base import safeio
from moeplan.cli.app import app
from moeplan.base.errors import InputError, TuneError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 4,
        "num_experts_per_tok": 2, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 1,
        "hidden_act": "silu"}
ENTRY = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4,
         "num_stages": 3}


@pytest.fixture
def tiny(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    return d


# ---- safeio ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, depth", [("1", 0), ("[]", 1), ('{"a": [[{}]]}', 4), ('["[[[[", "]"]', 1),
                                         ('["\\"[["]', 1)])
def test_json_depth_ignores_brackets_in_strings(text, depth):
    assert safeio.json_depth(text) == depth


@pytest.mark.parametrize("text", ["[" * 33 + "]" * 33, '{"a": NaN}', '[Infinity]', "[1e999]", "1" * 5000, "{"])
def test_parse_json_refuses(text):
    with pytest.raises(InputError):
        safeio.parse_json(text, "x")


def test_printable_escapes_every_control_and_format_character():
    for c in ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\u2028", "\u202e", "\ufeff"]:
        out = safeio.printable(f"a{c}b")
        assert out.isprintable() and out != f"a{c}b", repr(out)
    assert safeio.printable("NVIDIA H100 [bold]") == "NVIDIA H100 [bold]"


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "AMD Instinct MI300X",
                                  "NVIDIA GeForce RTX 4090", "NVIDIA RTX PRO 6000 Blackwell Server Edition"])
def test_real_device_names_pass_the_grammar(name):
    assert safeio.check_device_name(name) == name


def test_oversized_and_special_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(safeio.MAX_JSON_BYTES + 1)
    for path, needle in ((big, "over the limit"), ("/dev/zero", "not a regular file"), (tmp_path, "folder")):
        with pytest.raises(InputError, match=needle):
            safeio.read_text(path, "x")


# ---- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_during_start_up_says_interrupted():
    # the interrupt arrives while the CLI imports typer (the slow part of start-up)
    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['moeplan', 'models']\n"
            "import runpy\n"
            "runpy.run_module('moeplan', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (r.returncode, r.stderr, r.stdout) == (130, "moeplan: interrupted\n", "")


def test_ctrl_c_in_a_command_says_interrupted(monkeypatch):
    import moeplan.layout.resolve as cc

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(cc, "load_model", interrupt)
    r = CliRunner().invoke(app, ["resolve", "mixtral-8x7b"])
    assert r.exit_code == 130 and r.stderr.strip() == "moeplan: interrupted" and "Traceback" not in r.output


# ---- tune: a failure after the first folder removes what the run created --------------------------

@pytest.mark.parametrize("out_exists", [False, True])
def test_tune_failure_after_side_effects_cleans_up(tiny, tmp_path, monkeypatch, out_exists):
    from moeplan.tune import job

    def fail(*_a, **_k):
        raise TuneError("routing pools cannot be drawn (injected)")

    monkeypatch.setattr(job, "make_pools", fail)
    out = tmp_path / "a" / "b" / "out"
    if out_exists:
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = CliRunner().invoke(app, ["tune", str(tiny), "--interpret", "--batch-sizes", "2", "--out", str(out)])
    assert r.exit_code == 2 and "injected" in r.stderr and len(r.stderr.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_corrupt_routing_pool_in_the_checkpoint_is_drawn_again(tmp_path):
    import torch

    from moeplan.tune.job import TableJob

    path = tmp_path / "routing.pt"
    fake = SimpleNamespace(ckpt=SimpleNamespace(routing_path=path), batch_sizes=[2, 8], spec=SimpleNamespace(topk=2),
                           E_global=4)
    assert TableJob._saved_pools(fake) is None  # none yet
    path.write_bytes(b"\x00garbage")
    assert TableJob._saved_pools(fake) is None  # unreadable
    good = {M: (torch.zeros((3, M, 2), dtype=torch.int32), torch.zeros((3, M, 2))) for M in (2, 8)}
    torch.save(good, path)
    assert TableJob._saved_pools(fake) is not None
    torch.save({2: good[2]}, path)
    assert TableJob._saved_pools(fake) is None  # a batch size missing
    bad = dict(good)
    bad[8] = (torch.full((3, 8, 2), 7, dtype=torch.int32), good[8][1])
    torch.save(bad, path)
    assert TableJob._saved_pools(fake) is None  # ids out of range


# ---- what reaches stdout -------------------------------------------------------------------------

def test_resolve_prints_user_strings_literally(tmp_path):
    cfg = dict(TINY, _name_or_path="[bold red]evil[bold red]\x1b[2J")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "[red]dir").mkdir()  # a --tuned-dir must exist
    r = CliRunner().invoke(app, ["resolve", str(tmp_path), "--device-name", "NVIDIA H100 80GB HBM3",
                                 "--tuned-dir", str(tmp_path / "[red]dir")])
    assert r.exit_code == 0, r.output
    assert "[bold red]evil[bold red]\\x1b[2J" in r.stdout and "\x1b" not in r.stdout
    assert "[red]dir" in r.stdout


def test_show_title_prints_the_file_name_literally(tmp_path):
    p = tmp_path / "[bold]E=4,N=32.json"
    p.write_text(json.dumps({"triton_version": "[red]3.6", "1": ENTRY}))
    r = CliRunner().invoke(app, ["show", str(p)])
    assert r.exit_code == 0, r.output
    assert "[bold]E=4,N=32.json" in r.stdout and "[red]3.6" in r.stdout


def test_verify_never_writes_control_characters(tmp_path):
    (tmp_path / "E=4,N=32,device_name=X\x1b[2J.json").write_text(json.dumps({"1": ENTRY}))
    r = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert r.exit_code == 1 and "\x1b" not in r.output and "\\x1b[2J" in r.output


def test_models_prints_preset_names_literally(tmp_path):
    preset = dict(alias="tiny", name="[bold]org[/bold]/tiny", model_type="mixtral", architecture="MixtralForCausalLM",
                  num_experts=4, top_k=2, hidden_size=64, moe_intermediate_size=32, num_shared_experts=0,
                  shared_expert_intermediate_size=None, num_hidden_layers=1, num_moe_layers=1, activation="silu",
                  expert_bias=False, quantization=None)
    (tmp_path / "tiny.json").write_text(json.dumps(preset))
    from moeplan.model.spec import clear_preset_cache
    clear_preset_cache()
    r = CliRunner().invoke(app, ["models", "--wide"], env={"MOEPLAN_PRESETS_DIR": str(tmp_path)})
    clear_preset_cache()
    assert r.exit_code == 0, r.output
    assert "[bold]org[/bold]/tiny" in r.stdout


# ---- verify --strict: the engine kernel's limits -------------------------------------------------

@pytest.mark.parametrize("knob, value, ok", [
    ("BLOCK_SIZE_M", 8, True), ("BLOCK_SIZE_M", 4, False), ("BLOCK_SIZE_M", 512, False),
    ("BLOCK_SIZE_M", 2**40, False), ("BLOCK_SIZE_N", 16, True), ("BLOCK_SIZE_K", 512, False),
    ("GROUP_SIZE_M", 64, True), ("GROUP_SIZE_M", 65, False), ("num_warps", 16, True), ("num_warps", 3, False),
    ("num_stages", 5, True), ("num_stages", 6, False), ("num_stages", 999, False)])
def test_verify_strict_checks_knobs_against_the_engine(tmp_path, knob, value, ok):
    from moeplan.tables.table import TuningTable
    from moeplan.engines.knobs import KernelConfig
    name = "E=4,N=32,device_name=NVIDIA_H100_80GB_HBM3.json"
    text = TuningTable({1: KernelConfig(**dict(ENTRY, **{knob: value}))}, "3.6.0").to_json()
    (tmp_path / name).write_text(text)
    r = CliRunner().invoke(app, ["verify", str(tmp_path), "--strict"])
    assert (r.exit_code == 0) == ok, r.output
    if not ok:
        assert f"{knob}={value}" in r.output


# ---- plan, matrix and report: output escaped, report's --out made last and undone ----------------

def test_plan_and_matrix_print_user_strings_literally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "[b]m[/b]"  # the folder `[b]m[` holding `b]`
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(dict(TINY, _name_or_path="[bold]evil\x1b[2J",
                                                       num_attention_heads=4, num_key_value_heads=2)))
    (tmp_path / "[red]dir").mkdir()  # a --tuned-dir must exist (a missing one is an error)
    r = CliRunner().invoke(app, ["plan", "[b]m[/b]", "--gpus", "1", "--tuned-dir", "[red]dir"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("[bold]evil\\x1b[2J ([bold]evil\\x1b[2j) on 1 x") and "\x1b" not in r.stdout
    (tmp_path / "[i]m.toml").write_text('models = ["[b]m[/b]"]\ndevices = ["NVIDIA H200"]\n'
                                        '[[layouts]]\ntp = 3\n[[layouts]]\ntp = 1\n')
    r = CliRunner().invoke(app, ["matrix", "[i]m.toml"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("[i]m.toml: 1 table(s)") and "[b]m[/b] tp=1 auto" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("invalid: [b]m[/b] tp=3 auto on NVIDIA H200: tp*dp = 3 does not")


def _report_folder(tmp_path) -> Path:
    d = tmp_path / "tables"
    d.mkdir()
    name = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3"
    (d / f"{name}.json").write_text((ROOT / "tuned" / f"{name}.json").read_text())
    (d / f"{name}.csv").write_text("batch_size,phase,median_us,is_winner,is_default,floor_us\n"
                                   "1,confirm,10,True,False,5\n1,confirm,20,False,True,5\n")
    return d


def test_report_removes_what_it_made_when_drawing_fails(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from moeplan.planner import report

    src = _report_folder(tmp_path)
    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "old.png").write_text("a user's file")

    def broken(run, png, *_labels):
        png.write_bytes(b"half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "draw", broken)
    for out in (tmp_path / "new" / "report", keep):
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        r = CliRunner().invoke(app, ["report", str(src), "--out", str(out)])
        assert (r.exit_code, r.stdout) == (2, ""), r.output
        assert r.stderr.splitlines() == [f"moeplan: error: --out {str(out)!r}: cannot write the report "
                                         "(No space left on device)"]
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_tune_ray_on_a_cluster_without_gpus_prints_nothing_before_its_error(tiny, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # as if `ray.init` had started a local one
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["tune", str(tiny), "--interpret", "--batch-sizes", "2", "--out", str(out),
                                 "--ray", "local"])
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr.splitlines() == ["moeplan: error: --ray 'local': the Ray cluster has no GPU resources; run on a "
                                     "machine with GPUs or start the cluster's nodes with them (ray start --num-gpus N)"]
    assert not out.exists()


def test_tables_up_to_the_readme_s_4_mib_are_read(tmp_path):
    from moeplan.tables.table import load_table

    p = tmp_path / "E=4,N=32,device_name=X.json"
    body = json.dumps({"1": ENTRY})
    p.write_text(body[:-1] + " " * ((2 << 20) - len(body)) + "}")  # 2 MiB: refused before, within the 4 MiB rule
    assert load_table(p).entries
    with open(p, "ab") as f:
        f.truncate((4 << 20) + 1)
    with pytest.raises(Exception, match="over the limit of 4,194,304"):
        load_table(p)


def test_measurements_csv_errors_name_the_file_and_line():
    from moeplan.base.errors import PlanError
    from moeplan.tables.measurements import parse_tuning_csv

    text = "batch_size,phase,median_us,is_winner\n1,confirm,10,True\n2,confirm,1e400,True\n"
    with pytest.raises(PlanError, match=r"^measurements CSV 'x.csv' line 3: median_us '1e400' is not a time"):
        parse_tuning_csv(text, "'x.csv'")
    assert parse_tuning_csv(text.replace("1e400", ""), "x")[1].winner_us == 10.0
