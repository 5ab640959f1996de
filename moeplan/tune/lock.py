"""One tuner per table and output folder: a lock file beside the table.

Two `moeplan tune` runs of the same table into the same folder would both do the whole job
and append to one checkpoint. The lock is `<out>/.<table file name>.lock`, held with an
exclusive `flock` for as long as the job runs. The second run does not wait: it gets
`TableBusy` (one line naming the holder's pid and host, exit code 2; `tune --matrix` skips
the table instead and tunes the others), because a CI job waiting hours on another job's
table is worse than a clear message.

A lock left behind by a process that died (kill -9, a lost node) is no lock at all: the
kernel drops an flock with its holder, so the next run takes it over and the holder
information in the file is rewritten. A run that fails removes the lock file only if it
created it, and only while it still holds it; a run that finds, once it holds the lock, that
the file is no longer the one at the path (its holder removed it) takes the new one instead, so
two processes never hold two different files of one table.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

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
        self.created = False  # this process made the lock file (set by acquire)

    def acquire(self, make_folder: Optional[Callable[[], None]] = None) -> None:
        """Take the lock or raise TableBusy. `created` says whether this call made the lock file
        (only then may a failed run remove it, and only while still holding it). `make_folder`
        makes the folder again if it vanished (another run's clean-up removed it, empty)."""
        for _ in range(10):
            created = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                created = False
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:
                    continue  # removed in between by its holder: try again
            except FileNotFoundError:
                if make_folder is None:
                    raise
                make_folder()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd)
                os.close(fd)
                who = (f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process")
                raise TableBusy(f"{self.table_file} is being tuned into this folder by {who} (lock {self.path}); "
                                "wait for it to finish, or use another --out") from None
            if not _same_file(fd, self.path):  # its holder removed it before we locked it: a dead file
                os.close(fd)
                continue
            # ours: record who holds it, for the message the next run prints
            info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            self._fd, self.created = fd, created
            return
        raise TuneError(f"{self.table_file}: cannot take the lock {self.path}: it keeps being replaced")

    def release(self, remove: bool = False) -> None:
        """Unlock; with `remove`, also delete the lock file if this process created it (a failed
        run leaves nothing behind). It is unlinked while still locked, and a run that opened it
        meanwhile sees that it is no longer the file at the path and takes the new one."""
        if self._fd is not None:
            if remove and self.created and _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
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


def _same_file(fd: int, path: Path) -> bool:
    """`fd` is still the file at `path` (not one removed and re-created meanwhile)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
