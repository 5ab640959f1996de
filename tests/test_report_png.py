"""`moeplan report`: one PNG of the stated size per table with a CSV, an index with the numbers,
one-line errors (no tables, no matplotlib)."""

import shutil
import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.planner.report import PNG_SIZE
from moeplan.cli.app import app

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parent.parent
TABLE = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3"
runner = CliRunner()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_report_writes_pngs_of_the_stated_size(tmp_path):
    src, other = tmp_path / "tuned", tmp_path / "other"
    src.mkdir(), other.mkdir()
    for ext in ("json", "csv"):
        shutil.copy(REPO / "tuned" / f"{TABLE}.{ext}", src / f"{TABLE}.{ext}")
    (src / "E=16,N=64,device_name=X.json").write_text("{}")  # a table without a CSV: listed, not drawn
    # the --vs folder: the same table, 10% slower at M=1
    (other / f"{TABLE}.csv").write_text("batch_size,phase,median_us,is_winner,is_default,floor_us\n"
                                        "1,confirm,150.0,True,False,120.0\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["report", str(src), "--vs", str(other), "--out", str(out)])
    assert r.exit_code == 0, r.output
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["E=8_N=7168_device_name=NVIDIA_H100_80GB_HBM3.png"]
    assert pngs[0].stat().st_size > 20_000 and png_size(pngs[0]) == PNG_SIZE == (800, 700)
    index = (out / "index.md").read_text()
    assert f"![E=8, N=7168, bf16]({pngs[0].name})" in index
    assert "| 1 | 133.9 | 141.0 | 1.05x | 120.0 | 90% | 150.0 |" in index  # confirm-phase medians of the CSV
    assert "E=16,N=64,device_name=X.json" in index and "without a CSV" in index


def test_report_of_the_committed_tables(tmp_path):
    r = runner.invoke(app, ["report", str(REPO / "tuned"), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert len(list(tmp_path.glob("*.png"))) == len(list((REPO / "tuned").glob("E=*.csv")))
    assert all(png_size(p) == PNG_SIZE for p in tmp_path.glob("*.png"))


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "no tuning table with its CSV"),
])
def test_report_bad_folder(tmp_path, make, needle):
    r = runner.invoke(app, ["report", str(make(tmp_path))])
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("moeplan: error: ") and needle in lines[0], r.stderr


def test_report_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    r = runner.invoke(app, ["report", str(REPO / "tuned"), "--out", str(tmp_path)])
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "moeplan[report]" in lines[0], r.stderr
    assert not list(tmp_path.glob("*.png"))
