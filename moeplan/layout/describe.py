"""A Resolution as one JSON-able dict: what `moeplan resolve` prints (and `--json` gives), with
each table looked up on disk (`moeplan.tables.lookup`) and, for a batch size, the entry or
default config it would run.

This is the only place on the `resolve` path that touches the file system.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from moeplan.base.errors import TableError
from moeplan.engines.vllm import default_config
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

        table = load_table(path)
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
    for spec in res.tables():
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
    return {
        "model": m.to_dict(),  # the one JSON form of a ModelSpec
        "model_source": m.source,  # where it was read from (a preset file or a config.json)
        "layout": {"tp": lay.tp, "dp": lay.dp, "ep": lay.use_ep, "world_size": lay.world_size,
                   "placement": lay.placement, "all2all_backend": lay.all2all_backend,
                   "device_name": res.device_name},
        "quant": quant_dict(res, d0.num_local_experts, d0.N),
        "engine": engine,
        "devices": devices,
        "tables": tables,
        "batch_size": batch_size,
    }


def engine_folder(engine_configs: Optional[str]) -> tuple[Optional[str], str]:
    """The engine's shipped-table folder and why: `--engine-configs DIR` (checked), else the
    installed vllm's (found from its package files), else none."""
    import os

    from moeplan.base.errors import MoeplanError
    from moeplan.base.safeio import check_path

    if engine_configs is not None:
        check_path("--engine-configs", engine_configs, "the engine's configs folder")
        if not os.path.isdir(engine_configs):
            raise MoeplanError(f"--engine-configs {engine_configs!r} is not a folder; pass the engine's configs folder "
                               "(.../vllm/model_executor/layers/fused_moe/configs)")
        return engine_configs, "--engine-configs"
    from moeplan.engines.vllm import engine_config_dir

    engine_dir = engine_config_dir()
    return engine_dir, ("the installed vllm's package" if engine_dir else "vllm not installed; --engine-configs DIR names one")


def resolve_report(res: Resolution, tuned_dirs: Sequence[str], choice, engine_configs: Optional[str] = None,
                   batch_size: Optional[int] = None, env: Optional[Mapping[str, str]] = None) -> dict:
    """Everything `moeplan resolve` shows: `resolution_dict` with the engine profile `choice`, the
    engine's folder (`engine_folder`) and the tables looked up in `tuned_dirs` (empty: the default
    folders, ./tuned then moeplan's shipped tables)."""
    from moeplan.tables.lookup import check_tuned_dirs, default_tuned_dirs

    import os

    check_tuned_dirs(tuned_dirs)
    engine_dir, why = engine_folder(engine_configs)
    dirs = list(tuned_dirs) or default_tuned_dirs()
    env = dict(os.environ if env is None else env)  # the engine reads $VLLM_TUNED_CONFIG_FOLDER first
    return resolution_dict(res, dirs, env, batch_size, engine_dict(choice, engine_dir, why))
