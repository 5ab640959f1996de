"""Turning a Resolution into a JSON-able dict (with table lookups on disk) and rich tables.

This is the only place on the `resolve` path that touches the file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

from moeplan.errors import TableError
from moeplan.kernel_config import default_config
from moeplan.naming import lookup_candidates
from moeplan.plan import Resolution, TableSpec
from moeplan.quant import QuantDesc
from moeplan.safeio import printable

REPO_TUNED = Path(__file__).resolve().parent.parent / "tuned"


def default_tuned_dirs() -> list[str]:
    """moeplan's own tables (the repo's tuned/ folder) when it exists."""
    return [str(REPO_TUNED)] if REPO_TUNED.is_dir() else []


def find_table(file_name: str, tuned_dirs: Sequence[str], env: Mapping[str, str]) -> tuple[Optional[str], list[str]]:
    """(first existing path or None, every path tried), in the engine's order."""
    tried = lookup_candidates(file_name, tuned_dirs, env)
    for p in tried:
        if os.path.isfile(p):
            return p, tried
    return None, tried


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


def _entry(spec: TableSpec, path: Optional[str], M: int) -> dict:
    if path is not None:
        from moeplan.tables import load_table

        table = load_table(path)
        key, cfg = table.entry_for(M)
        return {"source": "table", "batch_key": key, "config": cfg.to_dict()}
    cfg = default_config(M, spec.E, spec.N, spec.K, spec.topk, spec.config_name,
                         list(spec.block_shape) if spec.block_shape else None)
    return {"source": "default", "batch_key": None, "config": cfg.to_dict()}


def resolution_dict(res: Resolution, tuned_dirs: Sequence[str], env: Mapping[str, str],
                    batch_size: Optional[int] = None) -> dict:
    m = res.model
    tables = []
    found: dict[str, Optional[str]] = {}
    for spec in res.tables():
        path, tried = (None, []) if not res.device_known else find_table(spec.file_name, tuned_dirs, env)
        found[spec.file_name] = path
        t = {"tuning_file": spec.file_name, "found": path, "tried": tried, "E": spec.E, "N": spec.N,
             "devices": list(spec.devices)}
        if batch_size is not None:
            try:
                t["entry"] = _entry(spec, path, batch_size)
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
        "model": {
            "name": m.name, "alias": m.alias, "architecture": m.architecture, "num_experts": m.num_experts,
            "top_k": m.top_k, "hidden_size": m.hidden_size, "moe_intermediate_size": m.moe_intermediate_size,
            "num_shared_experts": m.num_shared_experts, "num_moe_layers": m.num_moe_layers,
            "activation": m.activation,
            "checkpoint_quantization": None if m.quantization is None else m.quantization.describe(),
            "source": m.source,
        },
        "layout": {"tp": lay.tp, "dp": lay.dp, "ep": lay.use_ep, "world_size": lay.world_size,
                   "placement": lay.placement, "all2all_backend": lay.all2all_backend,
                   "device_name": res.device_name},
        "quant": quant_dict(res, d0.num_local_experts, d0.N),
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
    console_.print(f"[bold]{user_text(m['name'])}[/bold] ({user_text(m['alias'] or m['source'])}): "
                  f"E={m['num_experts']} top-{m['top_k']} "
                  f"K={m['hidden_size']} expert width {m['moe_intermediate_size']}")
    console_.print(f"layout: TP={lay['tp']} DP={lay['dp']} {ep}, {lay['world_size']} device(s); "
                  f"device: {user_text(lay['device_name'] or 'unknown (no GPU found; pass --device-name)')}")
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
    qt = Table(title=f"quantization: {q['scheme']}, config name {q['config_name'] or 'None'}")
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
            console_.print(f"   [green]found[/green]: {user_text(t['found'])}", soft_wrap=True)
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
