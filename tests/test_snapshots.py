"""Exact human output of `resolve`, `show` and `verify`, through the real app.

Each case's stdout is compared line by line with a file in tests/snapshots/ (trailing spaces
of a line are not part of it: rich pads tables to the console width). Machine-specific paths
are replaced by placeholders first. After an intended change of the output, rewrite the files
with `MOEPLAN_UPDATE_SNAPSHOTS=1 pytest tests/test_snapshots.py` and read the diff.
"""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.base import paths
from moeplan.cli.app import app

SNAPSHOTS = Path(__file__).parent / "snapshots"
H100 = "NVIDIA H100 80GB HBM3"

# A small table with every knob varying, written by the tests (the shipped tables change with re-tunes).
TABLE = {
    "triton_version": "3.6.0",
    "1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 5},
    "64": {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 16, "num_warps": 4, "num_stages": 3},
    "4096": {"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 32, "num_warps": 8, "num_stages": 4},
}
TABLE_NAME = "E=8,N=7168,device_name=NVIDIA_H200.json"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A bare working folder: no ./tuned, no engine folder from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLLM_TUNED_CONFIG_FOLDER", raising=False)
    (tmp_path / "engine").mkdir()
    return tmp_path


def run(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "100"})


def normalize(text: str, workdir: Path) -> str:
    shipped = paths.shipped_tables_dir()
    if shipped is not None:
        text = text.replace(str(shipped), "<shipped>")
    text = text.replace(str(workdir), "<workdir>")
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def check(name: str, r, workdir: Path, code: int = 0) -> None:
    assert r.exit_code == code, r.output
    got = normalize(r.stdout, workdir)
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MOEPLAN_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got)
    assert got == path.read_text(), f"{name}: output differs from {path} (see the module docstring to update)"


def test_resolve_ep_with_shipped_table_and_export_line(workdir):
    # DeepSeek-V3 EP8 on an H100: the table ships with moeplan, not with the engine, so the
    # output says the engine will not load it and gives the export line
    r = run(["resolve", "deepseek-v3", "--tp", "8", "--ep", "--device-name", H100, "--batch-size", "4",
             "--engine", "vllm-0.33", "--engine-configs", "engine"])
    check("resolve_dsv3_ep8_h100", r, workdir)


def test_resolve_missing_table_uses_default_heuristic(workdir):
    # no table anywhere for this device: the default heuristic's config for M=16
    r = run(["resolve", "mixtral-8x7b", "--tp", "2", "--device-name", "NVIDIA L40S", "--batch-size", "16",
             "--engine", "vllm-0.33", "--engine-configs", "engine"])
    check("resolve_mixtral_tp2_missing", r, workdir)


def test_resolve_table_in_engine_folder(workdir):
    # the engine's own shipped folder holds the table: found as `engine`, no export line
    (workdir / "engine" / TABLE_NAME).write_text(json.dumps(TABLE, indent=4) + "\n")
    (workdir / "nowhere").mkdir()  # an empty folder: a --tuned-dir that does not exist is an error
    r = run(["resolve", "mixtral-8x7b", "--tp", "2", "--device-name", "NVIDIA H200", "--batch-size", "48",
             "--engine", "vllm-0.33", "--engine-configs", "engine", "--tuned-dir", "nowhere"])
    check("resolve_mixtral_tp2_engine_folder", r, workdir)


def test_show(workdir):
    p = workdir / TABLE_NAME
    p.write_text(json.dumps(TABLE, indent=4) + "\n")
    check("show_table", run(["show", str(p)]), workdir)


def test_verify_folder_with_one_bad_table(workdir):
    folder = workdir / "tables"
    folder.mkdir()
    (folder / TABLE_NAME).write_text(json.dumps(TABLE, indent=4) + "\n")
    bad = {"1": {**TABLE["1"], "BLOCK_SIZE_M": 24}}  # not a power of two
    (folder / "E=8,N=16,device_name=X.json").write_text(json.dumps(bad, indent=4) + "\n")
    check("verify_one_bad", run(["verify", str(folder)]), workdir, code=1)
