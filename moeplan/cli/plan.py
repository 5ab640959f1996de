"""`moeplan plan` and `moeplan report`: the command-line shell over `moeplan.planner` (the
ranking, `planner.plan`; the tables and CSVs it reads, `planner.data`; the pictures,
`planner.report`).
"""

from __future__ import annotations

import json
import os
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
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine profile (vllm-0.12, vllm-0.25, vllm-0.33; default: "
                                         "the installed vllm's, else the newest): its default-config heuristic is "
                                         "what a layout without a table runs. SGLang profiles are not planned yet."),
    link_gbps: float = typer.Option(3600.0, "--link-gbps", help="Link bandwidth inside a node, Gbit/s per GPU and "
                                    "direction (default 3600: NVLink 4, 450 GB/s)."),
    node_link_gbps: float = typer.Option(400.0, "--node-link-gbps", help="Link bandwidth between nodes, Gbit/s per "
                                         "GPU (default 400: one NDR InfiniBand port)."),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="The engine's fraction of "
                                                 "GPU memory for weights, activations and the KV cache (default 0.9)."),
    context_len: int = typer.Option(8192, "--context-len", help="Tokens per sequence: seqs = KV-cache tokens / this "
                                    "(default 8192)."),
    kv_cache_dtype: str = typer.Option("auto", "--kv-cache-dtype", help="auto (the model's dtype, bf16) | fp8 "
                                       "(one byte per cached value)."),
    wide: bool = typer.Option(False, "--wide", help="Every column, whatever the terminal's width."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
):
    """Rank every valid TP/DP/EP layout of MODEL on G GPUs: memory per device, MoE time, communication, tables."""
    from moeplan.planner.data import plan_model
    from moeplan.planner.plan import PlanRequest, parse_batch_sizes

    req = PlanRequest(gpus=gpus, gpus_per_node=gpus_per_node, dtype=dtype, batch_sizes=parse_batch_sizes(batch_sizes),
                      link_gbps=link_gbps, node_link_gbps=node_link_gbps,
                      gpu_memory_utilization=gpu_memory_utilization, context_len=context_len,
                      kv_cache_dtype=kv_cache_dtype)
    result, choice = plan_model(model, req, device_name, gpu_mem, engine, tuned_dir, dict(os.environ))
    if as_json:
        data = result.to_dict()
        data["engine"] = {"profile": choice.profile.name, "reason": choice.reason, "warning": choice.warning,
                          "default_heuristic": choice.profile.heuristic}
        typer.echo(json.dumps(data, indent=2))
        return
    from moeplan.cli.plan_view import print_plan

    print_plan(result, choice, wide)


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
        raise ChartError("report needs matplotlib, which is not installed: pip install 'moeplan[report]' "
                         "(the report extra: matplotlib only, no torch or Triton)") from None
    index = make_report(folder, out, vs)
    typer.echo(f"wrote {printable(index)}")

