"""A non-editable install (a wheel) carries the presets and the shipped tables.

The wheel is built from a copy of the tree and unpacked into a folder of its own; the CLI then
runs from a working folder with no configs/ or tuned/ near it, with `python -S` so that no
editable install of moeplan on this machine (a .pth finder) can shadow the wheel's copy.
`.ci/run` also installs the wheel into a fresh virtual environment and runs the console script.
"""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("setuptools")  # the wheel is built without build isolation (no network needed)
ROOT = Path(__file__).resolve().parent.parent
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "moeplan", src / "moeplan", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copytree(ROOT / "configs", src / "configs")
    (src / "tuned").mkdir()
    for f in (ROOT / "tuned").glob("*.json"):
        shutil.copy2(f, src / "tuned" / f.name)
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("moeplan-*.whl"))
    site = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp / "work"
    work.mkdir()
    return site, work


def run_cli(installed, *args):
    site, work = installed
    boot = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; sys.argv[0] = 'moeplan'; "
            "from moeplan.cli.app import main; main()")
    return subprocess.run([sys.executable, "-S", "-c", boot, str(site), sysconfig.get_paths()["purelib"], *args],
                          capture_output=True, text=True, cwd=work, timeout=120)


def test_wheel_resolves_a_preset_and_finds_its_shipped_table(installed):
    site, _ = installed
    r = run_cli(installed, "resolve", "mixtral-8x7b", "--tp", "2", "--device-name", H100, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["model_source"] == str(site / "moeplan" / "_data" / "configs" / "mixtral-8x7b.json")
    shipped = site / "moeplan" / "_data" / "tuned" / "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
    assert d["tables"][0]["found"] == str(shipped)


def test_wheel_lists_every_preset(installed):
    r = run_cli(installed, "models", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == len(list((ROOT / "configs").glob("*.json")))
