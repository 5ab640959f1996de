"""`moeplan diff` through the real app: two tables, two folders, JSON, exit codes, bad input."""

import json

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app
from moeplan.engines.knobs import KernelConfig
from moeplan.tables.table import TuningTable, write_table

runner = CliRunner()
NAME = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
OTHER = "E=8,N=1792,device_name=NVIDIA_H100_80GB_HBM3.json"
C1 = KernelConfig(16, 64, 128, 1, 4, 3)
C2 = KernelConfig(16, 128, 128, 1, 4, 4)  # N and stages differ from C1
C3 = KernelConfig(64, 128, 64, 16, 8, 3)


def run(*args):
    return runner.invoke(app, list(args))


def tables(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_table(a / NAME, TuningTable({1: C1, 2: C1, 64: C3}, "3.4.0"))
    write_table(b / NAME, TuningTable({1: C2, 2: C1, 128: C3}, "3.5.0"))
    return a, b


def test_two_tables_per_batch_size(tmp_path):
    a, b = tables(tmp_path)
    r = run("diff", str(a / NAME), str(b / NAME), "--wide")  # one line per table (tests/test_user_output: compact)
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        f"{NAME}: 1 of 4 batch size(s) changed, 1 only in A, 1 only in B; triton_version 3.4.0 -> 3.5.0",
        "  M=1: BLOCK_SIZE_N 64 -> 128, num_stages 3 -> 4",
        "  M=64: only in A (M64/N128/K64/G16/w8/s3)",
        "  M=128: only in B (M64/N128/K64/G16/w8/s3)",
        "1 table(s) differ"]


def test_identical_tables_exit_0(tmp_path):
    a, _ = tables(tmp_path)
    r = run("diff", str(a / NAME), str(a / NAME), "--wide")
    assert (r.exit_code, r.stdout) == (0, f"{NAME}: 0 of 3 batch size(s) changed, 0 only in A, 0 only in B\nidentical\n")


def test_folders_matched_by_name_json(tmp_path):
    a, b = tables(tmp_path)
    write_table(b / OTHER, TuningTable({1: C1}))
    r = run("diff", str(a), str(b), "--json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert (d["a"], d["b"], d["identical"], d["only_a"], d["only_b"]) == (str(a), str(b), False, [], [OTHER])
    (t,) = d["tables"]
    assert t["file_name"] == NAME and t["triton_version"] == {"a": "3.4.0", "b": "3.5.0"}
    assert [(e["M"], e["change"]) for e in t["batch_sizes"]] == [(1, "changed"), (2, "same"), (64, "only_a"),
                                                                  (128, "only_b")]
    assert t["batch_sizes"][0]["knobs"] == {"BLOCK_SIZE_N": [64, 128], "num_stages": [3, 4]}
    assert t["batch_sizes"][0]["a"] == C1.to_dict() and t["batch_sizes"][2]["b"] is None


def test_bad_input_one_line_exit_2(tmp_path):
    a, _ = tables(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    for args, needle in [
        ((str(a), str(a / NAME)), "are not both files or both folders"),
        ((str(tmp_path / "nope"), str(a)), f"A '{tmp_path / 'nope'}' does not exist"),
        ((str(tmp_path / "bad.json"), str(a / NAME)), "not valid JSON"),
    ]:
        r = run("diff", *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("moeplan: error: ")


TINY = "E=4,N=32,device_name=NVIDIA_H100_80GB_HBM3.json"
S1 = KernelConfig(16, 32, 32, 1, 4, 2)
S2 = KernelConfig(16, 64, 32, 1, 4, 2)


@pytest.mark.interpreter
def test_measure_times_what_each_engine_would_run(tmp_path, tiny_model, cost_model_timer):
    """Under the interpreter with the cost-model timer the times are the model's, so exact."""
    from moeplan.tune.measure import model_time_us

    d = tiny_model.parent
    a, b = tmp_path / "a.json", tmp_path / "b"
    b.mkdir()
    write_table(a, TuningTable({2: S1, 8: S1}))
    write_table(b / TINY, TuningTable({2: S2, 16: S1}))
    (tmp_path / "a").mkdir()
    write_table(tmp_path / "a" / TINY, TuningTable({2: S1, 8: S1}))
    r = run("diff", str(tmp_path / "a"), str(b), "--measure", "--model", str(d / "config.json"), "--interpret", "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["measured_on"] == "Triton's CPU interpreter"
    # M=2: S1 vs S2; M=8: A's own S1 vs B's nearest key 2 (S2); M=16: both run S1 (A's nearest is 8): not timed
    rows = out["tables"][0]["measured"]
    assert [(x["M"], x["a"], x["b"]) for x in rows] == [(2, S1.to_dict(), S2.to_dict()), (8, S1.to_dict(), S2.to_dict())]
    for x in rows:
        ta, tb = model_time_us(S1, x["M"], 4, 2), model_time_us(S2, x["M"], 4, 2)
        assert (x["a_us"], x["b_us"]) == (pytest.approx(ta), pytest.approx(tb))
        assert x["speedup"] == pytest.approx(ta / tb)
    r = run("diff", str(a), str(b / TINY), "--measure", "--interpret")
    assert r.exit_code == 2 and "--measure needs --model MODEL" in r.stderr
    r = run("diff", str(tmp_path / "a"), str(b), "--measure", "--model", str(d / "config.json"), "--tp", "2",
            "--interpret")
    assert r.exit_code == 2 and f"{TINY} is not a table of" in r.stderr
