"""A Resolution as one JSON-able dict: what `moeplan resolve` prints (and `--json` gives), with
each table looked up on disk (`moeplan.tables.lookup`) and, for a batch size, the entry or
default config it would run.

This is the only place on the `resolve` path that touches the file system.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from moeplan.base.errors import TableError
from moeplan.engines.registry import default_config
from moeplan.layout.resolve import Resolution, TableSpec
from moeplan.layout.quant import QuantDesc
from moeplan.layout.commands import tune_command
from moeplan.tables.lookup import locate_table


def _shape(s) -> Optional[list]:
    return None if s is None else list(s)


def _desc_dict(d: QuantDesc, scale_shape) -> dict:
    return {
        "dtype": d.dtype,
        "group_shape": None if d.shape is None else [d.shape.row, d.shape.col],
        "group": None if d.shape is None else d.shape.describe(),
        "scale_shape": _shape(scale_shape),
    }


def quant_dict(res: Resolution, E: int, N: int) -> dict:
    q = res.quant
    K, topk = res.model.hidden_size, res.model.top_k
    w1s, w2s = q.weight_scale_shapes(E, N, K)
    return {
        "scheme": res.scheme,
        "activation_dtype": res.act_dtype,
        "config_name": res.config_name,
        "block_shape": None if res.block_shape is None else list(res.block_shape),
        "per_act_token_quant": q.per_act_token_quant,
        "per_out_ch_quant": q.per_out_ch_quant,
        "is_quantized": q.is_quantized,
        "weight_group_size": q.weight_group_size,
        # Activation scales for a batch of M tokens: a1 is (M, K), a2 is (M*topk, N).
        "a1": _desc_dict(q.a1, q.scale_shape("M", K)),
        "a2": _desc_dict(q.a2, q.scale_shape("M*topk" if topk > 1 else "M", N)),
        "w1": _desc_dict(q.w1, w1s),
        "w2": _desc_dict(q.w2, w2s),
    }


def _entry(spec: TableSpec, path: Optional[str], M: int, heuristic: str) -> dict:
    if path is not None:
        from moeplan.tables.table import load_table

        table = load_table(path, spec.engine)
        key, cfg = table.entry_for(M)
        return {"source": "table", "batch_key": key, "config": cfg.to_dict()}
    cfg = default_config(M, spec.E, spec.N, spec.K, spec.topk, spec.config_name,
                         list(spec.block_shape) if spec.block_shape else None, heuristic=heuristic)
    return {"source": "default", "batch_key": None, "config": cfg.to_dict()}


def engine_dict(choice, engine_dir: Optional[str], engine_dir_reason: str) -> dict:
    """The engine profile used and why, and the shipped-table folder looked in."""
    p = choice.profile
    return {"profile": p.name, "reason": choice.reason, "warning": choice.warning,
            "installed_version": choice.engine_version, "releases": p.releases, "configs_dir": engine_dir,
            "configs_dir_reason": engine_dir_reason, "rules": p.to_dict()}


def _sglang_tables(res: Resolution, tuned_dirs: Sequence[str], env: Mapping[str, str], batch_size: Optional[int],
                   engine: dict) -> list[dict]:
    """The tables of an SGLang resolution: each up table and its `_down` one, where SGLang loads
    each from (`moeplan.tables.sglang_lookup`), and the entry a batch would run."""
    from moeplan.tables import sglang_lookup

    tv, prof = engine["triton_version"], engine["profile"]
    out = []
    for spec in res.tables():
        t = {"tuning_file": spec.file_name, "E": spec.E, "N": spec.N, "topk": spec.topk,
             "merged_shared_experts": spec.merged_shared, "devices": list(spec.devices), "engine_profile": prof}
        names = [("up", spec.file_name)] + ([("down", spec.down_file_name)] if spec.down_file_name else [])
        up = None
        for role, name in names:
            if res.device_known:
                w = sglang_lookup.locate(name, tuned_dirs, env, engine["configs_dir"], tv, prof, up)
            else:
                w = {"found": None, "source": "unknown", "engine_loads": None, "engine_loads_via": None,
                     "triton_folder": None, "engine_root": None, "engine_root_reason": None, "export": None,
                     "copy_bundled": None, "tried": [], "warnings": []}
            if batch_size is not None:
                path = w["engine_loads"] or w["found"]
                try:
                    w["entry"] = _entry(spec, path, batch_size, engine["rules"]["default_heuristic"])
                except TableError as e:
                    w["entry"] = {"source": "error", "error": str(e)}
            if role == "up":
                up = w
                t.update(w)
            else:
                t["down"] = {"tuning_file": name, **w}
        out.append(t)
    return out


def resolution_dict(res: Resolution, tuned_dirs: Sequence[str], env: Mapping[str, str],
                    batch_size: Optional[int] = None, engine: Optional[dict] = None) -> dict:
    """`engine`: an `engine_dict` (profile and shipped-table folder); None: the newest profile,
    no shipped folder."""
    if engine is None:
        from moeplan.engines.registry import choose_profile
        engine = engine_dict(choose_profile(None, version_of=lambda _: None), None, "not looked up")
    heuristic = engine["rules"]["default_heuristic"]
    m = res.model
    tables = []
    found: dict[str, Optional[str]] = {}
    sglang_tables = _sglang_tables(res, tuned_dirs, env, batch_size, engine) \
        if engine["rules"].get("engine") == "sglang" else None
    for t in sglang_tables or ():
        found[t["tuning_file"]] = t["found"]
    tables.extend(sglang_tables or ())
    for spec in (res.tables() if sglang_tables is None else ()):
        if res.device_known:
            where = locate_table(spec.file_name, tuned_dirs, env, engine["configs_dir"])
        else:
            where = {"found": None, "source": "unknown", "engine_loads": None, "export": None, "tried": []}
        path = where["found"]
        found[spec.file_name] = path
        t = {"tuning_file": spec.file_name, "found": path, "source": where["source"],
             "engine_loads": where["engine_loads"], "export": where["export"], "tried": where["tried"],
             "E": spec.E, "N": spec.N, "devices": list(spec.devices), "engine_profile": engine["profile"],
             "command": tune_command(res, engine["profile"]) if where["source"] == "missing" else None}
        if batch_size is not None:
            try:
                t["entry"] = _entry(spec, path, batch_size, heuristic)
            except TableError as e:
                t["entry"] = {"source": "error", "error": str(e)}
        tables.append(t)
    d0 = res.devices[0]
    devices = []
    for d in res.devices:
        r = d.ranks
        devices.append({
            "device": r.device, "tp_size": r.tp_size, "tp_rank": r.tp_rank, "dp_size": r.dp_size,
            "dp_rank": r.dp_rank, "ep_size": r.ep_size, "ep_rank": r.ep_rank, "use_ep": r.use_ep,
            "num_local_experts": d.num_local_experts, "local_experts": list(d.local_experts),
            "N": d.N, "K": m.hidden_size, "tuning_file": d.tuning_file,
            "tuning_file_found": found[d.tuning_file],
            "use_all2all_kernels": r.use_all2all_kernels, "use_pplx_kernels": r.use_pplx_kernels,
            "use_deepep_ht_kernels": r.use_deepep_ht_kernels, "use_deepep_ll_kernels": r.use_deepep_ll_kernels,
        })
    lay = res.layout
    out = {
        "model": m.to_dict(),  # the one JSON form of a ModelSpec
        "model_source": m.source,  # where it was read from (a preset file or a config.json)
        "layout": {"tp": lay.tp, "dp": lay.dp, "ep": lay.use_ep, "world_size": lay.world_size,
                   "placement": lay.placement, "all2all_backend": lay.all2all_backend,
                   "device_name": res.device_name},
        "quant": quant_dict(res, d0.kernel_experts, d0.N),  # SGLang: merged shared experts hold weights too
        "engine": engine,
        "devices": devices,
        "tables": tables,
        "batch_size": batch_size,
    }
    if res.profile is not None and res.profile.engine == "sglang":
        out["shared_expert_merge"] = res.merge_note
        for dv, d in zip(devices, res.devices):
            dv["kernel_experts"], dv["down_file"] = d.kernel_experts, d.down_file
    return out


def engine_folder(engine_configs: Optional[str], profile=None) -> tuple[Optional[str], str]:
    """The engine's shipped-table folder and why: `--engine-configs DIR` (checked), else the
    installed engine's (found from its package files), else none. SGLang's is the root holding
    `configs/triton_*`."""
    import os

    from moeplan.base.errors import MoeplanError
    from moeplan.base.safeio import check_path

    if engine_configs is not None:
        check_path("--engine-configs", engine_configs, "the engine's configs folder")
        if not os.path.isdir(engine_configs):
            raise MoeplanError(f"--engine-configs {engine_configs!r} is not a folder; pass the engine's configs folder "
                               "(.../vllm/model_executor/layers/fused_moe/configs)")
        return engine_configs, "--engine-configs"
    if profile is not None and profile.engine == "sglang":
        from moeplan.engines import sglang

        d = sglang.engine_config_dir(profile.name)
        return d, ("the installed sglang's package" if d else "sglang not installed; --engine-configs DIR names one")
    from moeplan.engines.vllm import engine_config_dir

    engine_dir = engine_config_dir()
    return engine_dir, ("the installed vllm's package" if engine_dir else "vllm not installed; --engine-configs DIR names one")


def resolve_report(res: Resolution, tuned_dirs: Sequence[str], choice, engine_configs: Optional[str] = None,
                   batch_size: Optional[int] = None, env: Optional[Mapping[str, str]] = None,
                   triton_version: Optional[str] = None) -> dict:
    """Everything `moeplan resolve` shows: `resolution_dict` with the engine profile `choice`, the
    engine's folder (`engine_folder`) and the tables looked up in `tuned_dirs` (empty: the default
    folders, ./tuned then moeplan's shipped tables)."""
    from moeplan.tables.lookup import check_tuned_dirs, default_tuned_dirs

    import os

    check_tuned_dirs(tuned_dirs)
    engine_dir, why = engine_folder(engine_configs, choice.profile)
    dirs = list(tuned_dirs) or default_tuned_dirs()
    env = dict(os.environ if env is None else env)  # the engine reads $VLLM_TUNED_CONFIG_FOLDER first
    eng = engine_dict(choice, engine_dir, why)
    if choice.profile.engine == "sglang":
        from moeplan.base.safeio import check_text
        from moeplan.engines import sglang

        if triton_version is not None:
            check_text("--triton-version", triton_version, "a Triton version such as 3.8.0")
        eng["triton_version"], eng["triton_version_reason"] = sglang.serving_triton(choice.profile.name,
                                                                                    triton_version)
        eng["triton_folder"] = sglang.version_folder(eng["triton_version"])
        env_dir = env.get(sglang.ENV_CONFIG_DIR) if sglang.HAS_ENV_DIR.get(choice.profile.name) else None
        eng["config_dir_env"] = env_dir or None
        eng["warnings"] = ([f"${sglang.ENV_CONFIG_DIR}={env_dir} hides SGLang's bundled tables: every MoE table the "
                            "server needs must be under it (copy the bundled configs/ there too)"] if env_dir else [])
    return resolution_dict(res, dirs, env, batch_size, eng)
