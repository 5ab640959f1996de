"""`moeplan export`: copy exactly the tables the engine will look up for a layout (or for every
combination of a matrix file) into one folder the engine can be pointed at.

The tables are found where `resolve` finds them ($VLLM_TUNED_CONFIG_FOLDER, the --tuned-dirs,
default ./tuned then moeplan's shipped tables); each is read and checked (a table the engine
could not load is an error, never copied), and every destination is checked before the first
copy: a file of the same name with other bytes is refused without `force`. Copies are atomic
(a temporary file in the destination folder, then a rename): an interrupted export leaves either
the old file or the new one. The result names the tables that are missing with the `moeplan
tune` command that makes each, the `VLLM_TUNED_CONFIG_FOLDER=...` line and `vllm serve` examples
with the layout's parallelism flags.

No torch or triton; touches the file system only when called.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from moeplan.base.errors import MoeplanError
from moeplan.engines.vllm import ENV_TUNED_FOLDER


class ExportError(MoeplanError):
    """A destination that is not a folder, a file that would be overwritten, or a bad table."""


@dataclass(frozen=True)
class Wanted:
    file_name: str
    command: str  # the `moeplan tune` invocation that makes it
    used_by: tuple[str, ...] = ()  # "model layout dtype" labels (matrix exports)


@dataclass
class ExportResult:
    to: str  # the destination folder, absolute
    copied: list[dict] = field(default_factory=list)  # file_name, source, dest, action (copied|replaced|unchanged)
    missing: list[dict] = field(default_factory=list)  # file_name, command, tried, used_by
    serve: list[str] = field(default_factory=list)  # vllm serve examples

    @property
    def env_line(self) -> str:
        return f"export {ENV_TUNED_FOLDER}={shlex.quote(self.to)}"

    def to_dict(self) -> dict:
        return {"to": self.to, "copied": self.copied, "missing": self.missing, "env": self.env_line,
                "serve": self.serve}


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def export_wanted(wanted: Sequence[Wanted], to: str, tuned_dirs: Sequence[str], env: Mapping[str, str],
                  force: bool = False) -> ExportResult:
    """Find, check and copy `wanted` into `to`; ExportError (nothing written) on a conflict."""
    from moeplan.base.safeio import check_path, shown
    from moeplan.tables.lookup import find_table
    from moeplan.tables.table import atomic_write_text, parse_table, read_table_text

    check_path("--to", to, "a folder to copy the tables into")
    dest_dir = Path(to)
    if dest_dir.exists() and not dest_dir.is_dir():
        raise ExportError(f"--to {shown(to)} exists and is not a folder; pass a folder (it is created if missing)")
    result = ExportResult(os.path.abspath(to))
    plan = []  # (Wanted, source, dest, text, action)
    conflicts = []
    for w in wanted:
        src, tried = find_table(w.file_name, tuned_dirs, env)
        if src is None:
            result.missing.append({"file_name": w.file_name, "command": w.command, "tried": tried,
                                   "used_by": list(w.used_by)})
            continue
        text = read_table_text(src)
        parse_table(text, shown(src))  # the engine must be able to load what we hand it
        dest = dest_dir / w.file_name
        if dest.exists() and (os.path.samefile(dest, src) or _same_bytes(dest, Path(src))):
            action = "unchanged"
        elif dest.exists():
            if not force:
                conflicts.append(f"{shown(str(dest))} exists and differs from {shown(src)}")
            action = "replaced"
        else:
            action = "copied"
        plan.append((w, src, dest, text, action))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ExportError(f"--to {shown(to)}: {conflicts[0]}{more}; --force replaces it, nothing was copied")
    if plan:
        dest_dir.mkdir(parents=True, exist_ok=True)
    for w, src, dest, text, action in plan:
        if action != "unchanged":
            atomic_write_text(dest, text)  # the checked text: a temporary file, then a rename
        result.copied.append({"file_name": w.file_name, "source": src, "dest": str(dest), "action": action})
    return result


def export_layout(model: str, to: str, *, tp: int = 1, dp: int = 1, ep: bool = False, placement: str = "linear",
                  dtype: str = "auto", block_shape: Optional[str] = None, per_token: bool = False,
                  per_channel: bool = False, device_name: Optional[str] = None, tuned_dirs: Sequence[str] = (),
                  engine_profile: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                  force: bool = False) -> ExportResult:
    """`moeplan export MODEL [layout options] --to DIR`."""
    from moeplan.layout.commands import serve_command, tune_command
    from moeplan.layout.resolve import resolution_from_options
    from moeplan.tables.lookup import check_tuned_dirs, default_tuned_dirs

    check_tuned_dirs(tuned_dirs)
    res = resolution_from_options(model, tp, dp, ep, placement, dtype, block_shape, per_token, per_channel,
                                  device_name)
    if not res.device_known:
        raise ExportError("no GPU found to name the tables for; pass --device-name (e.g. 'NVIDIA H200')")
    wanted = [Wanted(s.file_name, tune_command(res, engine_profile)) for s in res.tables()]
    result = export_wanted(wanted, to, list(tuned_dirs) or default_tuned_dirs(),
                           dict(os.environ if env is None else env), force)
    lay = res.layout
    result.serve.append(f"{ENV_TUNED_FOLDER}={shlex.quote(result.to)} "
                        f"{serve_command(res.model.name, lay.tp, lay.dp, lay.use_ep, lay.placement)}")
    return result


def export_matrix(matrix_path: str, to: str, tuned_dirs: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                  force: bool = False) -> ExportResult:
    """`moeplan export --matrix FILE --to DIR`: every distinct table of the matrix file."""
    from moeplan.base import paths
    from moeplan.fleet import matrix as mx
    from moeplan.layout.commands import serve_command
    from moeplan.tables.lookup import check_tuned_dirs

    check_tuned_dirs(tuned_dirs)
    m = mx.load_matrix(matrix_path)
    jobs, _ = mx.expand(m)
    out_dir = tuned_dirs[0] if tuned_dirs else paths.DEFAULT_OUT
    wanted = [Wanted(j.file_name, j.command(m, out_dir),
                     tuple(f"{c.model} {c.layout.label()} {c.dtype} on {c.device}" for c in j.used_by)) for j in jobs]
    result = export_wanted(wanted, to, list(tuned_dirs) or paths.default_tuned_dirs(),
                           dict(os.environ if env is None else env), force)
    names = {}
    for j in jobs:  # one example per (model, layout) the matrix serves
        for c in j.used_by:
            if c.model not in names:
                names[c.model] = mx.load_model(c.model).name
            cmd = serve_command(names[c.model], c.layout.tp, c.layout.dp, c.layout.ep, c.layout.placement)
            line = f"{ENV_TUNED_FOLDER}={shlex.quote(result.to)} {cmd}"
            if line not in result.serve:
                result.serve.append(line)
    return result
