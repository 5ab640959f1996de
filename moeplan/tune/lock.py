"""One tuner per table and output folder: a lock file beside the table.

Two `moeplan tune` runs of the same table into the same folder would both do the whole job
and append to one checkpoint. The lock is `<out>/.<table file name>.lock`, held with an
exclusive `flock` for as long as the job runs. The second run does not wait: it gets
`TableBusy` (one line naming the holder's pid and host, exit code 2; `tune --matrix` skips
the table instead and tunes the others), because a CI job waiting hours on another job's
table is worse than a clear message.

A lock left behind by a process that died (kill -9, a lost node) is no lock at all: the
kernel drops an flock with its holder, so the next run takes it over and the holder
information in the file is rewritten. The file itself is never deleted: removing it
while another process has it open would let two processes lock two different files.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from moeplan.base.errors import TuneError


class TableBusy(TuneError):
    """Another live process holds this table's lock."""


def lock_path(out_dir: str | os.PathLike, table_file: str) -> Path:
    return Path(out_dir) / f".{table_file}.lock"


class TableLock:
    """`with TableLock(out_dir, name):` ... ; raises TableBusy when another process holds it."""

    def __init__(self, out_dir: str | os.PathLike, table_file: str):
        self.path = lock_path(out_dir, table_file)
        self.table_file = table_file
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            who = (f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process")
            raise TableBusy(f"{self.table_file} is being tuned into this folder by {who} (lock {self.path}); "
                            "wait for it to finish, or use another --out") from None
        # ours: record who holds it, for the message the next run prints
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "TableLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        d = json.loads(data.decode()) if data else {}
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}
