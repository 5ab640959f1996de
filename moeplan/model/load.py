"""``load_model``: a preset alias, a repo id or a ``config.json`` (or a folder holding one) ->
``ModelSpec``; and the rows of ``moeplan models``.

Pure: the standard library and moeplan's base and model modules (never torch, triton, rich or
typer), so ``moeplan resolve`` starts fast. Every user-facing failure is a one-line ``ModelError``.
"""

from __future__ import annotations

import os
from pathlib import Path

from moeplan.base import safeio
from moeplan.base.errors import ModelError
from moeplan.model.checkpoint_quant import _fail
from moeplan.model.hf_config import model_from_config, read_config_file
from moeplan.model.spec import ModelSpec, find_preset, list_presets


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
