"""Matrix files: what a team serves (models x layouts x dtypes x devices), expanded to the
distinct tuning tables it needs.

A matrix file is TOML (or JSON with the same keys):

    models = ["deepseek-v3", "mixtral-8x7b"]   # preset, HF repo id or config.json path
    dtypes = ["auto"]                           # optional, default ["auto"]
    devices = ["NVIDIA H200"]                   # GPU names as the engine sees them
    batch_sizes = [1, 64, 4096]                 # optional: what `tune` measures
    engine = "vllm-0.33"                        # optional engine profile for `tune`
    [[layouts]]                                 # optional, default one layout tp=1
    tp = 8
    ep = true                                   # also dp (int), placement (linear|round_robin)

Several (model, layout, dtype) combinations often load the same file (same E, N, dtype,
block and device): the expansion keeps one `TableJob` per file name, with every
combination that uses it. A combination the model does not allow (TP not dividing N, ...)
becomes an `Invalid` entry, not an error; a malformed file or an unknown model is an error.

Pure: no I/O except reading the one matrix file in `load_matrix`; no torch/triton.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from moeplan.base.errors import MoeplanError
from moeplan.model.spec import ModelSpec
from moeplan.model.load import load_model
from moeplan.layout.parallel import PLACEMENTS, Layout
from moeplan.layout.resolve import QuantRequest, Resolution, TableSpec, resolve
from moeplan.layout.quant import DTYPE_CHOICES

MATRIX_KEYS = ("models", "layouts", "dtypes", "devices", "batch_sizes", "engine")
LAYOUT_KEYS = ("tp", "dp", "ep", "placement")


class MatrixError(MoeplanError):
    """An unreadable or malformed matrix file, or a bad --shard."""


@dataclass(frozen=True)
class LayoutEntry:
    """One `[[layouts]]` entry."""

    tp: int = 1
    dp: int = 1
    ep: bool = False
    placement: str = "linear"

    def to_dict(self) -> dict:
        return {"tp": self.tp, "dp": self.dp, "ep": self.ep, "placement": self.placement}

    def label(self) -> str:
        s = f"tp={self.tp}" + (f",dp={self.dp}" if self.dp != 1 else "")
        if self.ep:
            s += ",ep" + (f"({self.placement})" if self.placement != "linear" else "")
        return s

    def cli_options(self) -> list[str]:
        from moeplan.layout.commands import parallel_options

        return parallel_options(self.tp, self.dp, self.ep, self.placement)


@dataclass(frozen=True)
class Matrix:
    models: tuple[str, ...]
    layouts: tuple[LayoutEntry, ...]
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    batch_sizes: Optional[tuple[int, ...]] = None
    engine: Optional[str] = None
    source: str = "<matrix>"


@dataclass(frozen=True)
class Combination:
    """One (model, layout, dtype, device) the team serves; `model` as the file wrote it."""

    model: str
    layout: LayoutEntry
    dtype: str
    device: str

    def to_dict(self) -> dict:
        return {"model": self.model, "layout": self.layout.to_dict(), "dtype": self.dtype, "device": self.device}


@dataclass(frozen=True)
class Invalid:
    combination: Combination
    reason: str

    def to_dict(self) -> dict:
        return {**self.combination.to_dict(), "reason": self.reason}


@dataclass(frozen=True)
class TableJob:
    """One distinct table to have: tuned for its first user's shape, loaded by all of `used_by`."""

    file_name: str
    device: str  # the device name as the matrix wrote it (runner labels match on it)
    spec: TableSpec
    resolution: Resolution
    used_by: tuple[Combination, ...]

    def command(self, matrix: Matrix, out_dir: str) -> str:
        """The `moeplan tune` invocation that makes this table (from its first user)."""
        c = self.used_by[0]
        args = ["moeplan", "tune", c.model, *c.layout.cli_options(), "--dtype", c.dtype, "--device-name", c.device]
        if matrix.batch_sizes:
            args += ["--batch-sizes", ",".join(map(str, matrix.batch_sizes))]
        if matrix.engine:
            args += ["--engine", matrix.engine]
        args += ["--out", out_dir]
        return shlex.join(args)


# ---- parsing ---------------------------------------------------------------------------------

def _fail(source: str, what: str) -> MatrixError:
    return MatrixError(f"matrix file {source!r}: {what}")


def _str_list(obj: dict, key: str, source: str, default: Optional[list] = None) -> tuple[str, ...]:
    if key not in obj:
        if default is None:
            raise _fail(source, f"needs {key!r}, a non-empty list of strings")
        return tuple(default)
    v = obj[key]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise _fail(source, f"{key!r} must be a non-empty list of non-empty strings, got {v!r}")
    return tuple(dict.fromkeys(x.strip() for x in v))  # duplicates dropped, order kept


def _layout(d, i: int, source: str) -> LayoutEntry:
    if not isinstance(d, dict):
        raise _fail(source, f"layouts[{i}] must be a table/object with keys {', '.join(LAYOUT_KEYS)}, got {d!r}")
    extra = sorted(set(d) - set(LAYOUT_KEYS))
    if extra:
        raise _fail(source, f"layouts[{i}] has unknown key(s) {', '.join(extra)}; valid: {', '.join(LAYOUT_KEYS)}")
    for k in ("tp", "dp"):
        v = d.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(source, f"layouts[{i}].{k} = {v!r} must be an integer >= 1")
    ep = d.get("ep", False)
    if not isinstance(ep, bool):
        raise _fail(source, f"layouts[{i}].ep = {ep!r} must be true or false")
    placement = d.get("placement", "linear")
    if placement not in PLACEMENTS:
        raise _fail(source, f"layouts[{i}].placement = {placement!r} is unknown; valid: {', '.join(PLACEMENTS)}")
    return LayoutEntry(d.get("tp", 1), d.get("dp", 1), ep, placement)


def parse_matrix(text: str, source: str = "<matrix>", fmt: Optional[str] = None) -> Matrix:
    """A Matrix from TOML or JSON text (`fmt` "toml" | "json"; None: JSON if it parses as an object)."""
    fmt = fmt or ("json" if text.lstrip().startswith("{") else "toml")
    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(source, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    else:
        import tomllib

        try:
            obj = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise _fail(source, f"not valid TOML ({e})") from None
    if not isinstance(obj, dict):
        raise _fail(source, f"expected an object/table of {', '.join(MATRIX_KEYS)}, got {type(obj).__name__}")
    extra = sorted(set(obj) - set(MATRIX_KEYS))
    if extra:
        raise _fail(source, f"unknown key(s) {', '.join(extra)}; valid: {', '.join(MATRIX_KEYS)}")
    models = _str_list(obj, "models", source)
    devices = _str_list(obj, "devices", source)
    dtypes = _str_list(obj, "dtypes", source, ["auto"])
    bad = [d for d in dtypes if d.lower() not in DTYPE_CHOICES]
    if bad:
        raise _fail(source, f"dtype {bad[0]!r} is unknown; valid: {', '.join(DTYPE_CHOICES)}")
    raw_layouts = obj.get("layouts", [{}])
    if not isinstance(raw_layouts, list) or not raw_layouts:
        raise _fail(source, f"'layouts' must be a non-empty list of tables/objects, got {raw_layouts!r}")
    layouts = tuple(dict.fromkeys(_layout(d, i, source) for i, d in enumerate(raw_layouts)))
    sizes = obj.get("batch_sizes")
    if sizes is not None:
        if (not isinstance(sizes, list) or not sizes
                or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in sizes)):
            raise _fail(source, f"'batch_sizes' must be a non-empty list of integers >= 1, got {sizes!r}")
        sizes = tuple(sorted(set(sizes)))
    engine = obj.get("engine")
    if engine is not None:
        from moeplan.engines.registry import PROFILES

        if engine not in PROFILES:
            raise _fail(source, f"engine {engine!r} is not a known engine profile; valid: {', '.join(PROFILES)}")
    return Matrix(models, layouts, dtypes, devices, sizes, engine, source)


def load_matrix(path: str) -> Matrix:
    """Read and parse a matrix file; `.json` files are JSON, everything else TOML."""
    p = Path(path)
    if p.is_dir():
        raise MatrixError(f"matrix file {path!r} is a folder; pass a .toml or .json matrix file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MatrixError(f"cannot read matrix file {path!r}: {getattr(e, 'strerror', None) or e}") from None
    return models_beside(parse_matrix(text, path, "json" if p.suffix.lower() == ".json" else "toml"), p.parent)


def models_beside(matrix: Matrix, folder: Path) -> Matrix:
    """A relative model path in a matrix file is relative to the file's folder (not to the current
    one): an entry naming an existing file or folder there is rewritten to that path; presets and
    repo ids stay as written."""
    import dataclasses
    import os

    def beside(m: str) -> str:
        if os.path.isabs(m) or m.startswith("~"):
            return m
        cand = folder / m
        return str(cand) if cand.exists() and str(folder) not in ("", ".") else m

    return dataclasses.replace(matrix, models=tuple(dict.fromkeys(beside(m) for m in matrix.models)))


# ---- expansion ---------------------------------------------------------------------------------

def expand(matrix: Matrix) -> tuple[list[TableJob], list[Invalid]]:
    """The distinct tables (sorted by file name) and the combinations that cannot be served.

    An unknown model raises (ModelError, one line): it is a typo, not a combination to skip.
    """
    specs: dict[str, ModelSpec] = {m: load_model(m) for m in matrix.models}
    users: dict[str, list[Combination]] = {}
    first: dict[str, tuple[str, TableSpec, Resolution]] = {}
    invalid: list[Invalid] = []
    for model in matrix.models:
        for lay in matrix.layouts:
            layout = Layout(tp=lay.tp, dp=lay.dp, ep=lay.ep, placement=lay.placement)
            for dtype in matrix.dtypes:
                for device in matrix.devices:
                    combo = Combination(model, lay, dtype, device)
                    try:
                        res = resolve(specs[model], layout, QuantRequest(dtype=dtype), device)
                    except MoeplanError as e:
                        invalid.append(Invalid(combo, " ".join(str(e).split())))
                        continue
                    for spec in res.tables():
                        users.setdefault(spec.file_name, []).append(combo)
                        first.setdefault(spec.file_name, (device, spec, res))
    jobs = [TableJob(name, first[name][0], first[name][1], first[name][2], tuple(dict.fromkeys(users[name])))
            for name in sorted(users)]
    return jobs, invalid


# ---- shards -------------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based, 1 <= I <= N) -> (I, N); MatrixError otherwise."""
    parts = text.strip().split("/")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        i, n = int(parts[0]), int(parts[1])
        if 1 <= i <= n:
            return i, n
    raise MatrixError(f"--shard {text!r} is invalid; expected I/N with 1 <= I <= N, e.g. 1/4")


def shard(jobs: Sequence[TableJob], i: int, n: int) -> list[TableJob]:
    """Shard I of N: every N-th table of the list sorted by file name, starting at the I-th.

    Deterministic (a function of the matrix file alone, not of which tables exist yet, so
    parallel CI jobs agree), disjoint, and the union over I = 1..N is every table.
    """
    ordered = sorted(jobs, key=lambda j: j.file_name)
    return [j for k, j in enumerate(ordered) if k % n == i - 1]
