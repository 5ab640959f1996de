"""Where SGLang finds a tuning table, and which file it will load (spec: sglang_engine.md §1.2-1.3, §1.7).

A root holds `configs/triton_<X_Y_Z>/<name>`. SGLang reads one root: `$SGLANG_MOE_CONFIG_DIR`
when set (0.5; the bundled root is then invisible), else its package's. In that root it tries
the serving Triton's folder, then (0.5) every other `triton_*` folder newest first; a `_down`
name found nowhere falls back to the up table's lookup; nothing found: the default rule.
moeplan looks in the same way in each `--tuned-dir` root (where `tune --engine sglang-...` writes).

Touches the file system only when called (`os.listdir`, `os.path.isfile`); nothing at import.
"""

from __future__ import annotations

import os
import shlex
from typing import Mapping, Optional, Sequence

from moeplan.engines import sglang


def find_in_root(root: str, name: str, triton_version: str, profile_name: str) -> dict:
    """The file SGLang would load for `name` from `root`: {path, folder, via ("exact" | "fallback"
    | None), tried, problem}. `problem`: what makes SGLang raise there (a missing `configs/` or a
    folder its sort cannot read), met only on a miss in the serving Triton's folder."""
    configs = os.path.join(root, "configs")
    first = os.path.join(configs, sglang.version_folder(triton_version), name)
    if os.path.isfile(first):
        return {"path": first, "folder": sglang.version_folder(triton_version), "via": "exact",
                "tried": [first], "problem": None}
    try:
        folders = sorted(os.listdir(configs))
    except OSError:
        folders = None
    if folders is None:
        problem = None if sglang.FIXED_FALLBACK.get(profile_name) else \
            f"{configs} is not a folder: SGLang raises FileNotFoundError on this miss"
        folders = []
    else:
        problem = None
    order, bad = sglang.folder_order(triton_version, folders, profile_name)
    tried = [os.path.join(configs, f, name) for f in order]
    for f, p in zip(order[1:], tried[1:]):
        if os.path.isfile(p):
            return {"path": p, "folder": f, "via": "fallback", "tried": tried[: tried.index(p) + 1],
                    "problem": None}
    return {"path": None, "folder": None, "via": None, "tried": tried, "problem": bad or problem}


def engine_root(env: Mapping[str, str], bundled: Optional[str], profile_name: str) -> tuple[Optional[str], str]:
    """(the one root SGLang reads, why)."""
    if sglang.HAS_ENV_DIR.get(profile_name, True) and env.get(sglang.ENV_CONFIG_DIR):
        return env[sglang.ENV_CONFIG_DIR], f"${sglang.ENV_CONFIG_DIR}"
    return bundled, ("the package's bundled tables" if bundled else "SGLang not found")


def locate(name: str, tuned_roots: Sequence[str], env: Mapping[str, str], bundled: Optional[str],
           triton_version: str, profile_name: str, up: Optional[dict] = None) -> dict:
    """Where moeplan finds `name` (its `--tuned-dir` roots, then SGLang's root) and what SGLang
    itself loads, as `resolve` reports it. `up`: the up table's `locate` result, for a `_down`
    name (SGLang's GEMM2 reuses the up table when no `_down` file is found)."""
    root, root_why = engine_root(env, bundled, profile_name)
    roots: list[str] = []
    for r in ([root] if root else []) + list(tuned_roots):
        if r not in roots:
            roots.append(r)
    tried: list[str] = []
    found = None
    found_root = None
    for r in roots:
        hit = find_in_root(r, name, triton_version, profile_name)
        tried.extend(hit["tried"])
        if hit["path"]:
            found, found_root = hit, r
            break
    loads = find_in_root(root, name, triton_version, profile_name) if root else \
        {"path": None, "folder": None, "via": None, "tried": [], "problem": None}
    engine_loads, via, folder = loads["path"], loads["via"], loads["folder"]
    if engine_loads is None and up is not None and up.get("engine_loads"):
        engine_loads, via, folder = up["engine_loads"], "up table", up["triton_folder"]
    source = "missing" if found is None else ("engine" if found_root == root else "tuned")
    export = copy = None
    if source == "tuned" and found["path"] != engine_loads:
        export = f"export {sglang.ENV_CONFIG_DIR}={shlex.quote(os.path.abspath(found_root))}"
        if bundled and os.path.isdir(os.path.join(bundled, "configs")):
            # the variable hides every bundled table: copy them under the new root first (never overwrite)
            copy = (f"cp -rn {shlex.quote(os.path.join(bundled, 'configs'))}/. "
                    f"{shlex.quote(os.path.join(os.path.abspath(found_root), 'configs'))}/")
    warnings = []
    if via == "fallback":
        warnings.append(f"SGLang loads it from the fallback folder {folder}, not {sglang.version_folder(triton_version)} "
                        f"(Triton {triton_version}): tuned under another Triton")
    if loads["problem"]:
        warnings.append(loads["problem"])
    return {"found": found["path"] if found else None, "source": source, "engine_loads": engine_loads,
            "engine_loads_via": via or "default", "triton_folder": folder, "engine_root": root,
            "engine_root_reason": root_why, "export": export, "copy_bundled": copy, "tried": tried,
            "warnings": warnings}


def serving_hint(root: str, profile_name: str, bundled: Optional[str]) -> list[str]:
    """What a user runs for SGLang to load the tables `tune` wrote under `root` (the folder holding
    `configs/triton_*`): the variable, and, because it hides every bundled table, the copy of those
    first (`cp -rn`: never over the tuned ones) when the bundled folder is known."""
    root = os.path.abspath(root)
    if not sglang.HAS_ENV_DIR.get(profile_name, True):  # 0.4: no variable, only the package's folder
        if bundled:
            return [f"SGLang ({profile_name}) reads only its package's folder: copy the tables into it:",
                    f"  cp -rn {shlex.quote(os.path.join(root, 'configs'))}/. {shlex.quote(os.path.join(bundled, 'configs'))}/"]
        return [f"SGLang ({profile_name}) reads only its package's folder: copy {root}/configs/* into its configs/"]
    lines = [f"SGLang ({profile_name}) loads them once {sglang.ENV_CONFIG_DIR} names {root}:",
             f"  export {sglang.ENV_CONFIG_DIR}={shlex.quote(root)}"]
    if bundled and os.path.isdir(os.path.join(bundled, "configs")):
        lines.append(f"  cp -rn {shlex.quote(os.path.join(bundled, 'configs'))}/. {shlex.quote(os.path.join(root, 'configs'))}/"
                     "   # first: the variable hides SGLang's bundled tables")
    else:
        lines.append(f"  (the variable hides SGLang's bundled tables: copy its package's configs/ folder into {root}/configs "
                     "first; sglang is not installed here)")
    return lines
