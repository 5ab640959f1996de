"""Every data path moeplan uses by default, decided here and nowhere else.

Two ways the package can sit on disk:
- a source checkout (editable install, or PYTHONPATH): the presets and moeplan's own tables are
  the repository's top-level `configs/` and `tuned/`;
- a wheel or `pip install .`: `setup.py` copies those two folders into the package as
  `moeplan/_data/configs` and `moeplan/_data/tuned`.

Tables a user tunes go to `./tuned` (relative to the working directory), and the default
lookup (`resolve`, `matrix`) tries that folder first, then the shipped tables, so `tune`
with no `--out` and `resolve` with no `--tuned-dir` agree. In a checkout, run from its top,
both are the same folder.

No I/O at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

PRESETS_ENV = "MOEPLAN_PRESETS_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # moeplan/ (this file is moeplan/base/paths.py)
BUNDLED_DATA = PACKAGE_DIR / "_data"  # filled by setup.py's build step in wheels
CHECKOUT_ROOT = PACKAGE_DIR.parent
DEFAULT_OUT = "tuned"  # where `moeplan tune` writes unless --out says otherwise


def data_root() -> Path:
    """The folder holding `configs/` and `tuned/`: the package's bundled copy when installed
    from a wheel, else the checkout's top level."""
    if (BUNDLED_DATA / "configs").is_dir():
        return BUNDLED_DATA
    return CHECKOUT_ROOT


def presets_dir() -> Path:
    """Folder of the model preset JSON files (`$MOEPLAN_PRESETS_DIR` overrides)."""
    env = os.environ.get(PRESETS_ENV)
    return Path(env) if env else data_root() / "configs"


def shipped_tables_dir() -> Optional[Path]:
    """moeplan's own committed tables, or None when this install has none."""
    d = data_root() / "tuned"
    return d if d.is_dir() else None


def default_out_dir() -> Path:
    """Where `tune` writes tables, CSVs and checkpoints by default (the working folder's tuned/)."""
    return Path(DEFAULT_OUT)


def default_tuned_dirs() -> list[str]:
    """Folders the default lookup tries, in order: the default output folder (if it exists),
    then the shipped tables; one entry per real folder."""
    out, seen = [], set()
    for d in (default_out_dir(), shipped_tables_dir()):
        if d is None or not d.is_dir():
            continue
        real = os.path.realpath(d)
        if real not in seen:
            seen.add(real)
            out.append(str(d.resolve()))
    return out
