"""What this process created on disk, recorded as it creates it, so that a failed run removes
exactly that and never another process's work.

A folder counts as this process's only when its own `mkdir` made it: a folder that appeared
in between (another `moeplan tune` of the same `--out`) makes `mkdir` fail with EEXIST and
is never recorded. Nothing is decided by comparing with a snapshot taken earlier, which is
what let a run that lost the lock race delete the winner's lock, checkpoint and `--out`.

Shared folders (`--out`, `.moeplan-tune`) are removed only when empty (`rmdir`), so even a
folder this process made is kept once another process has put something in it. Per-table
things (the checkpoint folder, the lock file) are removed only by the process holding that
table's lock (see `moeplan.tune.lock`). `report` records its folders and pictures the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from moeplan.base.errors import MoeplanError


def _mkdir(path: Path) -> None:
    """One folder, or FileExistsError (a seam for the lock-race test)."""
    os.mkdir(path)


def make_dirs(path: os.PathLike | str) -> list[Path]:
    """Create `path` and its missing parents; returns the folders this call made, outermost
    first. A parent that vanishes half-way (another run's clean-up removed it, empty) is made
    again, a few times."""
    path = Path(path)
    made: list[Path] = []
    for _ in range(5):
        try:
            for p in [*reversed(path.parents), path]:
                if p.is_dir():
                    continue
                try:
                    _mkdir(p)
                except FileExistsError:
                    if not p.is_dir():
                        raise NotADirectoryError(20, "Not a directory", str(p)) from None
                    continue  # another process made it: not ours
                made.append(p)
            return made
        except FileNotFoundError:
            continue
    raise MoeplanError(f"{str(path)!r}: its folders keep disappearing while being created; is another process "
                    "removing them?")


def remove_empty(folders: list[Path]) -> None:
    """Remove the given folders, innermost first, each only when it is empty."""
    for d in reversed(folders):
        try:
            d.rmdir()
        except OSError:
            pass


class Ledger:
    """The folders (`--out` and its parents) and files one run created."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.files: list[Path] = []

    def make_dirs(self, path: os.PathLike | str) -> None:
        self.dirs += make_dirs(path)

    def make_out(self, path: os.PathLike | str, option: str, error=MoeplanError) -> None:
        """`make_dirs` for an output folder option: an OSError becomes one `error` line naming it."""
        from moeplan.base.safeio import shown

        try:
            self.make_dirs(path)
        except OSError as e:
            raise error(f"{option} {shown(str(path))}: cannot create the folder ({e.strerror or e})") from None

    def new_file(self, path: os.PathLike | str) -> Path:
        """`path`, recorded as this run's when nothing is there yet (call just before writing it)."""
        path = Path(path)
        if not os.path.lexists(path):
            self.files.append(path)
        return path

    def undo(self) -> None:
        for f in reversed(self.files):
            f.unlink(missing_ok=True)
        remove_empty(self.dirs)
        self.dirs, self.files = [], []
