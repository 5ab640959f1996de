"""Is a table still what this installation would produce? And where is a table found?

A moeplan table is stale when:
- its `triton_version` differs from the installed Triton's (or it records none): a new
  compiler changes which config is fastest;
- the engine profile it was tuned for (the `engine_profile` column of the measurements CSV
  beside it) is not the current one; a CSV without that column counts as profile unknown;
- the measurements CSV beside it is missing (nothing to tell how it was made).
An SGLang table (in a `configs/triton_<X_Y_Z>/` folder) records no version key: its Triton is
the folder's, and it is stale when that is not the installed Triton's (SGLang reads the
installed version's folder first, so a table in another folder is only reached by fallback).

Tables shipped inside the installed engine are the engine's own: found, never judged stale.

No I/O at import; the installed Triton's version is read from package metadata (Triton is
never imported here), the engine profile from `moeplan.engine` (pure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from moeplan.base.errors import TableError

PROFILE_COLUMN = "engine_profile"
PRESENT, STALE, MISSING = "present", "stale", "missing"


@dataclass(frozen=True)
class Installation:
    """What tables are judged against."""

    triton_version: Optional[str]  # None: Triton not installed, the version check is skipped
    engine_profile: str


def current_installation() -> Installation:
    from importlib import metadata

    from moeplan.engines.registry import choose_profile

    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = None
    return Installation(triton, choose_profile(None).profile.name)


def csv_beside(table_path: str | os.PathLike) -> Path:
    p = Path(table_path)
    return p.with_name(p.name[:-5] + ".csv" if p.name.endswith(".json") else p.name + ".csv")


def recorded_profiles(csv_path: Path) -> Optional[set[str]]:
    """The engine profiles named in a measurements CSV (read through the input layer: PlanError,
    one line naming the file and line, when it is not a regular, bounded CSV); None when it has no
    such column."""
    from moeplan.tables.measurements import engine_profiles

    return engine_profiles(csv_path)


def stale_reasons(table_path: str | os.PathLike, inst: Installation) -> list[str]:
    """Why a table is stale (empty: it is current)."""
    from moeplan.tables.table import load_table

    from moeplan.tables.verify import table_engine

    reasons = []
    engine = table_engine(table_path)
    try:
        version = load_table(table_path, engine).triton_version
    except TableError as e:
        return [f"unreadable ({e})"]
    folder = Path(table_path).parent.name
    if engine == "sglang" and folder.startswith("triton_"):
        from moeplan.engines.sglang import version_folder

        if inst.triton_version is not None and folder != version_folder(inst.triton_version):
            reasons.append(f"in SGLang folder {folder}, installed Triton {inst.triton_version} reads "
                           f"{version_folder(inst.triton_version)} first (reached only by fallback)")
    elif inst.triton_version is not None and version != inst.triton_version:
        reasons.append(f"tuned with Triton {version}, installed {inst.triton_version}" if version
                       else f"records no triton_version (installed {inst.triton_version})")
    csv_path = csv_beside(table_path)
    if not os.path.lexists(csv_path):
        reasons.append(f"no measurements CSV ({csv_path.name}) beside it")
        return reasons
    profiles = recorded_profiles(csv_path)  # a folder, FIFO or corrupt CSV there is an error, not a reason
    if profiles is None:
        reasons.append(f"engine profile unknown (the CSV has no {PROFILE_COLUMN} column), current {inst.engine_profile}")
    elif profiles != {inst.engine_profile}:
        was = ", ".join(sorted(profiles)) or "none recorded"
        reasons.append(f"tuned for engine profile {was}, current {inst.engine_profile}")
    return reasons


@dataclass(frozen=True)
class TableStatus:
    status: str  # present | stale | missing
    found: Optional[str]  # the path the engine would load, if any
    reasons: tuple[str, ...] = ()
    from_engine: bool = False


def table_status(file_name: str, tuned_dirs: Sequence[str], env: Mapping[str, str], engine_dir: Optional[str],
                 inst: Installation, down_name: Optional[str] = None) -> TableStatus:
    """Where the engine would find `file_name` (its env folder, the tuned dirs standing in for
    a team's folder, then its own shipped tables), and whether that table is current.
    Under an SGLang profile the folders are roots of `configs/triton_<X_Y_Z>/` (SGLang's lookup,
    `moeplan.tables.sglang_lookup`), and a tuned table whose `_down` pair (`down_name`) is missing
    is stale: GEMM2 would run the up entries."""
    from moeplan.engines.registry import get_profile

    profile = get_profile(inst.engine_profile)
    if profile.engine == "sglang":
        return _sglang_status(file_name, tuned_dirs, env, engine_dir, inst, down_name)
    from moeplan.tables.lookup import locate_table

    return _status(locate_table(file_name, tuned_dirs, env, engine_dir), inst)  # engine folder last


def _status(where: dict, inst: Installation, down_name: Optional[str] = None) -> TableStatus:
    """A lookup's result judged: missing, the engine's own (never stale), or moeplan's with its
    stale reasons (and, for an SGLang pair, a missing `_down` beside it)."""
    path = where["found"]
    if path is None:
        return TableStatus(MISSING, None)
    if where["source"] == "engine":
        return TableStatus(PRESENT, path, (), True)
    reasons = list(stale_reasons(path, inst))
    if down_name is not None and not os.path.isfile(os.path.join(os.path.dirname(path), down_name)):
        reasons.append(f"no {down_name} beside it (GEMM2 runs the up entries)")
    return TableStatus(STALE if reasons else PRESENT, path, tuple(reasons))


def _sglang_status(file_name: str, tuned_dirs: Sequence[str], env: Mapping[str, str], engine_dir: Optional[str],
                   inst: Installation, down_name: Optional[str]) -> TableStatus:
    from moeplan.engines import sglang
    from moeplan.tables.sglang_lookup import locate

    tv = inst.triton_version or sglang.PINNED_TRITON[inst.engine_profile]
    return _status(locate(file_name, tuned_dirs, env, engine_dir, tv, inst.engine_profile), inst, down_name)
