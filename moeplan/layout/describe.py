"""Turning a Resolution into a JSON-able dict (with table lookups on disk) and rich tables.

This is the only place on the `resolve` path that touches the file system.
"""

from __future__ import annotations

import os
import shlex
from typing import Mapping, Optional, Sequence

from moeplan.errors import TableError
from moeplan.kernel_config import default_config
from moeplan.naming import ENV_TUNED_FOLDER, lookup_candidates
from moeplan.plan import Resolution, TableSpec
from moeplan.quant import QuantDesc
from moeplan.safeio import printable


def default_tuned_dirs() -> list[str]:
    """The default lookup folders: ./tuned (where `tune` writes), then moeplan's shipped tables."""
    from moeplan import paths

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
        from moeplan.tables import load_table

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
        from moeplan.engine import choose_profile
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
             "E": spec.E, "N": spec.N, "devices": list(spec.devices), "engine_profile": engine["profile"]}
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


def _compact_ids(ids: Sequence[int]) -> str:
    """[0,1,2,3,8] -> '0-3,8'."""
    if not ids:
        return "-"
    parts, start, prev = [], ids[0], ids[0]
    for i in list(ids[1:]) + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    s = ",".join(parts)
    return s if len(s) <= 40 else s[:37] + "..."


def user_text(value) -> str:
    """User data (names, paths, messages) as rich prints it literally: markup escaped, control
    characters written as escapes. Every user string printed through rich goes through here."""
    from rich.markup import escape

    return escape(printable(value))


def console():
    """A rich console; when output is not a terminal, wide enough that names never fold."""
    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:
        c = Console(highlight=False, width=200)
    return c


def print_resolution(data: dict) -> None:
    from rich.table import Table

    console_ = console()
    m, lay, q = data["model"], data["layout"], data["quant"]
    ep = f"EP={lay['world_size']} ({lay['placement']})" if lay["ep"] else "EP off"
    console_.print(f"[bold]{user_text(m['name'])}[/bold] ({user_text(m['alias'])}): "
                  f"E={m['num_experts']} top-{m['top_k']} "
                  f"K={m['hidden_size']} expert width {m['moe_intermediate_size']}")
    console_.print(f"layout: TP={lay['tp']} DP={lay['dp']} {ep}, {lay['world_size']} device(s); "
                  f"device: {user_text(lay['device_name'] or 'unknown (no GPU found; pass --device-name)')}")
    eng = data["engine"]
    shipped = user_text(eng["configs_dir"] or f"none ({eng['configs_dir_reason']})")
    console_.print(f"engine profile: {eng['profile']} ({user_text(eng['reason'])}); shipped tables: {shipped}",
                   soft_wrap=True)
    tag = {t["tuning_file"]: f"T{i + 1}" for i, t in enumerate(data["tables"])}
    dev = Table(title="devices (ranks as rank/size)")
    for col in ("device", "TP", "DP", "EP", "experts", "local experts", "N", "table"):
        dev.add_column(col)
    for d in data["devices"]:
        dev.add_row(str(d["device"]), f"{d['tp_rank']}/{d['tp_size']}", f"{d['dp_rank']}/{d['dp_size']}",
                    f"{d['ep_rank']}/{d['ep_size']}" if d["use_ep"] else "off", str(d["num_local_experts"]),
                    _compact_ids(d["local_experts"]), str(d["N"]), tag[d["tuning_file"]])
    console_.print(dev)
    if any(d["use_all2all_kernels"] for d in data["devices"]):
        console_.print(f"all-to-all kernels: on (backend {lay['all2all_backend']})")
    in_name = f"dtype={q['config_name']}" if q["config_name"] else "no dtype="
    qt = Table(title=f"quantization: {q['scheme']} (file names: {in_name})")
    for col in ("operand", "dtype", "group", "scale shape"):
        qt.add_column(col)
    for op in ("a1", "a2", "w1", "w2"):
        o = q[op]
        shape = "(" + ", ".join(map(str, o["scale_shape"])) + ")" if o["scale_shape"] else "-"
        qt.add_row(op, o["dtype"] or f"{q['activation_dtype']} (unquantized)", o["group"] or "-", shape)
    console_.print(qt)
    console_.print("[bold]tuning tables[/bold]")
    for t in data["tables"]:
        devs = _compact_ids(t["devices"])
        console_.print(f"{tag[t['tuning_file']]} {user_text(t['tuning_file'])}  (devices {devs})", soft_wrap=True)
        if t["found"]:
            where = "shipped with the engine" if t["source"] == "engine" else "tuned"
            console_.print(f"   [green]found ({where})[/green]: {user_text(t['found'])}", soft_wrap=True)
            if t["export"]:
                loads = (f"it loads {user_text(t['engine_loads'])} instead" if t["engine_loads"]
                         else "it uses its default config")
                console_.print(f"   the engine will not load it until {ENV_TUNED_FOLDER} names its folder ({loads}): "
                               f"{user_text(t['export'])}", soft_wrap=True)
        elif not lay["device_name"]:
            console_.print("   [yellow]device unknown[/yellow]: pass --device-name to name and look up the file")
        else:
            tried = user_text("; ".join(t["tried"]) or "no folder given")
            console_.print(f"   [red]missing[/red]: the engine would use its default config (tried: {tried})",
                          soft_wrap=True)
        if "entry" in t:
            e = t["entry"]
            if e["source"] == "error":
                console_.print(f"   M={data['batch_size']}: {user_text(e['error'])}", soft_wrap=True)
            else:
                where = f"entry {e['batch_key']}" if e["source"] == "table" else "the default heuristic"
                cfg = ", ".join(f"{k}={v}" for k, v in e["config"].items())
                console_.print(f"   M={data['batch_size']} uses {where}: {cfg}", soft_wrap=True)


def print_models(rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title=f"{len(rows)} model presets")
    if not rows:
        console().print(t)
        return
    for col in rows[0]:
        t.add_column(str(col), overflow="fold")
    for r in rows:
        t.add_row(*("-" if v is None else user_text(v) for v in r.values()))
    console().print(t)
