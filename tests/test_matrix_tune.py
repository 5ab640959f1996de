"""`moeplan tune --matrix` on the CPU (Triton interpreter, the deterministic cost-model timer):
it makes the missing tables, a second run does nothing and says so, shards split the work,
and a table another live process is tuning is refused (single table) or skipped (matrix)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app

pytestmark = pytest.mark.interpreter
runner = CliRunner()
DEVICE = "cpu_interpreter"  # the only device an --interpret run makes tables for
TP1 = "E=4,N=32,device_name=cpu_interpreter.json"
TP2 = "E=4,N=16,device_name=cpu_interpreter.json"
SPACE = {"BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32, 64], "BLOCK_SIZE_K": [32], "GROUP_SIZE_M": [1],
         "num_warps": [4], "num_stages": [2]}


@pytest.fixture(autouse=True)
def model_timer(cost_model_timer, monkeypatch):
    monkeypatch.setenv("VLLM_TUNED_CONFIG_FOLDER", "")
    monkeypatch.setattr("moeplan.engines.vllm.engine_config_dir", lambda: None)


@pytest.fixture
def fleet(tmp_path, tiny_model):
    d = tiny_model.parent
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    m = tmp_path / "m.toml"
    m.write_text(f'models = ["{d}"]\ndevices = ["{DEVICE}"]\nbatch_sizes = [2]\n'
                 '[[layouts]]\ntp = 1\n[[layouts]]\ntp = 2\n')
    return m, tmp_path / "space.json", tmp_path / "out"


def tune(m, space, out, *extra):
    return runner.invoke(app, ["tune", "--matrix", str(m), "--interpret", "--search-space", str(space), "--out",
                               str(out), "--quiet", *extra])


def test_shard_then_the_rest_then_nothing(fleet):
    m, space, out = fleet
    r = tune(m, space, out, "--shard", "2/2")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"tuning 1 of 1 table(s) of {m} (shard 2/2)"
    assert sorted(p.name for p in out.glob("*.json")) == [TP1]  # sorted by name: TP2 (N=16) first, TP1 second
    r = tune(m, space, out)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"tuning 1 of 2 table(s) of {m}"
    for name in (TP1, TP2):
        assert sorted(json.loads((out / name).read_text())) == ["2", "triton_version"]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = tune(m, space, out)
    assert r.exit_code == 0
    assert r.stdout == f"nothing to tune: all 2 table(s) of {m} exist ({out}, the engine's folders)\n"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_table_being_tuned_elsewhere_is_refused_or_skipped(fleet):
    m, space, out = fleet
    out.mkdir()
    hold = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom moeplan.tune.lock import TableLock\n"
                             "TableLock(sys.argv[1], sys.argv[2]).acquire()\nprint('locked', flush=True)\n"
                             "time.sleep(120)", str(out), TP1], stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "locked"
        cfg = m.parent / "tiny" / "config.json"
        r = runner.invoke(app, ["tune", str(cfg), "--interpret", "--batch-sizes", "2", "--search-space", str(space),
                                "--out", str(out), "--quiet"])
        assert r.exit_code == 2 and r.stdout == ""
        assert r.stderr == (f"moeplan: error: {TP1} is being tuned into this folder by process {hold.pid} on "
                            f"{__import__('socket').gethostname()} (lock {out / ('.' + TP1 + '.lock')}); wait for "
                            "it to finish, or use another --out\n")
        r = tune(m, space, out)
        assert r.exit_code == 0, r.output
        assert f"skipped: {TP1} is being tuned" in r.stdout
        assert sorted(p.name for p in out.glob("*.json")) == [TP2]
    finally:
        hold.kill()
        hold.wait()


def test_bad_matrix_options(fleet, tmp_path):
    m, space, out = fleet
    for args, needle in [
        (["tune", "--matrix", str(m), "--shard", "0/2", "--interpret"], "--shard '0/2' is invalid"),
        (["tune", "--interpret"], "pass a MODEL or --matrix FILE"),
        (["tune", "mixtral-8x7b", "--shard", "1/2", "--interpret"], "--shard '1/2' needs --matrix FILE"),
        (["tune", "--matrix", str(tmp_path / "nope.toml"), "--interpret"], "cannot read matrix file"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)


def test_untunable_tables_are_skipped_not_fatal(tmp_path):
    m = tmp_path / "m.toml"
    m.write_text(f'models = ["gpt-oss-20b"]\ndevices = ["{DEVICE}"]\n')
    r = runner.invoke(app, ["tune", "--matrix", str(m), "--interpret", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("skipped: E=32,N=2880,device_name=cpu_interpreter") and "mxfp4 cannot be tuned" in lines[0]
    assert lines[1:] == [f"nothing to tune: no table of {m} still to make is tunable"]


def test_interpreter_never_tunes_a_real_devices_table(fleet, tmp_path):
    # a matrix naming a real GPU, run under --interpret: nothing is made for that GPU
    m, space, out = fleet
    real = tmp_path / "real.toml"
    real.write_text(m.read_text().replace(DEVICE, "NVIDIA H100 80GB HBM3"))
    r = tune(real, space, out)
    assert r.exit_code == 0, r.output
    assert "are for other GPUs" in r.stdout
    assert not list(out.glob("*.json")) if out.exists() else True
