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
becomes an `Invalid` entry, not an error; a malformed file, an unknown model or a device name
outside the `--device-name` rule is an error. Files are read through `moeplan.base.safeio`.

Pure: no I/O except reading the one matrix file in `load_matrix`; no torch/triton.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from moeplan.base import safeio
from moeplan.base.errors import MoeplanError
from moeplan.base.safeio import (MAX_JSON_DEPTH, check_batch_sizes, check_device_name, check_int, check_path,
                                 check_text, printable, shown)
from moeplan.model.spec import ModelSpec
from moeplan.model.load import load_model
from moeplan.layout.parallel import MAX_WORLD, PLACEMENTS, Layout
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

MAX_LIST = 1024  # entries in one of models, devices, dtypes, layouts
MAX_COMBINATIONS = 100_000  # models x layouts x dtypes x devices, counted before anything is expanded
MAX_SHARDS = 100_000  # N of --shard I/N
_SHARD_RE = re.compile(r"([0-9]{1,6})/([0-9]{1,6})")  # ASCII digits only: str.isdigit() also takes '²'


def _fail(source: str, what: str) -> MatrixError:
    return MatrixError(f"matrix file {shown(source)}: {what}")


def _str_list(obj: dict, key: str, source: str, default: Optional[list] = None) -> tuple[str, ...]:
    if key not in obj:
        if default is None:
            raise _fail(source, f"needs {key!r}, a non-empty list of strings")
        return tuple(default)
    v = obj[key]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise _fail(source, f"{key!r} must be a non-empty list of non-empty strings, got {shown(v)}")
    if len(v) > MAX_LIST:
        raise _fail(source, f"{key!r} lists {len(v)} entries; the limit is {MAX_LIST}")
    for i, x in enumerate(v):
        check_text(f"{key}[{i}]", x, "a printable string", error=lambda m: _fail(source, m))
    return tuple(dict.fromkeys(x.strip() for x in v))  # duplicates dropped, order kept


def _layout(d, i: int, source: str) -> LayoutEntry:
    if not isinstance(d, dict):
        raise _fail(source, f"layouts[{i}] must be a table/object with keys {', '.join(LAYOUT_KEYS)}, got {shown(d)}")
    extra = sorted(str(k) for k in set(d) - set(LAYOUT_KEYS))
    if extra:
        raise _fail(source, f"layouts[{i}] has unknown key(s) {printable(', '.join(extra))[:200]}; valid: "
                            f"{', '.join(LAYOUT_KEYS)}")
    for k in ("tp", "dp"):
        check_int(f"layouts[{i}].{k}", d.get(k, 1), 1, MAX_WORLD, lambda m: _fail(source, m))
    if d.get("tp", 1) * d.get("dp", 1) > MAX_WORLD:
        raise _fail(source, f"layouts[{i}]: tp x dp = {d.get('tp', 1) * d.get('dp', 1)} devices is out of range; "
                            f"valid: 1..{MAX_WORLD}")
    ep = d.get("ep", False)
    if not isinstance(ep, bool):
        raise _fail(source, f"layouts[{i}].ep = {shown(ep)} must be true or false")
    placement = d.get("placement", "linear")
    if not isinstance(placement, str) or placement not in PLACEMENTS:
        raise _fail(source, f"layouts[{i}].placement = {shown(placement)} is unknown; valid: {', '.join(PLACEMENTS)}")
    return LayoutEntry(d.get("tp", 1), d.get("dp", 1), ep, placement)


def _depth(obj, limit: int) -> int:
    """Nesting depth of parsed TOML (tables and arrays), stopping past `limit`."""
    stack, deepest = [(obj, 0)], 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(o, dict):
            stack += [(v, d + 1) for v in o.values()]
        elif isinstance(o, list):
            stack += [(v, d + 1) for v in o]
    return deepest


def parse_matrix(text: str, source: str = "<matrix>", fmt: Optional[str] = None) -> Matrix:
    """A Matrix from TOML or JSON text (`fmt` "toml" | "json"; None: JSON if it parses as an object).
    Every field is type-checked and bounded; the combinations are counted before any is expanded."""
    fmt = fmt or ("json" if text.lstrip().startswith("{") else "toml")
    if fmt == "json":
        obj = safeio.parse_json(text, f"matrix file {shown(source)}", MatrixError)
    else:
        import tomllib

        try:
            obj = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise _fail(source, f"not valid TOML ({printable(e)})") from None
        except RecursionError:
            raise _fail(source, f"nests too deep; the limit is {MAX_JSON_DEPTH}") from None
        if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise _fail(source, f"nests over {MAX_JSON_DEPTH} levels deep; the limit is {MAX_JSON_DEPTH}")
    if not isinstance(obj, dict):
        raise _fail(source, f"expected an object/table of {', '.join(MATRIX_KEYS)}, got {type(obj).__name__}")
    extra = sorted(str(k) for k in set(obj) - set(MATRIX_KEYS))
    if extra:
        raise _fail(source, f"unknown key(s) {printable(', '.join(extra))[:200]}; valid: {', '.join(MATRIX_KEYS)}")
    models = _str_list(obj, "models", source)
    devices = _str_list(obj, "devices", source)
    for i, dev in enumerate(devices):  # the --device-name rule: a name never changes the file-name grammar
        check_device_name(dev, f"devices[{i}]", lambda m: _fail(source, m))
    dtypes = _str_list(obj, "dtypes", source, ["auto"])
    bad = [d for d in dtypes if d.lower() not in DTYPE_CHOICES]
    if bad:
        raise _fail(source, f"dtype {shown(bad[0])} is unknown; valid: {', '.join(DTYPE_CHOICES)}")
    raw_layouts = obj.get("layouts", [{}])
    if not isinstance(raw_layouts, list) or not raw_layouts:
        raise _fail(source, f"'layouts' must be a non-empty list of tables/objects, got {shown(raw_layouts)}")
    if len(raw_layouts) > MAX_LIST:
        raise _fail(source, f"'layouts' lists {len(raw_layouts)} entries; the limit is {MAX_LIST}")
    layouts = tuple(dict.fromkeys(_layout(d, i, source) for i, d in enumerate(raw_layouts)))
    count = len(models) * len(layouts) * len(dtypes) * len(devices)
    if count > MAX_COMBINATIONS:
        raise _fail(source, f"{len(models)} models x {len(layouts)} layouts x {len(dtypes)} dtypes x {len(devices)} "
                            f"devices = {count:,} combinations; the limit is {MAX_COMBINATIONS:,}")
    sizes = obj.get("batch_sizes")
    if sizes is not None:
        sizes = check_batch_sizes("batch_sizes", sizes, lambda m: _fail(source, m))
    engine = obj.get("engine")
    if engine is not None:
        from moeplan.engines.registry import PROFILES

        if not isinstance(engine, str) or engine not in PROFILES:
            raise _fail(source, f"engine {shown(engine)} is not a known engine profile; valid: {', '.join(PROFILES)}")
    return Matrix(models, layouts, dtypes, devices, sizes, engine, source)


def load_matrix(path: str) -> Matrix:
    """Read (through the input layer: a regular file, at most 4 MiB, UTF-8) and parse a matrix
    file; `.json` files are JSON, everything else TOML. Model paths in it are relative to its folder."""
    check_path("matrix file", path, "a .toml or .json matrix file", MatrixError)
    text = safeio.read_text(path, "matrix file", safeio.MAX_JSON_BYTES, MatrixError)
    p = Path(path)
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
    from moeplan.engines.registry import get_profile

    profile = get_profile(matrix.engine) if matrix.engine else None  # an SGLang engine names SGLang's files
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
                        res = resolve(specs[model], layout, QuantRequest(dtype=dtype), device, profile)
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
    """'I/N' (1-based, 1 <= I <= N <= MAX_SHARDS, ASCII digits) -> (I, N); MatrixError otherwise."""
    m = _SHARD_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m:
        i, n = int(m.group(1)), int(m.group(2))
        if 1 <= i <= n <= MAX_SHARDS:
            return i, n
    raise MatrixError(f"--shard {shown(text)} is invalid; expected I/N with 1 <= I <= N <= {MAX_SHARDS:,} "
                      "(ASCII digits), e.g. 1/4")


def shard(jobs: Sequence[TableJob], i: int, n: int) -> list[TableJob]:
    """Shard I of N: every N-th table of the list sorted by file name, starting at the I-th.

    Deterministic (a function of the matrix file alone, not of which tables exist yet, so
    parallel CI jobs agree), disjoint, and the union over I = 1..N is every table.
    """
    ordered = sorted(jobs, key=lambda j: j.file_name)
    return [j for k, j in enumerate(ordered) if k % n == i - 1]
