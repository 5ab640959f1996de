"""The evidence rule end to end: `moeplan tune` in the CPU interpreter on a tiny model, scored by
the deterministic cost model (MOEPLAN_TUNE_TIMER=model; MOEPLAN_TUNE_MODEL_NOISE gives the A/B
rounds a controlled spread). The real worker runs every point, the A/B phase included."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.tune.evidence import MIN_MARGIN

TABLE = "E=4,N=32,device_name=cpu_interpreter.json"
CSV = TABLE[:-5] + ".csv"
DEFAULT = KernelConfig(16, 64, 128, 1, 4, 4)  # the engine's default for the tiny model at M=2 and 8
BEST = KernelConfig(16, 64, 64, 1, 4, 3)  # the cost model's optimum there (about 13% ahead)
WITH_DEFAULT = {"BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [64], "BLOCK_SIZE_K": [64, 128], "GROUP_SIZE_M": [1],
                "num_warps": [4], "num_stages": [3, 4]}
AB_COLUMNS = {"ab_candidate", "ab_candidate_us", "ab_default_us", "ab_candidate_spread", "ab_default_spread",
              "ab_pooled_spread", "ab_margin", "ab_threshold", "decision"}

pytestmark = pytest.mark.interpreter  # runs the real kernel in the CPU interpreter, GPU or not


@pytest.fixture(autouse=True)
def model_timer(monkeypatch):
    monkeypatch.setenv("MOEPLAN_TUNE_TIMER", "model")
    monkeypatch.delenv("MOEPLAN_TUNE_FAULT", raising=False)
    monkeypatch.delenv("MOEPLAN_TUNE_MODEL_NOISE", raising=False)


def tune(tiny_model, tmp_path, space: dict, out, sizes: str):
    from moeplan.cli.app import app

    f = tmp_path / f"space{len(list(tmp_path.glob('space*')))}.json"
    f.write_text(json.dumps(space))
    return CliRunner().invoke(app, ["tune", str(tiny_model), "--interpret", "--batch-sizes", sizes,
                                    "--search-space", str(f), "--out", str(out), "--quiet"])


def flat(text: str) -> str:
    """The output with rich's wrapping undone (words joined by one space)."""
    return " ".join(text.split())


def entry(out, M) -> KernelConfig:
    return KernelConfig.from_dict(json.loads((out / TABLE).read_text())[str(M)])


def test_clear_winner_csv_columns_and_resume_inside_the_ab_phase(tiny_model, tmp_path):
    out = tmp_path / "clean"
    r = tune(tiny_model, tmp_path, WITH_DEFAULT, out, "2,8")
    assert r.exit_code == 0, r.output
    assert entry(out, 2) == BEST and entry(out, 8) == BEST
    df = pd.read_csv(out / CSV)
    assert AB_COLUMNS <= set(df.columns)
    assert {"batch_size", "phase", "median_us", "is_winner", "is_default", "floor_us"} <= set(df.columns)
    for M in (2, 8):
        rows = df[df.batch_size == M]
        assert rows.decision.nunique() == 1
        ab = rows[rows.phase == "ab"]
        assert len(ab) == 1 and ab.iloc[0].config == BEST.short() and bool(ab.iloc[0].is_winner)
        margin, thr = float(ab.iloc[0].ab_margin), float(ab.iloc[0].ab_threshold)
        assert margin >= thr == MIN_MARGIN  # no noise: the threshold is the 1% floor
        assert ab.iloc[0].decision == f"winner: margin {100 * margin:.1f}% >= 1.0%"
        # the model times the default slower: its A/B time is the default's confirmed time
        conf_d = rows[(rows.phase == "confirm") & rows.is_default].iloc[0].median_us
        assert float(ab.iloc[0].ab_default_us) == pytest.approx(conf_d)
        won = rows[rows.is_winner]
        assert set(won.config) == {BEST.short()}
    assert "0 of 2 entries kept the default config; 2 tuned entries beat the default in the A/B" in flat(r.output)
    # interrupted inside the A/B phase: only the first A/B record (and a torn line) reached the disk
    records = next(out.glob(".moeplan-tune/*/records.jsonl"))
    lines = records.read_text().splitlines()
    first_ab = next(i for i, l in enumerate(lines) if json.loads(l)["phase"] == "ab")
    assert sum(json.loads(l)["phase"] == "ab" for l in lines) == 2
    records.write_text("\n".join(lines[:first_ab + 1]) + "\n" + lines[first_ab + 1][:20])
    clean_table = (out / TABLE).read_bytes()
    (out / TABLE).unlink()
    (out / CSV).unlink()
    r = tune(tiny_model, tmp_path, WITH_DEFAULT, out, "2,8")
    assert r.exit_code == 0, r.output
    assert (out / TABLE).read_bytes() == clean_table
    again = pd.read_csv(out / CSV)
    cols = ["batch_size", "phase", "config", "is_winner", *sorted(AB_COLUMNS)]
    key = ["batch_size", "phase", "config"]
    assert again[cols].sort_values(key).reset_index(drop=True).equals(df[cols].sort_values(key).reset_index(drop=True))
    n = len(records.read_text().splitlines())
    assert n == len(lines) + 1  # only the missing A/B point was measured (plus the torn line, skipped)


def test_a_noisy_winner_leaves_the_default(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEPLAN_TUNE_MODEL_NOISE", f"0.2@{BEST.short()}")
    out = tmp_path / "out"
    r = tune(tiny_model, tmp_path, WITH_DEFAULT, out, "2")
    assert r.exit_code == 0, r.output
    assert entry(out, 2) == DEFAULT
    df = pd.read_csv(out / CSV)
    ab = df[df.phase == "ab"].iloc[0]
    assert ab.config == BEST.short() and not ab.is_winner
    assert float(ab.ab_candidate_spread) > 0.1 and float(ab.ab_threshold) > float(ab.ab_margin) > MIN_MARGIN
    assert ab.decision == (f"default: margin {100 * ab.ab_margin:.1f}% < threshold {100 * ab.ab_threshold:.1f}%")
    won = df[df.is_winner]
    assert set(won.config) == {DEFAULT.short()} and set(won.phase) >= {"confirm", "check"}
    assert won[won.phase == "check"].iloc[0].status == "ok"  # gated before it was written
    assert ("1 of 1 entries kept the default config (1 margin below the threshold); replaced by the default at "
            "M=2 (tuned pick not ahead on evidence)") in flat(r.output)


def test_a_space_without_the_default_writes_its_config_and_warns_once(tiny_model, tmp_path):
    only = {"BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32], "BLOCK_SIZE_K": [32], "GROUP_SIZE_M": [1],
            "num_warps": [4], "num_stages": [2]}
    out = tmp_path / "out"
    r = tune(tiny_model, tmp_path, only, out, "2,8")
    assert r.exit_code == 0, r.output
    cfg = KernelConfig(16, 32, 32, 1, 4, 2)
    assert entry(out, 2) == cfg and entry(out, 8) == cfg
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1, r.stderr
    assert TABLE in warnings[0] and "M=2 (" in warnings[0] and "M=8 (" in warnings[0]
    df = pd.read_csv(out / CSV)
    for M in (2, 8):
        ab = df[(df.batch_size == M) & (df.phase == "ab")].iloc[0]
        slower = -float(ab.ab_margin)
        assert slower > 0 and ab.decision == f"space excludes default: {100 * slower:.1f}% slower than the default"
        assert f"{100 * slower:.1f}% slower" in warnings[0]
    assert "the search space excludes the default and is SLOWER than it at M=2,8" in flat(r.output)
    assert {k: int(df[df.is_winner].iloc[0][k]) for k in KNOBS} == cfg.to_dict()
