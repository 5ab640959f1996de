"""Where a tuning table is: the engine's lookup order over `$VLLM_TUNED_CONFIG_FOLDER`, the
`--tuned-dir`s (default `./tuned`, then moeplan's shipped tables) and the engine's own folder, and
what the engine itself would load.

Touches the file system only when called (`os.path.isfile`); nothing at import.
"""

from __future__ import annotations

import os
import shlex
from typing import Mapping, Optional, Sequence

from moeplan.engines.vllm import ENV_TUNED_FOLDER, lookup_candidates


def default_tuned_dirs() -> list[str]:
    """The default lookup folders: ./tuned (where `tune` writes), then moeplan's shipped tables."""
    from moeplan.base import paths

    return paths.default_tuned_dirs()


def find_table(file_name: str, tuned_dirs: Sequence[str], env: Mapping[str, str]) -> tuple[Optional[str], list[str]]:
    """(first existing path or None, every path tried), in the engine's order."""
    tried = lookup_candidates(file_name, tuned_dirs, env)
    for p in tried:
        if os.path.isfile(p):
            return p, tried
    return None, tried


def locate_table(file_name: str, tuned_dirs: Sequence[str], env: Mapping[str, str],
                 engine_dir: Optional[str]) -> dict:
    """Where a table is, and what the engine itself would load.

    moeplan looks in $VLLM_TUNED_CONFIG_FOLDER, the --tuned-dirs, then the engine's shipped
    folder; `source` is "tuned" (env folder or a --tuned-dir), "engine" or "missing". The
    engine only reads the env folder and its own folder (in that order): `engine_loads` is
    the file it would load, and `export` the line that makes it load a table that is only
    in a --tuned-dir.
    """
    tried = lookup_candidates(file_name, tuned_dirs, env)
    engine_path = None if engine_dir is None else engine_dir.rstrip("/") + "/" + file_name
    if engine_path is not None and engine_path not in tried:
        tried.append(engine_path)
    found = next((p for p in tried if os.path.isfile(p)), None)
    env_dir = env.get(ENV_TUNED_FOLDER)
    env_path = None if not env_dir else env_dir.rstrip("/") + "/" + file_name
    engine_loads = next((p for p in (env_path, engine_path) if p is not None and os.path.isfile(p)), None)
    source = "missing" if found is None else ("engine" if found == engine_path else "tuned")
    export = None
    if source == "tuned" and found != engine_loads:
        export = f"export {ENV_TUNED_FOLDER}={shlex.quote(os.path.dirname(os.path.abspath(found)))}"
    return {"found": found, "source": source, "engine_loads": engine_loads, "export": export, "tried": tried}


def check_tuned_dirs(tuned_dirs: Sequence[str], option: str = "--tuned-dir") -> None:
    """A folder the user named explicitly must be one: a typo is an error, never an empty lookup."""
    from moeplan.base.errors import TableError
    from moeplan.base.safeio import check_path, shown

    for d in tuned_dirs:
        check_path(option, d, "a folder of tuning tables")
        if not os.path.isdir(d):
            what = "is not a folder" if os.path.exists(d) else "does not exist"
            raise TableError(f"{option} {shown(d)} {what}; pass a folder of tuning tables (or leave {option} out: "
                             "./tuned, then moeplan's shipped tables)")
