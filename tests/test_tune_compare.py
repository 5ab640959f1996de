"""scripts/tune_compare.py: two tables timed side by side with the tuner's interleaved A/B, per M
(CPU interpreter, the cost-model timer: the ratio it prints is the model's)."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from moeplan.engines.knobs import KernelConfig
from moeplan.tune.measure import model_time_us

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_compare.py"
BEST = KernelConfig(16, 64, 64, 1, 4, 3)
OTHER = KernelConfig(16, 32, 64, 1, 4, 3)
DEFAULT = KernelConfig(16, 64, 128, 1, 4, 4)  # the tiny model's default heuristic at M=2 and 8


@pytest.mark.interpreter
def test_compare_prints_a_per_m_table_and_csv(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_MODEL_NOISE", raising=False)
    spec = importlib.util.spec_from_file_location("tune_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"2": BEST.to_dict(), "8": BEST.to_dict()}))
    b.write_text(json.dumps({"2": OTHER.to_dict(), "8": BEST.to_dict()}))
    out = tmp_path / "cmp.csv"
    assert mod.main([str(tiny_model), "--a", str(a), "--b", str(b), "--batch-sizes", "2,8", "--csv", str(out),
                     "--interpret"]) == 0
    df = pd.read_csv(out)
    assert list(df.M) == [2, 8] and list(df.a_config) == [BEST.short()] * 2
    assert list(df.b_config) == [OTHER.short(), BEST.short()]
    E, topk = 4, 2  # the tiny model
    want = model_time_us(BEST, 2, E, topk) / model_time_us(OTHER, 2, E, topk)
    assert df.a_over_b[0] == pytest.approx(want, rel=1e-6) and df.a_over_b[1] == pytest.approx(1.0)
    text = capsys.readouterr().out
    assert f"{want:6.3f}" in text and "geomean A/B" in text
    # --b default: the engine's default heuristic
    assert mod.main([str(tiny_model), "--a", str(a), "--b", "default", "--batch-sizes", "2", "--csv", str(out),
                     "--interpret"]) == 0
    df = pd.read_csv(out)
    assert df.b_config[0] == DEFAULT.short()
    assert df.a_over_b[0] == pytest.approx(model_time_us(BEST, 2, E, topk) / model_time_us(DEFAULT, 2, E, topk))
