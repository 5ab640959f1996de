"""`moeplan matrix` and `moeplan diff`: tables for a whole fleet. `register(app)` adds them.

Thin shells over `moeplan.matrix`, `moeplan.staleness` and `moeplan.diff`; nothing here
imports torch or triton.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

import typer

from moeplan.cli_common import (BlockOpt, DpOpt, DtypeOpt, EpOpt, PerChannelOpt, PerTokenOpt, PlacementOpt, TpOpt,
                                 one_line_errors)
from moeplan.errors import MoeplanError

TunedDirOpt = typer.Option([], "--tuned-dir", help="Folder of tables to look in (repeatable; $VLLM_TUNED_CONFIG_FOLDER "
                                                   "first, the installed engine's own tables last). Default: ./tuned, "
                                                   "then moeplan's shipped tables.")


def matrix_rows(path: str, tuned_dir: list[str], shard_text: Optional[str], engine: Optional[str] = None) -> dict:
    """Everything `moeplan matrix` prints: one row per distinct table (with its status) and the
    invalid combinations; shared with `tune --matrix`."""
    from moeplan import matrix as mx
    from moeplan import paths, staleness
    from moeplan.engine import engine_config_dir

    m = mx.load_matrix(path)
    part = mx.parse_shard(shard_text) if shard_text is not None else None
    jobs, invalid = mx.expand(m)
    index = {j.file_name: k + 1 for k, j in enumerate(jobs)}  # jobs are sorted by file name
    chosen = mx.shard(jobs, *part) if part else jobs
    dirs = list(tuned_dir) or paths.default_tuned_dirs()
    out_dir = tuned_dir[0] if tuned_dir else paths.DEFAULT_OUT
    inst = staleness.current_installation()
    if engine or m.engine:  # the tables are for that engine profile (--engine, else the matrix's): judge them so
        inst = staleness.Installation(inst.triton_version, engine or m.engine)
    engine_dir = engine_config_dir()
    rows = []
    for j in chosen:
        st = staleness.table_status(j.file_name, dirs, os.environ, engine_dir, inst)
        rows.append({"job": j, "shard": f"{index[j.file_name]}/{len(jobs)}", "status": st,
                     "command": j.command(m, out_dir)})
    return {"matrix": m, "rows": rows, "invalid": invalid, "total": len(jobs), "out_dir": out_dir}


class MatrixRun:
    """`tune --matrix`: the tables of a matrix file (or shard) that are to be made in `out`.

    Missing tables are; stale ones only with --force (they are replaced). Constructing it
    with `plan` prints the summary and exits 0 when there is nothing to do (idempotent CI)."""

    def __init__(self, data: dict, todo: list, label: str):
        self.data, self.todo, self.label = data, todo, label
        self.batch_sizes = data["matrix"].batch_sizes
        self.engine = data["matrix"].engine

    @classmethod
    def plan(cls, path: str, shard_text: Optional[str], out: str, force: bool,
             engine: Optional[str] = None) -> "MatrixRun":
        data = matrix_rows(path, [out], shard_text, engine)
        rows = data["rows"]
        todo = [r for r in rows if r["status"].status == "missing" or (force and r["status"].status == "stale")]
        label = f"{path}" + (f" (shard {shard_text})" if shard_text else "")
        if not todo:
            n_stale = sum(1 for r in rows if r["status"].status == "stale")
            hint = f", {n_stale} stale: --force re-tunes them" if n_stale else ""
            typer.echo(f"nothing to tune: all {len(rows)} table(s) of {label} exist ({out}, the engine's folders"
                       f"{hint})")
            raise typer.Exit(0)
        return cls(data, todo, label)

    def skip_untunable(self, tunable: tuple) -> None:
        """Tables of schemes moeplan's kernel cannot tune yet are listed and left out (exit 0 if none is left)."""
        for r in self.todo:
            if r["job"].spec.scheme not in tunable:
                typer.echo(f"skipped: {r['job'].file_name}: {r['job'].spec.scheme} cannot be tuned with moeplan's "
                           f"kernel yet (tunable: {', '.join(tunable)})")
        self.todo = [r for r in self.todo if r["job"].spec.scheme in tunable]
        if not self.todo:
            typer.echo(f"nothing to tune: no table of {self.label} still to make is tunable")
            raise typer.Exit(0)

    def only_device(self) -> Optional[str]:
        """The one device name the tables to make are for (None if several)."""
        from moeplan.naming import normalize_device_name

        names = {normalize_device_name(r["job"].device): r["job"].device for r in self.todo}
        return next(iter(names.values())) if len(names) == 1 else None

    def requests(self, device: str, interpret: bool) -> list:
        """The tables this machine (GPU `device`) makes. Under --interpret `device` is the
        interpreter's own name: interpreter timings never go into a table named for a real GPU,
        so a matrix tuned that way names the device `cpu_interpreter`."""
        from moeplan.naming import normalize_device_name
        from moeplan.tune.api import TableRequest

        mine = [r for r in self.todo if normalize_device_name(r["job"].device) == normalize_device_name(device)]
        for r in self.todo:
            if r not in mine:
                typer.echo(f"skipped: {r['job'].file_name} is for {r['job'].device}, this machine has {device}")
        if not mine:
            typer.echo(f"nothing to tune on {device}: the {len(self.todo)} table(s) of {self.label} still to make "
                       "are for other GPUs")
        else:
            typer.echo(f"tuning {len(mine)} of {len(self.data['rows'])} table(s) of {self.label}")
        return [TableRequest(r["job"].spec, r["job"].resolution) for r in mine]


@one_line_errors
def matrix(
    file: str = typer.Argument(..., help="Matrix file (.toml, or .json with the same keys)."),
    tuned_dir: List[str] = TunedDirOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: keep the I-th of N disjoint parts of the tables "
                                                              "(1-based; the same for every run of the same file)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {tables, invalid}."),
    github: bool = typer.Option(False, "--github", help="Print a GitHub Actions strategy.matrix {include: [...]} of the "
                                                        "missing tables (one line, for $GITHUB_OUTPUT)."),
):
    """Expand a matrix file to the distinct tables it needs: present, stale or missing, and who uses each."""
    if as_json and github:
        raise MoeplanError("--json and --github both given; pick one output")
    data = matrix_rows(file, tuned_dir, shard)
    if github:
        include = [{"table": r["job"].file_name, "device": r["job"].device, "shard": r["shard"]}
                   for r in data["rows"] if r["status"].status == "missing"]
        typer.echo(json.dumps({"include": include}))
        return
    if as_json:
        tables = [{"file_name": r["job"].file_name, "device": r["job"].device, "status": r["status"].status,
                   "found": r["status"].found,
                   "used_by": [{"model": c.model, "layout": c.layout.to_dict(), "dtype": c.dtype}
                               for c in r["job"].used_by],
                   "command": r["command"]} for r in data["rows"]]
        typer.echo(json.dumps({"tables": tables, "invalid": [i.to_dict() for i in data["invalid"]]}, indent=2))
        return
    _print_matrix(data)


def _print_matrix(data: dict) -> None:
    from rich.table import Table

    from moeplan.report import console

    con = console()
    rows = data["rows"]
    counts = {s: sum(1 for r in rows if r["status"].status == s) for s in ("present", "stale", "missing")}
    t = Table(title=f"{data['matrix'].source}: {len(rows)} table(s) ({counts['present']} present, "
                    f"{counts['stale']} stale, {counts['missing']} missing)", title_justify="left")
    for col in ("table", "status", "where / why", "used by"):
        t.add_column(col, overflow="fold")
    style = {"present": "green", "stale": "yellow", "missing": "red"}
    for r in rows:
        st = r["status"]
        where = (st.found or "-") + "".join(f"\n{x}" for x in st.reasons)
        users = "\n".join(f"{c.model} {c.layout.label()} {c.dtype}" for c in r["job"].used_by)
        t.add_row(r["job"].file_name, f"[{style[st.status]}]{st.status}[/]", where, users)
    con.print(t)
    for i in data["invalid"]:
        c = i.combination
        con.print(f"invalid: {c.model} {c.layout.label()} {c.dtype} on {c.device}: {i.reason}", soft_wrap=True)


@one_line_errors
def diff(
    a: str = typer.Argument(..., help="A tuning table, or a folder of them."),
    b: str = typer.Argument(..., help="Another table, or another folder (tables matched by file name)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    measure: bool = typer.Option(False, "--measure", help="Also time, at every batch size where they differ, the config "
                                                          "each side's engine would run (the tuner's timing, one GPU)."),
    model: Optional[str] = typer.Option(None, "--model", help="With --measure: the model whose tables these are (preset, "
                                                              "repo id or config.json), for K, top-k and the experts."),
    tp: TpOpt = 1,
    dp: DpOpt = 1,
    ep: EpOpt = False,
    placement: PlacementOpt = "linear",
    dtype: DtypeOpt = "auto",
    block_shape: BlockOpt = None,
    per_token: PerTokenOpt = False,
    per_channel: PerChannelOpt = False,
    gpu: int = typer.Option(0, "--gpu", help="With --measure: the GPU index to time on."),
    interpret: bool = typer.Option(False, "--interpret", help="With --measure: Triton's CPU interpreter (tests only)."),
):
    """Per batch size: which configs changed (and which knobs), which keys only one side has. Exit 1 if they differ."""
    from moeplan.diff import describe, diff_paths

    if measure and model is None:
        raise MoeplanError("--measure needs --model MODEL (with the --tp/--dp/--ep/--dtype of the layout that loads "
                           "the tables): the file names lack K, top-k and the expert placement")
    d = diff_paths(a, b)
    timed = _measure(d, model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel, gpu, interpret) \
        if measure else None
    if as_json:
        obj = d.to_dict()
        if timed is not None:
            obj["measured_on"] = timed["device"]
            for t in obj["tables"]:
                t["measured"] = timed["tables"].get(t["file_name"], [])
        typer.echo(json.dumps(obj, indent=2))
    else:
        for line in describe(d):
            typer.echo(line)
        if timed is not None:
            typer.echo(f"measured on {timed['device']} (the tuner's timing, median of the routing draws):")
            for name, rows in timed["tables"].items():
                typer.echo(name if rows else f"{name}: both sides run the same config at every batch size")
                for r in rows:
                    if r["speedup"] is None:
                        typer.echo(f"  M={r['M']}: A {r['a_status']}, B {r['b_status']}")
                    else:
                        typer.echo(f"  M={r['M']}: A {r['a_us']:.1f} us, B {r['b_us']:.1f} us, B/A speed-up "
                                   f"{r['speedup']:.3f}x")
    raise typer.Exit(0 if d.identical else 1)


def _measure(d, model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel, gpu: int,
             interpret: bool) -> dict:
    """Time both sides of every differing table on one GPU (or the interpreter); TuneError/TableError on bad input."""
    import importlib.util

    from moeplan.cli_common import resolution_from_options
    from moeplan.diff import engine_choices
    from moeplan.errors import TableError, TuneError
    from moeplan.naming import parse_tuning_file_name

    missing = [m for m in ("torch", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        raise TuneError(f"diff --measure needs {' and '.join(missing)} (not installed); install the kernel extra: "
                        "pip install -e '.[kernels]'")
    import triton

    if interpret:
        device = "Triton's CPU interpreter"
        gpu_index = None
    else:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpu < 0 or gpu >= count:
            raise TuneError(f"--gpu {gpu}: no such CUDA GPU (visible: {count}); --measure times on a GPU "
                            "(or --interpret, for tests)")
        device, gpu_index = torch.cuda.get_device_name(gpu), gpu
    from moeplan.tune.api import TableRequest, time_configs

    out: dict = {"device": device, "tables": {}}
    for t in d.tables:
        name = t.file_name.split(" | ")[0]
        try:
            info = parse_tuning_file_name(name)
        except TableError as e:
            raise TableError(f"--measure needs engine file names to find the shape: {e}") from None
        res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                      info["device"], detect_device=False)
        spec = next((s for s in res.tables() if s.file_name == name), None)
        if spec is None:
            raise TableError(f"{name} is not a table of {model} with this layout (it needs "
                             f"{', '.join(s.file_name for s in res.tables())}); pass the --tp/--dp/--ep/--dtype that "
                             "load it")
        pairs = engine_choices(t)
        rows = []
        if pairs:
            got = time_configs(TableRequest(spec, res), {M: [ca, cb] for M, (ca, cb) in pairs.items()},
                               gpu=gpu_index, interpret=interpret, device_name=info["device"],
                               triton_version=triton.__version__, timer=os.environ.get("MOEPLAN_TUNE_TIMER") or None)
            for M, (ca, cb) in sorted(pairs.items()):
                ra, rb = got.get((M, ca), {}), got.get((M, cb), {})
                ok = ra.get("status") == "ok" and rb.get("status") == "ok"
                rows.append({"M": M, "a": ca.to_dict(), "b": cb.to_dict(),
                             "a_us": ra.get("median_us"), "b_us": rb.get("median_us"),
                             "a_status": ra.get("status", "missing"), "b_status": rb.get("status", "missing"),
                             "speedup": ra["median_us"] / rb["median_us"] if ok and rb["median_us"] else None})
        out["tables"][t.file_name] = rows
    return out


def register(app: typer.Typer) -> None:
    """Add `matrix` and `diff` to a typer app."""
    app.command("matrix")(matrix)
    app.command("diff")(diff)
