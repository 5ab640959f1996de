"""A matrix file's tables and their status (present, stale, missing) in the lookup folders, and
`MatrixRun`: the ones `tune --matrix` is to make on this machine.

Pure Python (no torch/triton); looks at the file system when called. Messages go to a `say`
callback (the CLI passes its stdout writer).
"""

from __future__ import annotations

import os
from typing import Callable, Optional


def matrix_rows(path: str, tuned_dir: list[str], shard_text: Optional[str], engine: Optional[str] = None) -> dict:
    """Everything `moeplan matrix` prints: one row per distinct table (with its status) and the
    invalid combinations; shared with `tune --matrix`."""
    from moeplan.fleet import matrix as mx
    from moeplan.base import paths
    from moeplan.tables import staleness
    from moeplan.engines.vllm import engine_config_dir

    from moeplan.base.safeio import check_path

    part = mx.parse_shard(shard_text) if shard_text is not None else None  # the options before the file
    for d in tuned_dir:
        check_path("--tuned-dir", d, "a folder of tuning tables")
    m = mx.load_matrix(path)
    jobs, invalid = mx.expand(m)
    index = {j.file_name: k + 1 for k, j in enumerate(jobs)}  # jobs are sorted by file name
    chosen = mx.shard(jobs, *part) if part else jobs
    dirs = list(tuned_dir) or paths.default_tuned_dirs()
    out_dir = tuned_dir[0] if tuned_dir else paths.DEFAULT_OUT
    inst = staleness.current_installation()
    if engine or m.engine:  # the tables are for that engine profile (--engine, else the matrix's): judge them so
        inst = staleness.Installation(inst.triton_version, engine or m.engine)
    engine_dir = engine_config_dir()
    from moeplan.engines.registry import get_profile
    if get_profile(inst.engine_profile).engine == "sglang":  # roots of configs/triton_*/, SGLang's own package
        from moeplan.engines import sglang
        engine_dir = sglang.engine_config_dir(inst.engine_profile)
    rows = []
    for j in chosen:
        st = staleness.table_status(j.file_name, dirs, os.environ, engine_dir, inst, j.spec.down_file_name)
        rows.append({"job": j, "shard": f"{index[j.file_name]}/{len(jobs)}", "status": st,
                     "command": j.command(m, out_dir)})
    return {"matrix": m, "rows": rows, "invalid": invalid, "total": len(jobs), "out_dir": out_dir, "dirs": dirs}


def tuning_estimate(data: dict, gpus: int = 8):
    """The GPU time to tune `data`'s missing and stale tables (see `moeplan.fleet.estimate`), from
    the CSVs in its lookup folders; None when no CSV was measured."""
    from moeplan.fleet.estimate import estimate, family, measured
    from moeplan.engines.vllm import normalize_device_name

    todo = [(normalize_device_name(r["job"].device), family(r["job"].spec.scheme, bool(r["job"].spec.block_shape)))
            for r in data["rows"] if r["status"].status in ("missing", "stale")]
    return estimate(todo, measured(data["dirs"]), gpus)


class MatrixRun:
    """`tune --matrix`: the tables of a matrix file (or shard) that are to be made in `out`.

    Missing tables are; stale ones only with --force (they are replaced). `plan` says so and
    returns None when there is nothing to do (idempotent CI)."""

    def __init__(self, data: dict, todo: list, label: str):
        self.data, self.todo, self.label = data, todo, label
        self.batch_sizes = data["matrix"].batch_sizes
        self.engine = data["matrix"].engine

    @classmethod
    def plan(cls, path: str, shard_text: Optional[str], out: str, force: bool, engine: Optional[str] = None,
             say: Callable[[str], None] = print) -> "Optional[MatrixRun]":
        data = matrix_rows(path, [out], shard_text, engine)
        rows = data["rows"]
        if not data["total"]:  # nothing valid was asked: an error, never "nothing to tune"
            from moeplan.base.safeio import shown
            from moeplan.fleet.matrix import MatrixError

            bad = data["invalid"]
            first = f"; the first: {bad[0].combination.model} {bad[0].combination.layout.label()} " \
                    f"{bad[0].combination.dtype} on {bad[0].combination.device}: {bad[0].reason}" if bad else ""
            raise MatrixError(f"matrix file {shown(path)}: none of its {len(bad)} combination(s) can be served, so "
                              f"there is no table to tune{first}")
        todo = [r for r in rows if r["status"].status == "missing" or (force and r["status"].status == "stale")]
        label = f"{path}" + (f" (shard {shard_text})" if shard_text else "")
        if not todo:
            n_stale = sum(1 for r in rows if r["status"].status == "stale")
            hint = f", {n_stale} stale: --force re-tunes them" if n_stale else ""
            say(f"nothing to tune: all {len(rows)} table(s) of {label} exist ({out}, the engine's folders{hint})")
            return None
        return cls(data, todo, label)

    def skip_untunable(self, tunable: tuple, say: Callable[[str], None] = print) -> bool:
        """Tables of schemes moeplan's kernel cannot tune yet are listed and left out; False if none is left."""
        for r in self.todo:
            if r["job"].spec.scheme not in tunable:
                say(f"skipped: {r['job'].file_name}: {r['job'].spec.scheme} cannot be tuned with moeplan's "
                    f"kernel yet (tunable: {', '.join(tunable)})")
        self.todo = [r for r in self.todo if r["job"].spec.scheme in tunable]
        if not self.todo:
            say(f"nothing to tune: no table of {self.label} still to make is tunable")
            return False
        return True

    def only_device(self) -> Optional[str]:
        """The one device name the tables to make are for (None if several)."""
        from moeplan.engines.vllm import normalize_device_name

        names = {normalize_device_name(r["job"].device): r["job"].device for r in self.todo}
        return next(iter(names.values())) if len(names) == 1 else None

    def requests(self, device: str, interpret: bool, say: Callable[[str], None] = print) -> list:
        """The tables this machine (GPU `device`) makes, as (TableSpec, Resolution) pairs. Under --interpret `device` is the
        interpreter's own name: interpreter timings never go into a table named for a real GPU,
        so a matrix tuned that way names the device `cpu_interpreter`."""
        from moeplan.engines.vllm import normalize_device_name
        mine = [r for r in self.todo if normalize_device_name(r["job"].device) == normalize_device_name(device)]
        for r in self.todo:
            if r not in mine:
                say(f"skipped: {r['job'].file_name} is for {r['job'].device}, this machine has {device}")
        if not mine:
            say(f"nothing to tune on {device}: the {len(self.todo)} table(s) of {self.label} still to make "
                "are for other GPUs")
        else:
            say(f"tuning {len(mine)} of {len(self.data['rows'])} table(s) of {self.label}")
        return [(r["job"].spec, r["job"].resolution) for r in mine]


def github_include(data: dict, stale: bool = True) -> list[dict]:
    """`matrix --github`'s jobs: the missing tables and (unless `stale` is False) the stale ones,
    so a CI run after a Triton or engine upgrade re-tunes them (`tune --matrix --force` replaces
    a stale table; a job's `force` says whether it needs that)."""
    keep = ("missing", "stale") if stale else ("missing",)
    return [{"table": r["job"].file_name, "device": r["job"].device, "shard": r["shard"],
             "status": r["status"].status, "force": r["status"].status == "stale"}
            for r in data["rows"] if r["status"].status in keep]
