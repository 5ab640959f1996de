"""The Python API in moeplan/__init__.py: the README's example, and that `import moeplan` stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import moeplan
from moeplan.base.errors import LayoutError, ModelError

REPO = Path(__file__).resolve().parents[1]
H200_MIXTRAL = REPO / "tuned" / "E=8,N=7168,device_name=NVIDIA_H200.json"


def test_resolve_names_the_files_the_engine_loads():
    res = moeplan.resolve("deepseek-v3", tp=8, ep=True, device_name="NVIDIA H200")
    assert [t.file_name for t in res.tables()] == [
        "E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json"]
    assert len(res.devices) == 8 and res.devices[3].local_experts == tuple(range(96, 128))
    tp = moeplan.resolve("deepseek-v3", tp=8, device_name="NVIDIA H200")
    assert tp.tables()[0].file_name.startswith("E=256,N=256,")


def test_resolve_without_a_device_never_probes_the_gpu(monkeypatch):
    def probe():
        raise AssertionError("the API must not run nvidia-smi")

    monkeypatch.setattr("moeplan.base.gpu.local_device_name", probe)
    assert moeplan.resolve("mixtral-8x7b", tp=2).device_name is None


def test_describe_is_resolve_json(tmp_path):
    res = moeplan.resolve("mixtral-8x7b", tp=2, device_name="NVIDIA H200")
    d = moeplan.describe(res, tuned_dirs=[str(REPO / "tuned")], engine="vllm-0.33", batch_size=64, env={})
    (t,) = d["tables"]
    assert t["source"] == "tuned" and t["found"].endswith("E=8,N=7168,device_name=NVIDIA_H200.json")
    assert t["entry"]["source"] == "table" and t["entry"]["batch_key"] == 64
    assert d["engine"]["profile"] == "vllm-0.33"
    missing = moeplan.describe(res, tuned_dirs=[str(tmp_path)], env={})
    assert missing["tables"][0]["source"] == "missing"


def test_plan_ranks_layouts():
    p = moeplan.plan("mixtral-8x7b", gpus=2, device_name="NVIDIA H200", batch_sizes=(1, 64))
    assert p.layouts and all(lp.memory.fits for lp in p.layouts[:1])
    assert {(lp.res.layout.tp, lp.res.layout.dp) for lp in p.layouts} == {(2, 1), (1, 2)}


def test_tables_load_and_verify(tmp_path):
    key, cfg = moeplan.load_table(H200_MIXTRAL).entry_for(70)
    assert key == 64 and cfg.BLOCK_SIZE_M >= 8
    assert moeplan.verify_table(H200_MIXTRAL) == []
    bad = tmp_path / H200_MIXTRAL.name
    bad.write_text('{"1": {"BLOCK_SIZE_M": 3}}')
    assert moeplan.verify_folder(tmp_path)[bad.name]  # problems listed, no exception


def test_errors_are_domain_errors():
    with pytest.raises(ModelError):
        moeplan.resolve("no-such-model")
    with pytest.raises(LayoutError):
        moeplan.resolve("mixtral-8x7b", tp=3)


def test_tune_request_is_a_value():
    req = moeplan.TuneRequest(model="mixtral-8x7b", tp=2)
    assert req == moeplan.TuneRequest(model="mixtral-8x7b", tp=2) and hash(req) == hash(req)


def test_import_moeplan_loads_no_heavy_package():
    code = ("import sys, moeplan; moeplan.resolve('mixtral-8x7b', tp=2); "
            "bad = [m for m in ('torch', 'triton', 'rich', 'typer', 'pandas') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
