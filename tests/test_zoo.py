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
