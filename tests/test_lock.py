"""The per-table tuning lock, with real processes: a live holder refuses a second one
(naming it), a holder killed with SIGKILL leaves a lock the next process takes over."""

import json
import os
import signal
import subprocess
import sys

import pytest

from moeplan.tune.lock import TableBusy, TableLock, lock_path

NAME = "E=8,N=7168,device_name=NVIDIA_H100_80GB_HBM3.json"
HOLD = """
import sys, time
from moeplan.tune.lock import TableLock
lock = TableLock(sys.argv[1], sys.argv[2])
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""
TRY = """
import sys
from moeplan.tune.lock import TableBusy, TableLock
try:
    TableLock(sys.argv[1], sys.argv[2]).acquire()
except TableBusy as e:
    print(e)
    sys.exit(2)
print("acquired")
"""


def hold(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), NAME], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_process_is_refused_while_the_first_lives(tmp_path):
    holder = hold(tmp_path)
    try:
        r = subprocess.run([sys.executable, "-c", TRY, str(tmp_path), NAME], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2
        assert r.stdout.strip() == (f"{NAME} is being tuned into this folder by process {holder.pid} on "
                                    f"{os.uname().nodename} (lock {lock_path(tmp_path, NAME)}); wait for it to "
                                    "finish, or use another --out")
        with pytest.raises(TableBusy):  # and in this process too
            TableLock(tmp_path, NAME).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = hold(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads(lock_path(tmp_path, NAME).read_text())["pid"] == holder.pid  # left behind
    r = subprocess.run([sys.executable, "-c", TRY, str(tmp_path), NAME], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "acquired")
    with TableLock(tmp_path, NAME):
        assert json.loads(lock_path(tmp_path, NAME).read_text())["pid"] == os.getpid()
    with TableLock(tmp_path, NAME):  # released: takeable again, also by the same process
        pass


def test_other_tables_are_independent(tmp_path):
    with TableLock(tmp_path, NAME):
        with TableLock(tmp_path, "E=8,N=1792,device_name=NVIDIA_H100_80GB_HBM3.json"):
            pass
