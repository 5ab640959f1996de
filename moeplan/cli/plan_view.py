"""The human output of `moeplan plan`: a compact ranked table that fits the terminal (the columns
that do not fit are named under it; numbers are never cut), `--wide` for every column, and the
tables legend with every file name whole on its own line."""

from __future__ import annotations


def count(n: int) -> str:
    """A count in at most 5 characters, never cut: 950, 12.3k, 456k, 1.23M."""
    if n < 10_000:
        return str(n)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return str(n)  # pragma: no cover


def print_plan(result, choice, wide: bool = False) -> None:
    from moeplan.cli.render import console, fit_table, left_out_line, user_text
    from moeplan.planner.kvcache import RESERVE_TEXT
    from moeplan.planner.plan import RANKING

    c = console(wide)
    m, card, req = result.model, result.card, result.request
    c.print(f"[bold]{user_text(m.name)}[/bold] ({user_text(m.alias)}) on {req.gpus} x {user_text(card.name)} "
            f"({card.memory_gib:.1f} GiB, {card.copy_bandwidth_Bps / 1e12:.2f} TB/s copy; "
            f"{user_text(result.card_reason)})")
    c.print(f"engine profile {choice.profile.name} ({user_text(choice.reason)}); a layout without its table runs "
            f"the {choice.profile.heuristic} default heuristic"
            + (f"; warning: {user_text(choice.warning)}" if choice.warning else ""))
    c.print(f"memory: --gpu-memory-utilization {req.gpu_memory_utilization:g} of the GPU for weights, a reserve of "
            f"{RESERVE_TEXT} and the KV cache ({req.kv_cache_dtype}); seqs: concurrent sequences of "
            f"--context-len {req.context_len} tokens")
    c.print(f"ranked: {RANKING}")
    tags: dict[str, str] = {}
    for lp in result.layouts:
        for t in lp.tables:
            tags.setdefault(t.spec.file_name, f"T{len(tags) + 1}")
    Ms = list(req.batch_sizes)
    keep_M = {Ms[0]: 90, Ms[-1]: 89}
    cols = [{"header": "#", "justify": "right"}, {"header": "TP", "justify": "right"},
            {"header": "DP", "justify": "right"}, {"header": "EP"}, {"header": "fits"},
            {"header": "weights\nGiB", "justify": "right", "keep": 70},
            {"header": "experts\nGiB", "justify": "right", "keep": 12},
            {"header": "other\nGiB", "justify": "right", "keep": 11},
            {"header": "free\nGiB", "justify": "right", "keep": 13},
            {"header": "KV\nGiB", "justify": "right", "keep": 30},
            {"header": "KV\ntokens", "justify": "right", "keep": 85},
            {"header": "seqs", "justify": "right", "keep": 80},
            *[{"header": f"M={M}\nms", "justify": "right", "keep": keep_M.get(M, 60 - i)} for i, M in enumerate(Ms)],
            {"header": "source", "keep": 40},
            {"header": "comm\nB/tok", "justify": "right", "keep": 20},
            {"header": f"comm ms\nM={Ms[-1]}", "justify": "right", "keep": 35},
            {"header": "tables", "keep": 75}]
    rows = []
    rr = False
    for i, lp in enumerate(result.layouts, 1):
        lay, mem = lp.res.layout, lp.memory.gib()
        if lay.use_ep:
            short = {"linear": "", "round_robin": " rr"}.get(lay.placement, " " + lay.placement)
            rr = rr or lay.placement == "round_robin"
            ep = f"{lay.world_size} {lay.placement}" if wide else f"{lay.world_size}{short}"
        else:
            ep = "off"
        fits = "yes" if lp.fits else ("[red]no[/red]" if not lp.memory.fits else "[red]no KV[/red]")
        tabs = " ".join(f"{tags[x.spec.file_name]}{'+' if x.path else '-'}" for x in lp.tables)
        kv = lp.kv
        rows.append([str(i), str(lay.tp), str(lay.dp), ep, fits, f"{mem['total']:.1f}", f"{mem['experts']:.1f}",
                     f"{mem['other']:.1f}", f"{mem['free']:.1f}", f"{kv.kv_bytes / 1024 ** 3:.1f}",
                     f"{kv.tokens:,}" if wide else count(kv.tokens), f"{kv.sequences:,}" if wide else count(kv.sequences),
                     *[f"{lp.moe_us[M] / 1000:.2f}" for M in Ms], lp.source,
                     f"{lp.comm.bytes_per_token:,.0f} {lp.comm.kind}" if wide else f"{lp.comm.bytes_per_token:,.0f}",
                     f"{lp.comm_us[Ms[-1]] / 1000:.2f}", tabs])
    title = (f"{len(result.layouts)} valid layouts; MoE time per step = kernel x {m.num_moe_layers} MoE layers, ms; "
             f"KV per fullest device")
    table, left_out = fit_table(c, title, cols, rows, wide)
    c.print(table)
    if left_out:
        c.print(left_out_line(left_out))
    if rr and not wide:
        c.print("EP: experts over N devices, linear placement; rr: round_robin placement")
    c.print("tables (+ found, - missing: the engine runs its default config):")
    seen = {}
    for lp in result.layouts:
        for x in lp.tables:
            seen.setdefault(x.spec.file_name, x)
    for name, x in seen.items():
        c.print(f"  {tags[name]} {user_text(name)}", soft_wrap=True)
        where = f"found {user_text(x.path)}" if x.path else "missing"
        meas = " (CSV: measured times)" if x.measured else ""
        c.print(f"     {where}{meas}", soft_wrap=True)
    used = sorted({n for lp in result.layouts for n in lp.ratio_from})
    if used:
        c.print("modelled = roofline floor x the measured/floor ratio of the most similar measured table, same card "
                "first (winner's if the table exists, the default's if not):")
        for n in used:
            c.print(f"  {user_text(n)}", soft_wrap=True)
    unknown = sorted({u for lp in result.layouts for u in lp.memory.unknown})
    if unknown:
        c.print(f"[yellow]not in the model's facts, counted as 0[/yellow]: {', '.join(unknown)}")
