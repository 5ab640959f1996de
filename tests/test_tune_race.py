"""The lock race, made deterministic: a second `tune` of a table pauses inside its own folder
creation while a first run takes the table's lock and makes its checkpoint and output. The
second must exit 2 (or, with --matrix, skip the table) and remove nothing of the first's: the
first's lock, checkpoint folder and --out survive, and a third run is still refused.

Cheap (no kernel runs: the loser stops at the lock), so `MOEPLAN_RACE_REPEAT=100` runs each
race 100 times in one process (a few seconds); the suite runs it once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.base.errors import TuneError
from moeplan.cli.app import app
from moeplan.base import ledger
from moeplan.tune.checkpoint import Checkpoint
from moeplan.tune.lock import TableLock, lock_path

pytestmark = pytest.mark.interpreter
TABLE = "E=4,N=32,device_name=cpu_interpreter.json"  # tp=1 of the tiny model
TABLE2 = "E=4,N=16,device_name=cpu_interpreter.json"  # tp=2
REPEAT = int(os.environ.get("MOEPLAN_RACE_REPEAT", "1"))


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


class FirstRun:
    """What a live first run has when the second starts: the lock held, a checkpoint with a
    measured point, a file of its own in --out."""

    def __init__(self, out: Path, table: str = TABLE):
        os.makedirs(out, exist_ok=True)
        self.lock = TableLock(out, table)
        self.lock.acquire()
        ckpt = Checkpoint(out / ".moeplan-tune" / f"{table[:-5]}.0123456789ab")
        ckpt.start({"table": table})
        ckpt.records_path.write_text('{"phase": "screen"}\n')
        (out / "progress.txt").write_text("measuring")
        self.out = out

    def release(self) -> None:
        self.lock.release()


def _pause_in_mkdir(monkeypatch, out: Path, when: str, start_first, started: list) -> None:
    """The second run's mkdir of `out`: the first run starts just before it (`before`: the
    second's mkdir then finds the folder made by the first) or just after (`after`: the
    second made --out, the first puts its lock in it)."""
    real = ledger._mkdir

    def paused(p):
        if Path(p) != out or started:
            return real(p)
        if when == "after":
            real(p)
            started.append(start_first())
            return None
        started.append(start_first())
        return real(p)  # FileExistsError: the second run never owned --out

    monkeypatch.setattr(ledger, "_mkdir", paused)


def _tune(model: Path, out: Path, *extra) -> object:
    return CliRunner().invoke(app, ["tune", str(model), "--interpret", "--batch-sizes", "2", "--out", str(out),
                                    *extra])


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_loser_of_the_lock_race_removes_nothing(tmp_path, tiny_model, cost_model_timer, monkeypatch, when):
    for i in range(REPEAT):
        out = tmp_path / f"run{i}" / "out"
        started: list = []
        _pause_in_mkdir(monkeypatch, out, when, lambda: FirstRun(out), started)
        r = _tune(tiny_model.parent, out)
        assert started, "the second run never paused in its folder creation"
        first = started[0]
        try:
            msg = (f"moeplan: error: {TABLE} is being tuned into this folder by process {os.getpid()} on "
                   f"{os.uname().nodename} (lock {lock_path(out, TABLE)}); wait for it to finish, or use another --out")
            assert (r.exit_code, r.stdout, r.stderr.splitlines()) == (2, "", [msg])
            assert lock_path(out, TABLE).is_file()  # the first run's lock,
            assert (out / ".moeplan-tune" / f"{TABLE[:-5]}.0123456789ab" / "records.jsonl").is_file()  # checkpoint
            assert (out / "progress.txt").read_text() == "measuring"  # and output survive
            before = _tree(out)
            r3 = _tune(tiny_model.parent, out)  # a third run is still refused: the lock still works
            assert (r3.exit_code, r3.stdout, r3.stderr.splitlines()) == (2, "", [msg])
            assert _tree(out) == before
        finally:
            first.release()


def test_a_matrix_run_skips_the_busy_table_and_cleans_only_its_own(tmp_path, tiny_model, cost_model_timer,
                                                                   monkeypatch):
    """`tune --matrix`: the busy table is skipped; the other table's run then fails, and its clean-up
    removes that table's checkpoint and lock, never the busy table's."""
    from moeplan.tune import job

    monkeypatch.setenv("VLLM_TUNED_CONFIG_FOLDER", "")
    monkeypatch.setattr("moeplan.engines.vllm.engine_config_dir", lambda: None)

    def fail(*_a, **_k):
        raise TuneError("routing pools cannot be drawn (injected)")

    monkeypatch.setattr(job, "make_pools", fail)
    m = tmp_path / "m.toml"
    m.write_text(f'models = ["{tiny_model.parent}"]\ndevices = ["cpu_interpreter"]\nbatch_sizes = [2]\n'
                 '[[layouts]]\ntp = 1\n[[layouts]]\ntp = 2\n')
    for i in range(REPEAT):
        out = tmp_path / f"run{i}" / "out"
        started: list = []
        _pause_in_mkdir(monkeypatch, out, "after", lambda: FirstRun(out, TABLE), started)
        r = CliRunner().invoke(app, ["tune", "--matrix", str(m), "--interpret", "--out", str(out)])
        first = started[0]
        try:
            assert r.exit_code == 2 and r.stderr.splitlines() == ["moeplan: error: routing pools cannot be drawn "
                                                                  "(injected)"], r.output
            assert f"skipped: {TABLE} is being tuned" in r.stdout
            assert lock_path(out, TABLE).is_file() and (out / "progress.txt").is_file()
            assert (out / ".moeplan-tune" / f"{TABLE[:-5]}.0123456789ab" / "records.jsonl").is_file()
            assert not lock_path(out, TABLE2).exists()  # the failed table's own lock and checkpoint are gone
            assert sorted(p.name for p in (out / ".moeplan-tune").iterdir()) == [f"{TABLE[:-5]}.0123456789ab"]
        finally:
            first.release()


def test_a_failed_run_removes_its_lock_file_only_while_holding_it(tmp_path):
    """The lock file a failed run made is unlinked while still locked; a run that opened the old
    file meanwhile notices and takes the new one, so two runs never hold two files of one table."""
    a = TableLock(tmp_path, TABLE)
    a.acquire()
    assert a.created
    late = os.open(lock_path(tmp_path, TABLE), os.O_RDWR)  # a second run that opened the file, not yet locked
    a.release(remove=True)
    assert not lock_path(tmp_path, TABLE).exists()
    b = TableLock(tmp_path, TABLE)
    b.acquire()  # a new file
    try:
        import fcntl
        fcntl.flock(late, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode is free, but no longer the lock
        assert os.fstat(late).st_ino != os.stat(lock_path(tmp_path, TABLE)).st_ino
        with pytest.raises(Exception, match="being tuned"):
            TableLock(tmp_path, TABLE).acquire()
    finally:
        os.close(late)
        b.release()
    c = TableLock(tmp_path, TABLE)
    c.acquire()  # an existing file: not this run's to remove
    assert not c.created
    c.release(remove=True)
    assert lock_path(tmp_path, TABLE).is_file()
    assert json.loads(lock_path(tmp_path, TABLE).read_text() or "{}") == {}
