"""The evidence rule on a GPU: a small real tune (CUDA-graph timing, the A/B phase included), then
every entry of the table that is not the default config must have cleared the margin in its CSV."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.engines.vllm import default_config
from moeplan.tune.evidence import AB_ROUNDS, MIN_MARGIN

pytestmark = pytest.mark.gpu

# a small Mixtral-like layer: 8 experts, top-2, hidden 1024, expert width 512 (real GPU times, fast compiles)
MODEL = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": 8,
         "num_experts_per_tok": 2, "hidden_size": 1024, "intermediate_size": 512, "num_hidden_layers": 1,
         "hidden_act": "silu"}
SIZES = [1, 16, 256]


def test_every_non_default_entry_cleared_the_margin(tmp_path, monkeypatch):
    from moeplan.cli.app import app

    monkeypatch.delenv("MOEPLAN_TUNE_TIMER", raising=False)
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(MODEL))
    defaults = {M: default_config(M, 8, 512, 1024, 2, None, None) for M in SIZES}
    space = {"BLOCK_SIZE_M": [16, 32, 64], "BLOCK_SIZE_N": [32, 64, 128], "BLOCK_SIZE_K": [64, 128],
             "GROUP_SIZE_M": [1], "num_warps": [4, 8], "num_stages": [3, 4]}
    for d in defaults.values():  # the space holds every default: a fallback is always writable
        for k in KNOBS:
            space[k] = sorted(set(space[k]) | {getattr(d, k)})
    (tmp_path / "space.json").write_text(json.dumps(space))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["tune", str(tmp_path / "m" / "config.json"), "--batch-sizes",
                                 ",".join(map(str, SIZES)), "--search-space", str(tmp_path / "space.json"),
                                 "--out", str(out), "--gpus", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    table = next(out.glob("E=8,N=512,device_name=*.json"))
    entries = {int(k): KernelConfig.from_dict(v) for k, v in json.loads(table.read_text()).items()
               if k != "triton_version"}
    df = pd.read_csv(table.with_suffix(".csv"))
    assert {"ab_margin", "ab_threshold", "decision"} <= set(df.columns)
    for M, cfg in entries.items():
        rows = df[df.batch_size == M]
        decision = rows.decision.iloc[0]
        won = rows[rows.is_winner]
        assert {KernelConfig(*(int(won.iloc[0][k]) for k in KNOBS))} == {cfg}
        if decision.startswith("default:"):  # the default config (or its GROUP_SIZE_M twin): no A/B needed
            assert all(getattr(cfg, k) == getattr(defaults[M], k) for k in KNOBS if k != "GROUP_SIZE_M"), (M, cfg)
            continue
        ab = rows[rows.phase == "ab"]
        assert len(ab) == 1 and ab.iloc[0].config == cfg.short() and ab.iloc[0].status == "ok", (M, decision)
        assert int(ab.iloc[0].replays) == AB_ROUNDS
        margin, thr = float(ab.iloc[0].ab_margin), float(ab.iloc[0].ab_threshold)
        assert thr >= MIN_MARGIN and margin >= thr, (M, margin, thr, decision)
        assert decision.startswith("winner: margin"), (M, decision)
