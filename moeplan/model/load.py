"""MoE model descriptions: the bundled presets, and ``load_model`` for a preset alias, a repo
id or a ``config.json``.

The pieces live in their own modules and are re-exported here: ``ModelSpec`` (and the
E / K / N / topk letters) in ``moeplan.model_spec``, the ``config.json`` reader in
``moeplan.hf_config``, checkpoint quantization in ``moeplan.checkpoint_quant``.

This module is deliberately pure: it imports only the standard library and moeplan's pure
modules (never torch, triton, rich or typer) so ``moeplan resolve`` starts fast.
Every user-facing failure is a one-line ``ModelError``.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from moeplan import safeio
from moeplan.checkpoint_quant import (MAX_DIM, MAX_EXPERTS, MAX_LAYERS, SCHEMES, CheckpointQuant, _fail,
                                      parse_quantization_config)
from moeplan.errors import ModelError
from moeplan.hf_config import _read_json, model_from_config, read_config_file
from moeplan.model_spec import _REST_FIELDS, _SPEC_FIELDS, ACTIVATIONS, ModelSpec
from moeplan.paths import PRESETS_ENV  # the environment variable that overrides the preset folder

__all__ = [
    "ACTIVATIONS",
    "PRESETS_ENV",
    "PRESET_COLUMNS",
    "SCHEMES",
    "CheckpointQuant",
    "ModelSpec",
    "clear_preset_cache",
    "find_preset",
    "list_presets",
    "load_model",
    "model_from_config",
    "parse_quantization_config",
    "preset_rows",
    "presets_dir",
    "read_config_file",
    "spec_from_preset",
]


# --------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------

_PRESET_REQUIRED = ("alias", "name", *_SPEC_FIELDS, "quantization")

_PRESET_CACHE: dict[str, tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]] = {}


def presets_dir() -> Path:
    """Folder holding the preset JSON files (``$MOEPLAN_PRESETS_DIR`` or the shipped ``configs/``)."""
    from moeplan import paths

    return paths.presets_dir()


def spec_from_preset(data: Any, source: str) -> ModelSpec:
    """Build a ModelSpec from one preset-file object.

    Preset format (``configs/<alias>.json``): the ``ModelSpec`` fields by name, with
    ``quantization`` holding the checkpoint's verbatim ``quantization_config`` (or null);
    extra keys (``references``, ``verification``, ``notes``) are informational.
    """
    if not isinstance(data, dict):
        raise _fail(f"preset '{source}' must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _PRESET_REQUIRED if k not in data]
    if missing:
        raise _fail(f"preset '{source}' lacks {', '.join(missing)} (required: {', '.join(_PRESET_REQUIRED)})")
    for k in ("alias", "name", "model_type", "architecture", "activation"):
        if not isinstance(data[k], str) or not data[k]:
            raise _fail(f"preset '{source}': {k}={data[k]!r} must be a non-empty string")
    alias = data["alias"]
    if alias != alias.lower() or not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", alias):
        raise _fail(f"preset '{source}': alias={alias!r} must be lowercase letters, digits, '.' and '-'")
    try:
        spec = ModelSpec(
            name=data["name"],
            alias=alias,
            **{k: data[k] for k in _SPEC_FIELDS},
            quantization=parse_quantization_config(data["quantization"], source),
            source=source,
            **{k: data[k] for k in _REST_FIELDS if data.get(k) is not None},
        )
        for key, hi in (("num_experts", MAX_EXPERTS), ("num_hidden_layers", MAX_LAYERS), ("hidden_size", MAX_DIM),
                        ("moe_intermediate_size", MAX_DIM)):
            if getattr(spec, key) > hi:
                raise _fail(f"{key}={getattr(spec, key)} is out of range; valid: 1..{hi}")
        return spec
    except ModelError as e:
        msg = str(e)
        raise _fail(msg if source in msg else f"preset '{source}': {msg}") from None


def _load_presets() -> tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]:
    d = presets_dir()
    key = str(d)
    hit = _PRESET_CACHE.get(key)
    if hit is not None:
        return hit
    if not d.is_dir():
        raise _fail(f"preset folder '{d}' does not exist (set {PRESETS_ENV} to a folder of preset .json files)")
    specs: list[ModelSpec] = []
    for f in sorted(d.glob("*.json")):
        specs.append(spec_from_preset(_read_json(f), str(f)))
    specs.sort(key=lambda s: s.alias)
    index: dict[str, ModelSpec] = {}
    for s in specs:
        for k in (s.alias, s.name.lower()):
            other = index.get(k)
            if other is not None and other is not s:
                raise _fail(f"presets '{other.source}' and '{s.source}' both claim '{k}' (aliases and repo ids must be unique)")
            index[k] = s
    # Convenience: the repo id without its organisation ("Kimi-K2-Instruct"), when unambiguous.
    tails: dict[str, list[ModelSpec]] = {}
    for s in specs:
        tails.setdefault(s.name.split("/")[-1].lower(), []).append(s)
    for t, group in tails.items():
        if len(group) == 1 and t not in index:
            index[t] = group[0]
    result = (tuple(specs), index)
    _PRESET_CACHE[key] = result
    return result


def clear_preset_cache() -> None:
    """Forget loaded presets (tests, or after editing configs/)."""
    _PRESET_CACHE.clear()


def list_presets() -> list[ModelSpec]:
    """All presets, sorted by alias."""
    return list(_load_presets()[0])


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".json") or ref.startswith(("/", "./", "../", "~", "\\")) or "\\" in ref


def _unknown(name: str, specs: tuple[ModelSpec, ...]) -> ModelError:
    aliases = [s.alias for s in specs]
    pool = aliases + [s.name.lower() for s in specs]
    close = difflib.get_close_matches(name.lower(), pool, n=3, cutoff=0.6)
    hint = ""
    if close:
        shown = []
        for c in close:
            a = next((s.alias for s in specs if c in (s.alias, s.name.lower())), c)
            if a not in shown:
                shown.append(a)
        hint = f"; did you mean {', '.join(repr(a) for a in shown)}?"
    elif _looks_like_path(name):
        hint = f"; no file or folder '{name}' exists"
    return _fail(
        f"unknown model '{name}': not a preset alias/repo id (valid: {', '.join(aliases) or 'none'}) "
        f"nor a path to a config.json or a folder holding one{hint}"
    )


def find_preset(name: str) -> ModelSpec:
    """The preset whose alias or repo id matches ``name`` case-insensitively."""
    specs, index = _load_presets()
    hit = index.get(str(name).strip().lower())
    if hit is None:
        raise _unknown(str(name), specs)
    return hit


def load_model(ref: "str | os.PathLike[str]") -> ModelSpec:
    """Resolve a preset alias / repo id, a ``config.json`` path, or a folder holding one.

    Existing paths win over presets (except a folder without config.json whose name is
    also a preset). Anything else that is not a preset raises the unknown-model error.
    """
    text = os.fspath(ref)
    if not isinstance(text, str) or not text.strip():
        raise _fail(f"empty model reference {text!r}: give a preset alias/repo id or a path to a config.json")
    safeio.check_path("model", text, "a preset alias/repo id or a path to a config.json", ModelError)
    try:
        p = Path(text).expanduser()
    except RuntimeError:  # `~user` naming no user
        p = Path(text)
    if p.exists():
        if p.is_dir() and not (p / "config.json").exists():
            try:
                return find_preset(text)
            except ModelError:
                pass
        cfg, source = read_config_file(p)
        return model_from_config(cfg, source)
    return find_preset(text)


# --------------------------------------------------------------------------------------
# Table rows for `moeplan models`
# --------------------------------------------------------------------------------------

#: (row key, column header) in display order, for ``preset_rows()``.
PRESET_COLUMNS = (
    ("alias", "alias"),
    ("repo_id", "repo id"),
    ("experts", "E"),
    ("top_k", "top-k"),
    ("hidden", "hidden K"),
    ("expert_width", "expert N"),
    ("shared_experts", "shared"),
    ("moe_layers", "MoE layers"),
    ("quantization", "checkpoint"),
)


def preset_rows() -> list[dict]:
    """One dict per preset (keys of ``PRESET_COLUMNS``), sorted by alias."""
    rows = []
    for s in list_presets():
        shared = f"{s.num_shared_experts} ({s.shared_expert_intermediate_size})" if s.num_shared_experts else "-"
        layers = f"{s.num_moe_layers}/{s.num_hidden_layers}" if s.num_moe_layers is not None else f"?/{s.num_hidden_layers}"
        rows.append(
            {
                "alias": s.alias,
                "repo_id": s.name,
                "experts": s.num_experts,
                "top_k": s.top_k,
                "hidden": s.hidden_size,
                "expert_width": s.moe_intermediate_size,
                "shared_experts": shared,
                "moe_layers": layers,
                "quantization": s.quantization.describe() if s.quantization else "bf16",
            }
        )
    return rows
