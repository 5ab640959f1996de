"""Rich rendering of `resolve` and `models` output, and the console and user-text rules every
command's output follows (markup escaped, control characters written as escapes)."""

from __future__ import annotations

from typing import Sequence

from moeplan.engines.vllm import ENV_TUNED_FOLDER
from moeplan.base.safeio import printable


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
    if eng["rules"].get("engine") == "sglang":
        _print_sglang_tables(console_, data, tag)
        return
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
            _print_entry(console_, t["entry"], data["batch_size"])


def _sglang_where(console_, t: dict, lay: dict, is_down: bool) -> None:
    """Where SGLang loads one table from (bundled, a fallback Triton folder, $SGLANG_MOE_CONFIG_DIR,
    the up table for a `_down` name, or its default rule), and how to make it load moeplan's."""
    if not lay["device_name"]:
        console_.print("   [yellow]device unknown[/yellow]: pass --device-name to name and look up the file")
        return
    via, loads = t["engine_loads_via"], t["engine_loads"]
    if loads:
        how = {"exact": "its Triton folder", "fallback": f"fallback folder {t['triton_folder']}",
               "up table": "the up table (no _down file)"}.get(via, via)
        console_.print(f"   SGLang loads ({how}, root {user_text(t['engine_root_reason'])}): {user_text(loads)}",
                       soft_wrap=True)
    else:
        rule = "GEMM2 runs the up entry, else the default rule" if is_down else "its default config"
        console_.print(f"   [red]SGLang loads no file[/red]: {rule}", soft_wrap=True)
    if t["found"] and t["found"] != loads:
        console_.print(f"   [green]found ({'tuned' if t['source'] == 'tuned' else t['source']})[/green]: "
                       f"{user_text(t['found'])}", soft_wrap=True)
    if t["export"]:
        console_.print(f"   to make SGLang load it: {user_text(t['export'])}", soft_wrap=True)
    if t["copy_bundled"]:
        console_.print(f"   that hides the bundled tables; copy them first: {user_text(t['copy_bundled'])}",
                       soft_wrap=True)
    for w in t["warnings"]:
        console_.print(f"   [yellow]warning[/yellow]: {user_text(w)}", soft_wrap=True)
    if "entry" in t:
        _print_entry(console_, t["entry"], t.get("_batch_size"))


def _print_entry(console_, e: dict, M) -> None:
    """The entry (or default config) a batch of M tokens runs, or why it cannot be read."""
    if e["source"] == "error":
        console_.print(f"   M={M}: {user_text(e['error'])}", soft_wrap=True)
    else:
        where = f"entry {e['batch_key']}" if e["source"] == "table" else "the default heuristic"
        cfg = ", ".join(f"{k}={v}" for k, v in e["config"].items())
        console_.print(f"   M={M} uses {where}: {cfg}", soft_wrap=True)


def _print_sglang_tables(console_, data: dict, tag: dict) -> None:
    eng, lay = data["engine"], data["layout"]
    console_.print(f"SGLang reads configs/{eng['triton_folder']} first (Triton {eng['triton_version']}: "
                   f"{user_text(eng['triton_version_reason'])}), then the other triton_* folders newest first",
                   soft_wrap=True)
    console_.print(f"shared expert: {user_text(data['shared_expert_merge'])}", soft_wrap=True)
    for w in eng["warnings"]:
        console_.print(f"[yellow]warning[/yellow]: {user_text(w)}", soft_wrap=True)
    console_.print("[bold]tuning tables[/bold]")
    for t in data["tables"]:
        console_.print(f"{tag[t['tuning_file']]} {user_text(t['tuning_file'])}  (devices {_compact_ids(t['devices'])}; "
                       f"E={t['E']} top-{t['topk']})", soft_wrap=True)
        _sglang_where(console_, {**t, "_batch_size": data["batch_size"]}, lay, False)
        if "down" in t:
            d = t["down"]
            console_.print(f"   GEMM2: {user_text(d['tuning_file'])}", soft_wrap=True)
            _sglang_where(console_, {**d, "_batch_size": data["batch_size"]}, lay, True)


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
