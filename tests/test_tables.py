"""Tuning-table I/O: engine byte format, merging, and folder verification (pure Python)."""

import json
import os
import stat

import pytest

from moeplan.base.errors import TableError
from moeplan.engines.knobs import KNOBS, KernelConfig
from moeplan.tables.table import TuningTable, load_table, merge_tables, parse_table, write_table
from moeplan.tables.verify import verify_folder, verify_table_text

NAME = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
A = KernelConfig(16, 64, 128, 1, 4, 4)
B = KernelConfig(64, 128, 64, 16, 8, 3)


def engine_bytes(version, entries):
    """What the engine's tuner writes: json.dump(indent=4) + newline, triton_version first."""
    obj = {"triton_version": version}
    for m in sorted(entries):
        obj[str(m)] = {k: getattr(entries[m], k) for k in KNOBS}
    return json.dumps(obj, indent=4) + "\n"


def test_write_is_byte_exact_and_atomic(tmp_path):
    p = tmp_path / NAME
    t = TuningTable({64: B, 1: A}, "3.6.0")
    write_table(p, t)
    assert p.read_text() == engine_bytes("3.6.0", {1: A, 64: B})
    assert list(json.loads(p.read_text())) == ["triton_version", "1", "64"]
    assert [x.name for x in tmp_path.iterdir()] == [NAME]  # no temp file left
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert mode & 0o044, "tables must be readable by others (mkstemp's 0600 is fixed)"
    assert load_table(p).entries == {1: A, 64: B}


def test_merge_adds_and_refuses_clashes():
    old = TuningTable({1: A, 64: B}, "3.6.0")
    new = TuningTable({2: B, 64: B}, "3.6.0")
    m = merge_tables(old, new)
    assert m.added == [2] and m.unchanged == [64] and m.replaced == []
    assert list(m.table.entries) == [1, 2, 64]
    with pytest.raises(TableError, match="batch sizes 1; pass --force"):
        merge_tables(old, TuningTable({1: B}, "3.6.0"))
    assert merge_tables(old, TuningTable({1: B}, "3.6.0"), replace=True).table.entries[1] == B
    with pytest.raises(TableError, match="Triton 3.5.0"):
        merge_tables(TuningTable({1: A}, "3.5.0"), TuningTable({2: A}, "3.6.0"))


def test_verify_accepts_engine_files(tmp_path):
    (tmp_path / NAME).write_text(engine_bytes("3.6.0", {1: A, 2: B}))
    res = verify_folder(tmp_path, strict_format=True)
    assert res == {NAME: []}


@pytest.mark.parametrize("mutate, needle", [
    (lambda o: o["1"].update(BLOCK_SIZE_N=48), "BLOCK_SIZE_N=48 is not a power of two"),
    (lambda o: o["1"].update(num_warps=3), "num_warps=3 is not one of"),
    (lambda o: o["1"].update(num_stages=0), "num_stages=0 is not a positive integer"),
    (lambda o: o["1"].pop("GROUP_SIZE_M"), "lacks GROUP_SIZE_M"),
    (lambda o: o["1"].update(extra=1), "unknown key(s) extra"),
    (lambda o: o.update({"x": {}}), "'x' is not a positive integer batch size"),
])
def test_verify_finds_bad_values(mutate, needle):
    obj = json.loads(engine_bytes("3.6.0", {1: A, 2: B}))
    mutate(obj)
    probs = verify_table_text(NAME, json.dumps(obj, indent=4) + "\n")
    assert any(needle in p for p in probs), probs


def test_verify_duplicates_order_and_name():
    text = engine_bytes("3.6.0", {1: A, 2: B})
    dup = text.replace('"2": {', '"1": {')
    assert any("appears more than once" in p for p in verify_table_text(NAME, dup))
    obj = json.loads(text)
    unsorted = {"triton_version": "3.6.0", "2": obj["2"], "1": obj["1"]}
    assert any("increasing order" in p for p in verify_table_text(NAME, json.dumps(unsorted, indent=4) + "\n"))
    assert any("does not follow" in p for p in verify_table_text("E=8,N=7168.json", text))
    assert any("canonical format" in p for p in verify_table_text(NAME, json.dumps(obj) + "\n", strict_format=True))
    assert verify_table_text(NAME, json.dumps(obj) + "\n") == []  # only --strict cares about whitespace


def test_verify_folder_errors(tmp_path):
    with pytest.raises(TableError, match="is not a folder"):
        verify_folder(tmp_path / "nope")
    with pytest.raises(TableError, match="holds no .json"):
        verify_folder(tmp_path)


def test_parse_table_rejects_garbage():
    with pytest.raises(TableError, match="not valid JSON"):
        parse_table("{", "t")
    with pytest.raises(TableError, match="appears twice|not a positive integer"):
        parse_table('{"01": {}}', "t")
