"""Rich rendering of `resolve` and `models` output, and the console and user-text rules every
command's output follows (markup escaped, control characters written as escapes)."""

from __future__ import annotations

from typing import Sequence

from moeplan.engines.vllm import ENV_TUNED_FOLDER
from moeplan.base.safeio import printable


def _compact_ids(ids: Sequence[int]) -> str:
    """[0,1,2,3,8] -> '0-3, 8'; an even stride of 4 or more ids -> '0-240 step 16'. Never cut:
    a long list wraps at its spaces."""
    if not ids:
        return "-"
    ids = list(ids)
    if len(ids) >= 4:
        step = ids[1] - ids[0]
        if step > 1 and all(b - a == step for a, b in zip(ids, ids[1:])):
            return f"{ids[0]}-{ids[-1]} step {step}"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def user_text(value) -> str:
    """User data (names, paths, messages) as rich prints it literally: markup escaped, control
    characters written as escapes. Every user string printed through rich goes through here."""
    from rich.markup import escape

    return escape(printable(value))


def terminal_width() -> int:
    """The width output is laid out for: $COLUMNS when it is a positive integer (also in pipes and
    tests), else the terminal's width, else 200 (pipes and logs: wide enough that names never fold)."""
    import os
    import shutil
    import sys

    text = os.environ.get("COLUMNS", "").strip()
    if text.isdigit() and 20 <= int(text) <= 10000:
        return int(text)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return 200


def console(wide: bool = False):
    """A rich console laid out for `terminal_width()`; `wide`: at least 250 columns, so a --wide
    table is never squeezed (a terminal folds its long lines, rich cuts nothing)."""
    from rich.console import Console

    width = terminal_width()
    return Console(highlight=False, width=max(width, 250) if wide else width)


def fit_table(con, title: str, columns: list[dict], rows: list[list[str]], wide: bool = False):
    """A rich Table of the columns that fit `con`'s width whole: nothing in it is ever cut.

    `columns`: dicts with `header`, optional `justify` ("right" for numbers), `keep` (a priority:
    the lowest goes first while the table is too wide; None never goes) and `wrap` (a text column
    whose cell may wrap at its spaces). Returns (table, headers of the columns left out). `wide`:
    every column, the full box."""
    from rich import box
    from rich.table import Table

    active = list(range(len(columns)))

    def narrowest(cell: str) -> str:  # a wrapping cell at its narrowest: its longest word
        from rich.markup import escape
        from rich.text import Text

        words = Text.from_markup(cell).plain.split() or [""]
        return escape(max(words, key=len))

    def build(idx, rows=rows):
        t = Table(title=title, title_justify="left", box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=wide, show_edge=wide, collapse_padding=not wide)
        for i in idx:
            c = columns[i]
            t.add_column(c["header"], justify=c.get("justify", "left"), no_wrap=not c.get("wrap"),
                         overflow="fold")
        for r in rows:
            t.add_row(*(r[i] for i in idx))
        return t

    while True:
        t = build(active)
        if wide:
            return t, []
        probe = build(active, [[narrowest(c) if columns[i].get("wrap") else c for i, c in enumerate(r)]
                               for r in rows])
        need = table_width(con, probe)
        droppable = [i for i in active if columns[i].get("keep") is not None]
        if need <= con.width or not droppable:
            return t, [columns[i]["header"].replace("\n", " ") for i in range(len(columns))
                       if i not in active]
        active.remove(min(droppable, key=lambda i: (columns[i]["keep"], -i)))


def table_width(con, table) -> int:
    """The columns a renderable takes when nothing squeezes it."""
    from rich.measure import Measurement

    return Measurement.get(con, con.options.update_width(100_000), table).maximum


def indented(con, text: str, indent: int = 3) -> None:
    """Prose under a heading: wrapped at spaces to the width, every line indented."""
    from rich.padding import Padding

    con.print(Padding(text, (0, 0, 0, indent)))


def wrapped(line: str, width: int) -> str:
    """A plain line wrapped at its spaces to `width`, continuation lines indented under its text;
    words (numbers, file names) are never broken."""
    import textwrap

    lead = len(line) - len(line.lstrip(" "))
    return textwrap.fill(line, width, subsequent_indent=" " * (lead + 4), break_long_words=False,
                         break_on_hyphens=False) or line


def left_out_line(headers: list[str]) -> str:
    """The one line under a compact table that names what --wide adds."""
    names = ", ".join(h.replace("\n", " ") for h in headers)
    return f"(not shown at this width: {names}; --wide shows every column)"


def print_resolution(data: dict, wide: bool = False) -> None:
    console_ = console(wide)
    m, lay, q = data["model"], data["layout"], data["quant"]
    ep = f"EP={lay['world_size']} ({lay['placement']})" if lay["ep"] else "EP off"
    console_.print(f"[bold]{user_text(m['name'])}[/bold] ({user_text(m['alias'])}): "
                   f"E={m['num_experts']} top-{m['top_k']} "
                   f"K={m['hidden_size']} expert width {m['moe_intermediate_size']}")
    console_.print(f"layout: TP={lay['tp']} DP={lay['dp']} {ep}, {lay['world_size']} device(s); "
                   f"device: {user_text(lay['device_name'] or 'unknown (no GPU found; pass --device-name)')}")
    eng = data["engine"]
    shipped = user_text(eng["configs_dir"] or f"none ({eng['configs_dir_reason']})")
    console_.print(f"engine profile: {eng['profile']} ({user_text(eng['reason'])}); shipped tables:")
    console_.print(f"   {shipped}", soft_wrap=bool(eng["configs_dir"]))
    tag = {t["tuning_file"]: f"T{i + 1}" for i, t in enumerate(data["tables"])}
    if lay["ep"]:
        title = (f"the MoE layer's ranks per device (rank/size): under EP each expert is whole on one device, so "
                 f"the MoE TP size is 1 (attention still runs TP={lay['tp']})")
    else:
        title = "the MoE layer's ranks per device (rank/size)"
    cols = [{"header": "device", "justify": "right"}, {"header": "MoE TP"}, {"header": "MoE DP"},
            {"header": "MoE EP"}, {"header": "experts", "justify": "right"},
            {"header": "local experts", "wrap": True}, {"header": "N", "justify": "right"}, {"header": "table"}]
    rows = [[str(d["device"]), f"{d['tp_rank']}/{d['tp_size']}", f"{d['dp_rank']}/{d['dp_size']}",
             f"{d['ep_rank']}/{d['ep_size']}" if d["use_ep"] else "off", str(d["num_local_experts"]),
             _compact_ids(d["local_experts"]), str(d["N"]), tag[d["tuning_file"]]] for d in data["devices"]]
    dev, _ = fit_table(console_, title, cols, rows, wide)
    console_.print(dev)
    if any(d["use_all2all_kernels"] for d in data["devices"]):
        console_.print(f"all-to-all kernels: on (backend {user_text(lay['all2all_backend'])})")
    in_name = f"dtype={q['config_name']}" if q["config_name"] else "no dtype="
    rows = []
    for op in ("a1", "a2", "w1", "w2"):
        o = q[op]
        shape = "(" + ", ".join(map(str, o["scale_shape"])) + ")" if o["scale_shape"] else "-"
        rows.append([op, o["dtype"] or f"{q['activation_dtype']} (unquantized)", o["group"] or "-", shape])
    qt, _ = fit_table(console_, f"quantization: {q['scheme']} (file names: {in_name})",
                      [{"header": "operand"}, {"header": "dtype", "wrap": True}, {"header": "group"},
                       {"header": "scale shape"}], rows, wide)
    console_.print(qt)
    if eng["rules"].get("engine") == "sglang":
        _print_sglang_tables(console_, data, tag)
        return
    console_.print("[bold]tuning tables[/bold]")
    for t in data["tables"]:
        devs = _compact_ids(t["devices"])
        console_.print(f"{tag[t['tuning_file']]} {user_text(t['tuning_file'])}", soft_wrap=True)
        console_.print(f"   devices {devs}")
        if t["found"]:
            where = "shipped with the engine" if t["source"] == "engine" else "tuned"
            console_.print(f"   [green]found ({where})[/green]: {user_text(t['found'])}", soft_wrap=True)
            if t["export"]:
                loads = (f"it loads {user_text(t['engine_loads'])} instead" if t["engine_loads"]
                         else "it uses its default config")
                indented(console_, f"the engine will not load it until {ENV_TUNED_FOLDER} names its folder ({loads}):")
                console_.print(f"   {user_text(t['export'])}", soft_wrap=True)
        elif not lay["device_name"]:
            console_.print("   [yellow]device unknown[/yellow]: pass --device-name to name and look up the file")
        else:
            console_.print("   [red]missing[/red]: the engine would use its default config; tried:")
            for tried in t["tried"] or ["no folder given"]:
                console_.print(f"     {user_text(tried)}", soft_wrap=True)
            if t.get("command"):
                console_.print("   make it on a GPU of that kind with:")
                console_.print(f"   {user_text(t['command'])}", soft_wrap=True)
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
        indented(console_, f"M={M} uses {where}: {cfg}")


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


def print_models(rows: list[dict], wide: bool = False) -> None:
    """The presets as a table that fits the width: alias, experts and widths always; the repo id,
    checkpoint and the rest while there is room (a line names what --wide adds)."""
    con = console(wide)
    title = f"{len(rows)} model presets"
    if not rows:
        con.print(title)
        return
    # keep: None never leaves; lower numbers leave first when the table is too wide
    keep = {"repo_id": 1, "moe_layers": 2, "shared_experts": 3, "quantization": 4, "hidden": 5}
    numeric = {"experts", "top_k", "hidden", "expert_width"}
    from moeplan.model.load import PRESET_COLUMNS

    headers = dict(PRESET_COLUMNS)
    cols = [{"header": headers.get(k, str(k)), "keep": keep.get(k),
             "justify": "right" if k in numeric else "left"} for k in rows[0]]
    body = [["-" if v is None else user_text(v) for v in r.values()] for r in rows]
    t, left = fit_table(con, title, cols, body, wide)
    con.print(t)
    if left:
        con.print(left_out_line(left))
