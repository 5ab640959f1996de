"""`moeplan plan` and `moeplan report`: the command-line shell over `moeplan.planner` (the
ranking, `planner.plan`; the tables and CSVs it reads, `planner.data`; the pictures,
`planner.report`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from moeplan.base.safeio import printable
from moeplan.cli.options import DtypeOpt, ModelArg


def plan(
    model: ModelArg,
    gpus: int = typer.Option(..., "--gpus", help="Number of GPUs to serve the model on."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (default: min(G, 8)); "
                                                "a group larger than this crosses nodes and uses --node-link-gbps."),
    dtype: DtypeOpt = "auto",
    device_name: Optional[str] = typer.Option(None, "--device-name", help="GPU name, e.g. 'NVIDIA H200' "
                                              "(default: NVIDIA H100 80GB HBM3, the card of moeplan's tables)."),
    gpu_mem: Optional[str] = typer.Option(None, "--gpu-mem", help="GiB per GPU (overrides the card's memory; "
                                            "lets an unknown --device-name be planned)."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", help="Tokens per step, comma-separated "
                                              "(default 1,16,64,256,1024)."),
    tuned_dir: List[str] = typer.Option([], "--tuned-dir", help="Folder of tuning tables and their CSVs "
                                        "(repeatable; default: moeplan's tuned/)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine profile (vllm-0.10, vllm-0.33; default: "
                                         "the installed vllm's, else the newest): its default-config heuristic is "
                                         "what a layout without a table runs."),
    link_gbps: float = typer.Option(3600.0, "--link-gbps", help="Link bandwidth inside a node, Gbit/s per GPU and "
                                    "direction (default 3600: NVLink 4, 450 GB/s)."),
    node_link_gbps: float = typer.Option(400.0, "--node-link-gbps", help="Link bandwidth between nodes, Gbit/s per "
                                         "GPU (default 400: one NDR InfiniBand port)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
):
    """Rank every valid TP/DP/EP layout of MODEL on G GPUs: memory per device, MoE time, communication, tables."""
    from moeplan.planner.data import plan_model
    from moeplan.planner.plan import PlanRequest, parse_batch_sizes

    req = PlanRequest(gpus=gpus, gpus_per_node=gpus_per_node, dtype=dtype, batch_sizes=parse_batch_sizes(batch_sizes),
                      link_gbps=link_gbps, node_link_gbps=node_link_gbps)
    result, choice = plan_model(model, req, device_name, gpu_mem, engine, tuned_dir, dict(os.environ))
    if as_json:
        data = result.to_dict()
        data["engine"] = {"profile": choice.profile.name, "reason": choice.reason, "warning": choice.warning,
                          "default_heuristic": choice.profile.heuristic}
        typer.echo(json.dumps(data, indent=2))
        return
    print_plan(result, choice)


def print_plan(result, choice) -> None:
    from rich.table import Table

    from moeplan.cli.render import console, user_text as u
    from moeplan.planner.plan import MEMORY_UTILIZATION, RANKING

    c = console()
    m, card, req = result.model, result.card, result.request
    c.print(f"[bold]{u(m.name)}[/bold] ({u(m.alias)}) on {req.gpus} x {u(card.name)} "
            f"({card.memory_gib:.1f} GiB, {card.copy_bandwidth_Bps / 1e12:.2f} TB/s copy; {u(result.card_reason)})")
    c.print(f"engine profile {choice.profile.name} ({u(choice.reason)}); a layout without its table runs the "
            f"{choice.profile.heuristic} default heuristic" + (f"; warning: {u(choice.warning)}" if choice.warning else ""))
    c.print(f"fits: weights <= {MEMORY_UTILIZATION:.0%} of the GPU (the engine's default memory utilization); "
            f"ranked: {RANKING}")
    tags: dict[str, str] = {}
    for lp in result.layouts:
        for t in lp.tables:
            tags.setdefault(t.spec.file_name, f"T{len(tags) + 1}")
    Ms = list(req.batch_sizes)
    t = Table(title=f"{len(result.layouts)} valid layouts; MoE time = kernel x {m.num_moe_layers} MoE layers, "
                    f"per step, ms")
    for col in ("#", "TP", "DP", "EP", "fits", "experts GiB", "other GiB", "total GiB", "free GiB",
                *[f"M={M}" for M in Ms], "source", "comm B/tok", f"comm ms M={Ms[-1]}", "tables"):
        t.add_column(col, justify="right" if col not in ("EP", "fits", "source", "tables") else "left")
    for i, lp in enumerate(result.layouts, 1):
        lay, mem = lp.res.layout, lp.memory.gib()
        ep = f"{lay.world_size} {lay.placement}" if lay.use_ep else "off"
        tabs = " ".join(f"{tags[x.spec.file_name]}{'+' if x.path else '-'}" for x in lp.tables)
        t.add_row(str(i), str(lay.tp), str(lay.dp), ep, "yes" if lp.memory.fits else "[red]no[/red]",
                  f"{mem['experts']:.1f}", f"{mem['other']:.1f}", f"{mem['total']:.1f}", f"{mem['free']:.1f}",
                  *[f"{lp.moe_us[M] / 1000:.2f}" for M in Ms], lp.source,
                  f"{lp.comm.bytes_per_token:,.0f} {lp.comm.kind}", f"{lp.comm_us[Ms[-1]] / 1000:.2f}", tabs)
    c.print(t)
    c.print("tables (+ found, - missing: the engine runs its default config):")
    seen = {}
    for lp in result.layouts:
        for x in lp.tables:
            seen.setdefault(x.spec.file_name, x)
    for name, x in seen.items():
        where = f"found {u(x.path)}" if x.path else "missing"
        meas = " (CSV: measured times)" if x.measured else ""
        c.print(f"  {tags[name]} {u(name)}: {where}{meas}", soft_wrap=True)
    used = sorted({n for lp in result.layouts for n in lp.ratio_from})
    if used:
        c.print("modelled = roofline floor x the measured/floor ratio of the most similar measured table "
                f"(winner's if the table exists, the default's if not): {u(', '.join(used))}", soft_wrap=True)
    unknown = sorted({u for lp in result.layouts for u in lp.memory.unknown})
    if unknown:
        c.print(f"[yellow]not in the model's facts, counted as 0[/yellow]: {u(', '.join(unknown))}")


def report_cmd(
    folder: str = typer.Argument(..., help="Folder of tuning tables (*.json) with their CSVs."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Another folder whose tables of the same names to compare."),
    out: Optional[str] = typer.Option(None, "--out", help="Where to write the PNGs and index.md "
                                      "(default: ./<FOLDER's name>-report)."),
):
    """One PNG per table (time per batch size: tuned winner vs the default heuristic, roofline fraction) and an index."""
    from moeplan.planner.report import ChartError, make_report

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ChartError("report needs matplotlib, which is not installed: pip install 'moeplan[kernels]' "
                         "(the kernels extra; the test extra has it too)") from None
    index = make_report(folder, out, vs)
    typer.echo(f"wrote {printable(index)}")

