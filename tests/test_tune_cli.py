"""`moeplan tune/show/verify` end to end on the CPU (Triton interpreter, a tiny model).

Timing under the interpreter is meaningless, so these runs use the deterministic cost
model (MOEPLAN_TUNE_TIMER=model) while the real kernel still runs every point (so
compile/crash/wrong-result faults go through the real worker and gate paths).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from moeplan.engines.knobs import KNOBS

TABLE = "E=4,N=32,device_name=cpu_interpreter.json"  # --interpret runs name their tables so
CSV = TABLE[:-5] + ".csv"
SPACE = {"BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [32, 64], "BLOCK_SIZE_K": [32, 64], "GROUP_SIZE_M": [1],
         "num_warps": [4], "num_stages": [2, 3]}


@pytest.fixture
def app():
    from moeplan.cli.app import app as real_app  # the installed command's app: its error handling included

    return real_app


@pytest.fixture
def model(tmp_path, tiny_model):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    return tiny_model, space


@pytest.fixture(autouse=True)
def model_timer(monkeypatch):
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)


def tune_args(model, out, *extra, sizes="2,8"):
    cfg, space = model
    return ["tune", str(cfg), "--interpret", "--batch-sizes", sizes, "--search-space", str(space),
            "--out", str(out), "--quiet", *extra]


def invoke(app, args):
    return CliRunner().invoke(app, args)


def engine_format(path: Path) -> str:
    obj = json.loads(path.read_text())
    return json.dumps(obj, indent=4) + "\n"


@pytest.mark.interpreter  # runs the real kernel in the CPU interpreter, GPU or not
def test_pipeline_writes_engine_table_csv_and_show_verify(app, model, tmp_path):
    import triton
    out = tmp_path / "out"
    r = invoke(app, tune_args(model, out))
    assert r.exit_code == 0, r.output
    table = out / TABLE
    text = table.read_text()
    # the engine's format, byte for byte: indent 4, trailing newline, triton_version first, batch order, knob order
    assert text == engine_format(table)
    obj = json.loads(text)
    assert list(obj) == ["triton_version", "2", "8"]
    assert obj["triton_version"] == triton.__version__
    assert all(list(obj[k]) == list(KNOBS) for k in ("2", "8"))
    # every measurement in the CSV; each winner is the fastest confirmed config that passed the gate
    df = pd.read_csv(out / CSV)
    assert {"batch_size", "phase", "median_us", "min_us", "max_us", "status", *KNOBS} <= set(df.columns)
    for M in (2, 8):
        conf = df[(df.batch_size == M) & (df.phase == "confirm") & (df.status == "ok")]
        best = conf.sort_values("median_us").iloc[0]
        assert {k: int(best[k]) for k in KNOBS} == obj[str(M)]
        assert ((df.batch_size == M) & (df.phase == "check") & (df.status == "ok")).any()
    assert "speed-up" in r.output and "roofline" in r.output
    # show / verify
    r = invoke(app, ["show", str(table)])
    assert r.exit_code == 0 and "BLOCK_SIZE_M" in r.output and "E=4 N=32" in r.output
    r = invoke(app, ["verify", str(out), "--strict"])
    assert r.exit_code == 0, r.output
    assert "ok   " + TABLE in r.output
    # the same command again: up to date, nothing rewritten
    mtime = table.stat().st_mtime_ns
    r = invoke(app, tune_args(model, out))
    assert r.exit_code == 0 and "up to date" in r.output, r.output
    assert table.stat().st_mtime_ns == mtime
    # new batch sizes merge into it; overlapping ones are refused; --force replaces
    r = invoke(app, tune_args(model, out, sizes="4"))
    assert r.exit_code == 0 and "merged 1 new batch size" in r.output, r.output
    assert list(json.loads(table.read_text())) == ["triton_version", "2", "4", "8"]
    assert sorted(pd.read_csv(out / CSV).batch_size.unique()) == [2, 4, 8]
    r = invoke(app, tune_args(model, out, sizes="8,16"))
    assert r.exit_code == 2 and "already has batch sizes 8" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = invoke(app, tune_args(model, out, "--force", sizes="16"))
    assert r.exit_code == 0 and "replaced" in r.output
    assert list(json.loads(table.read_text())) == ["triton_version", "16"]


@pytest.mark.interpreter  # runs the real kernel in the CPU interpreter, GPU or not
def test_faults_gate_crash_compile_timeout(app, model, tmp_path, monkeypatch):
    """A worker that dies, a compile error, a hung point and a wrong result: all recorded, the search goes on."""
    out = tmp_path / "out"
    monkeypatch.setenv("MOEPLAN_TUNE_FAULT", ";".join([
        "exit@M16/N32/K32/G1/w4/s3",      # kills its worker process mid-config
        "compile@M16/N32/K64/G1/w4/s3",
        "hang@M16/N64/K32/G1/w4/s3",      # never returns: the point timeout kills the worker
        "wrong@M16/N64/K64/G1/w4/s3",     # the fastest config computes garbage
    ]))
    r = invoke(app, tune_args(model, out, "--point-timeout", "6", sizes="2"))
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / CSV)
    status = {(row.config, row.phase): row.status for row in df.itertuples()}
    assert status[("M16/N32/K32/G1/w4/s3", "screen")] == "crash"
    assert status[("M16/N32/K64/G1/w4/s3", "screen")] == "compile_error"
    assert status[("M16/N64/K32/G1/w4/s3", "screen")] == "timeout"
    assert status[("M16/N64/K64/G1/w4/s3", "check")] == "wrong"
    win = json.loads((out / TABLE).read_text())["2"]
    assert win != {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4,
                   "num_stages": 3}
    winner = df[df.is_winner & (df.phase == "check")]
    assert len(winner) == 1 and winner.iloc[0].status == "ok"
    # the crashed and hung configs were never retried at later phases
    assert len(df[df.config == "M16/N32/K32/G1/w4/s3"]) == 1


@pytest.mark.interpreter  # runs the real kernel in the CPU interpreter, GPU or not
def test_resume_after_kill_gives_the_same_table(app, model, tmp_path):
    killed = tmp_path / "killed"
    env = dict(os.environ, MOEPLAN_TUNE_TIMER="model", MOEPLAN_TUNE_FAULT="slow@*",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.Popen([sys.executable, "-m", "moeplan", *tune_args(model, killed, sizes="2,8,32")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    records = None
    while time.time() < deadline:
        found = list(killed.glob(".moeplan-tune/*/records.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 6:
            records = found[0]
            break
        assert p.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    assert records is not None
    os.killpg(p.pid, signal.SIGKILL)  # kill -9 the CLI and its workers
    p.wait()
    n_before = len(records.read_text().splitlines())
    assert not (killed / TABLE).exists()
    r = invoke(app, tune_args(model, killed, sizes="2,8,32"))
    assert r.exit_code == 0, r.output
    clean = tmp_path / "clean"
    r2 = invoke(app, tune_args(model, clean, sizes="2,8,32"))
    assert r2.exit_code == 0, r2.output
    assert (killed / TABLE).read_bytes() == (clean / TABLE).read_bytes()
    # the resumed run measured only what was missing
    n_after = len(records.read_text().splitlines())
    n_clean = len(next(clean.glob(".moeplan-tune/*/records.jsonl")).read_text().splitlines())
    assert n_after >= n_clean and n_after - n_before <= n_clean - min(n_before, n_clean) + 1


@pytest.mark.parametrize("extra, needle", [
    (["--batch-sizes", "1,x"], "--batch-sizes '1,x': 'x' is not a batch size"),
    (["--batch-sizes", "0"], "is not a batch size"),
    (["--strategy", "slow"], "--strategy 'slow' is unknown; valid: fast, exhaustive"),
    (["--routing", "zipf:abc"], "zipf exponent must be a number"),
    (["--routing", "nope.pt"], "neither uniform, zipf:S nor an existing file"),
    (["--dtype", "nvfp4"], "--dtype nvfp4"),  # a scheme the kernel does not run yet
    (["--dtype", "mxfp4"], "--dtype mxfp4"),  # runs, but too slow on an H100 to tune faithfully
    (["--tp", "0"], "--tp 0"),  # layout errors come before any GPU or worker work
])
def test_bad_inputs_exit_2_with_one_line(app, model, tmp_path, extra, needle):
    cfg, space = model
    r = invoke(app, ["tune", str(cfg), "--interpret", "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_search_space_and_out_path(app, model, tmp_path):
    cfg, _ = model
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    r = invoke(app, ["tune", str(cfg), "--interpret", "--search-space", str(empty), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "is empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('[{"BLOCK_SIZE_M": 16}]')
    r = invoke(app, ["tune", str(cfg), "--interpret", "--search-space", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "lacks BLOCK_SIZE_N" in r.stderr
    f = tmp_path / "afile"
    f.write_text("x")
    r = invoke(app, ["tune", str(cfg), "--interpret", "--out", str(f)])
    assert r.exit_code == 2 and f"--out '{f}' is a file" in r.stderr


def test_gpu_selection_errors(app, model, tmp_path, monkeypatch):
    import torch
    cfg, _ = model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = invoke(app, ["tune", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no CUDA GPU is visible" in r.stderr and "--interpret" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    r = invoke(app, ["tune", str(cfg), "--gpus", "0,5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "there is no GPU 5; visible GPUs: 0, 1" in r.stderr


def test_show_and_verify_errors(app, tmp_path):
    r = invoke(app, ["show", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "cannot read tuning table" in r.stderr
    bad = tmp_path / "E=8,N=16,device_name=X.json"
    bad.write_text(json.dumps({"1": {"BLOCK_SIZE_M": 24, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1,
                                     "num_warps": 4, "num_stages": 2}}, indent=4) + "\n")
    r = invoke(app, ["verify", str(tmp_path)])
    assert r.exit_code == 1 and "BLOCK_SIZE_M=24 is not a power of two" in r.output
    r = invoke(app, ["verify", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_tune_without_torch_is_one_line(app, model, tmp_path, monkeypatch):
    # a planning-only install (no torch/triton): tune says what to install instead of a traceback
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    cfg, _ = model
    r = invoke(app, ["tune", str(cfg), "--interpret", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "needs torch" in r.stderr and len(r.stderr.strip().splitlines()) == 1
