"""configs/zoo.toml (the H200 zoo, written by scripts/gen_zoo.py): it parses, expands to the
size the README states, names only presets, and every table is an H200 table of a tunable scheme."""

import ast
import re
from pathlib import Path

from moeplan.fleet.matrix import expand, load_matrix

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "configs" / "zoo.toml"


def tunable():
    src = (ROOT / "moeplan/kernels/quantize.py").read_text()  # importing it would import torch
    schemes = ast.literal_eval(re.search(r"^SCHEMES = (\(.*?\))$", src, re.M).group(1))
    excluded = re.search(r'^TUNABLE_SCHEMES = tuple\(s for s in SCHEMES if s != "(\w+)"\)$', src, re.M).group(1)
    return {s for s in schemes if s != excluded}


def test_zoo_parses_to_60_to_120_tables_of_presets():
    m = load_matrix(str(ZOO))
    presets = {p.stem for p in (ROOT / "configs").glob("*.json")}
    assert m.models and set(m.models) <= presets
    assert m.engine == "vllm-0.33" and m.devices == ("NVIDIA H200",)
    jobs, _ = expand(m)
    names = [j.file_name for j in jobs]
    assert len(names) == len(set(names))
    assert 60 <= len(names) <= 120


def test_zoo_tables_are_h200_and_tunable():
    jobs, _ = expand(load_matrix(str(ZOO)))
    ok = tunable()
    assert "mxfp4" not in ok
    for j in jobs:
        assert "device_name=NVIDIA_H200" in j.file_name
        assert j.spec.scheme in ok, j.file_name


def test_zoo_is_what_the_generator_writes():
    import runpy

    gen = runpy.run_path(str(ROOT / "scripts" / "gen_zoo.py"), run_name="gen_zoo")
    assert gen["render"](gen["tunable_presets"]()) == ZOO.read_text()


# ---- the GPU-time estimate ---------------------------------------------------------------------

import json  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from moeplan.cli.app import app  # noqa: E402
from moeplan.fleet.estimate import estimate, measured  # noqa: E402

H200_BF16 = "E=8,N=7168,device_name=NVIDIA_H200"
H200_FP8 = "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128]"


def _csv(folder, name, times):
    rows = "\n".join(f'"{name}.json",1,screen,{t}' for t in times)
    (folder / f"{name}.csv").write_text(f"table,batch_size,phase,t_s\n{rows}\n")


def test_estimate_medians_per_family_and_device(tmp_path):
    _csv(tmp_path, H200_BF16, [5, 100, 30])  # wall 100 (the largest t_s, not the last row)
    _csv(tmp_path, "E=16,N=1024,device_name=NVIDIA_H200", [300])
    _csv(tmp_path, "E=16,N=2048,device_name=NVIDIA_H200", [200])
    _csv(tmp_path, H200_FP8, [1000])
    _csv(tmp_path, "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3", [7])  # another device: not used for H200 16-bit
    s = measured([str(tmp_path)])
    assert sorted(x[2] for x in s) == [7, 100, 200, 300, 1000]
    e = estimate([("NVIDIA_H200", "16-bit")] * 3 + [("NVIDIA_H200", "8-bit block")], s, gpus=2)
    assert (e.tables, e.gpu_s, e.wall_s) == (4, 3 * 200 + 1000, 800)
    e = estimate([("NVIDIA_B200", "8-bit block"), ("NVIDIA_B200", "other")], s, gpus=1)  # any device, then all
    assert e.gpu_s == 1000 + 200
    assert estimate([("NVIDIA_H200", "16-bit")], [], 8) is None


def test_matrix_shows_the_estimate(tmp_path):
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    _csv(tuned, H200_BF16, [600])
    (tmp_path / "m.toml").write_text('models = ["mixtral-8x7b"]\ndevices = ["NVIDIA H200"]\n'
                                     '[[layouts]]\ntp = 2\n[[layouts]]\ntp = 8\n')
    env = {"VLLM_TUNED_CONFIG_FOLDER": "", "COLUMNS": "80"}
    r = CliRunner().invoke(app, ["matrix", str(tmp_path / "m.toml"), "--tuned-dir", str(tuned), "--json",
                                 "--gpus", "2"], env=env)
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)["estimate"]
    assert (est["tables"], est["gpu_seconds"], est["wall_seconds"], est["measured_tables"]) == (2, 1200, 600, 1)
    r = CliRunner().invoke(app, ["matrix", str(tmp_path / "m.toml"), "--tuned-dir", str(tuned)], env=env)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # the estimate wraps at the width: compare its words
    line = text[text.index("estimate:"):]
    assert all(len(x) <= 80 for x in r.output.splitlines() if "moeplan tune" not in x and "/" not in x)
    assert line.startswith("estimate: 2 table(s) to tune (missing + stale): 20m00s GPU time, 2m30s on 8 GPU(s); "
                           "from 1 measured table(s): median")
