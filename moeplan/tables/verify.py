"""Verifying tuning tables (for CI and `moeplan verify`/`show`): the name grammar, the JSON, the
keys, and every knob against what the engine's kernel runs.

Imports neither torch nor triton.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from moeplan.base import safeio
from moeplan.base.errors import TableError
from moeplan.engines.knobs import KNOBS
from moeplan.engines.limits import entry_problems
from moeplan.tables.table import SGLANG_EXTRAS, SGLANG_LAUNCH_DEFAULTS, parse_table, read_table_text


def table_engine(path: str | os.PathLike) -> str:
    """Whose table a file is: "sglang" when it sits in a `triton_<X_Y_Z>` folder or its name is
    spelled as only SGLang spells names (`block_shape=[128, 128]`, `_down`, ...), else "vllm"."""
    from moeplan.engines import sglang

    p = Path(path)
    if p.parent.name.startswith("triton_") or sglang.is_sglang_name(p.name):
        return "sglang"
    return "vllm"


def verify_table_text(name: str, text: str, strict_format: bool = False, check_name: bool = True,
                      within_engine: Optional[bool] = None, engine: str = "vllm") -> list[str]:
    """Every problem of one table file (empty list = fine): name grammar, JSON, keys, values,
    duplicates and key order. `strict_format` also requires every knob within the engine's
    limits (`engine_limits`; `within_engine` asks for that alone) and the exact bytes moeplan
    writes. `engine="sglang"`: SGLang's grammar, a `triton_version` key is a problem (SGLang
    crashes on it), entries may carry USE_TMA and omit num_warps/num_stages."""
    within = strict_format if within_engine is None else within_engine
    if engine == "sglang":
        from moeplan.engines.sglang import parse_tuning_file_name
    else:
        from moeplan.engines.vllm import parse_tuning_file_name

    problems: list[str] = []
    if check_name:
        try:
            parse_tuning_file_name(name)
        except TableError as e:
            problems.append(str(e))
    dupes: list[str] = []

    def pairs_hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                dupes.append(k)
            seen.add(k)
        return dict(pairs)

    try:
        obj = safeio.parse_json(text, "table", TableError, object_pairs_hook=pairs_hook)
    except TableError as e:
        return problems + [str(e).removeprefix("table: ")]
    for k in dupes:
        problems.append(f"key {safeio.shown(k)} appears more than once")
    if not isinstance(obj, dict):
        return problems + [f"expected a JSON object of batch size -> config, got {type(obj).__name__}"]
    version = obj.get("triton_version")
    if engine == "sglang" and "triton_version" in obj:
        problems.append("has a triton_version key: SGLang int()s every key and crashes at the first MoE call")
    elif "triton_version" in obj and not isinstance(version, str):
        problems.append(f"triton_version {safeio.shown(version)} is not a string")
    batch_keys: list[int] = []
    for key, cfg in obj.items():
        if key == "triton_version":
            continue
        try:
            m = int(key)
            if m < 1 or str(m) != key or m > safeio.MAX_BATCH:
                raise ValueError
        except ValueError:
            problems.append(f"key {safeio.shown(key)} is not a positive integer batch size (valid: 1..{safeio.MAX_BATCH})")
            continue
        batch_keys.append(m)
        if engine == "sglang" and isinstance(cfg, dict):
            if "USE_TMA" in cfg and not isinstance(cfg["USE_TMA"], bool):
                problems.append(f"entry {key!r}: USE_TMA={safeio.shown(cfg['USE_TMA'])} is not true/false")
            cfg = {k: v for k, v in cfg.items() if k not in SGLANG_EXTRAS}  # USE_TMA etc. come after the knobs
            full = {**cfg, **{k: v for k, v in SGLANG_LAUNCH_DEFAULTS.items() if k not in cfg}}
            problems.extend(f"entry {key!r}: {p}" for p in entry_problems(full, within))
        else:
            problems.extend(f"entry {key!r}: {p}" for p in entry_problems(cfg, within))
        if isinstance(cfg, dict) and set(cfg) == set(KNOBS) and list(cfg) != list(KNOBS):
            problems.append(f"entry {key!r}: knobs are not in the order {', '.join(KNOBS)}")
    if not batch_keys:
        problems.append("no batch-size entries")
    if batch_keys != sorted(batch_keys):
        problems.append(f"batch sizes are not in increasing order ({', '.join(map(str, batch_keys))})")
    if strict_format and not problems:
        canon = parse_table(text, name, engine).to_json()
        if "triton_version" in obj and list(obj)[0] != "triton_version":
            problems.append("triton_version is not the first key")
        elif canon != text:
            problems.append("not in the canonical format (json.dump indent=4 plus a trailing newline)")
    return problems


def verify_folder(folder: str | os.PathLike, strict_format: bool = False) -> dict[str, list[str]]:
    """Problems of every `*.json` table in a folder (not recursive), by file name.

    Raises TableError when the folder does not exist or holds no tables.
    """
    safeio.check_path("folder", os.fspath(folder), "a folder of tuning tables", TableError)
    d = Path(folder)
    if not d.is_dir():
        raise TableError(f"{safeio.shown(os.fspath(folder))} is not a folder; pass a folder of tuning tables")
    try:
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".json")
    except OSError as e:
        raise TableError(f"cannot list {safeio.shown(os.fspath(folder))}: {e.strerror or e}") from None
    if not files:
        raise TableError(f"{safeio.shown(os.fspath(folder))} holds no .json tuning tables")
    out: dict[str, list[str]] = {}
    for p in files:
        try:
            text = read_table_text(p)
        except TableError as e:
            out[p.name] = [str(e)]
            continue
        out[p.name] = verify_table_text(p.name, text, strict_format, engine=table_engine(p))
    return out
