"""The input layer: every byte, number and string a user hands moeplan passes through here.

Files are read with a size cap (regular files only, so `/dev/zero` or a FIFO is refused
before anything is read), decoded as strict UTF-8, and JSON is parsed with a nesting
limit and without NaN/Infinity. Numbers get a stated range, strings a grammar. Every
failure is one `InputError` (a MoeplanError: one stderr line, exit code 2) naming the
value and what would be valid. The callers turn the parsed values into domain objects
before any work starts or any file is created.

`printable` is the output side of the same rule: user text reaches the terminal with its
control characters escaped.

Pure standard library: no I/O at import, no torch/triton/rich/typer.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from typing import Any, Optional

from moeplan.base.errors import InputError, MoeplanError

# ---- limits (the README's "Input rules" lists the same numbers) --------------------------

MAX_JSON_BYTES = 4 << 20  # config.json, tuning tables, search spaces, JSON routing files
MAX_BINARY_BYTES = 256 << 20  # captured routing ids (.pt/.npy)
MAX_JSON_DEPTH = 32  # real config.json files nest 5 deep (compressed-tensors groups)
MAX_PATH_CHARS = 4096  # PATH_MAX
MAX_NAME_BYTES = 255  # one file-name component (NAME_MAX)
MAX_DEVICE_NAME = 80  # the longest real GPU name is about 45 characters
MAX_BATCH = 1 << 20  # tokens in one batch (resolve --batch-size, table batch keys)
MAX_TUNE_BATCH = 65536  # tune --batch-sizes and a matrix's batch_sizes: routing pools are drawn per size
MAX_BATCH_SIZES = 64  # batch sizes per tuning run (the engine tunes 18)
MAX_CSV_BYTES = 64 << 20  # a measurements CSV (an exhaustive 18-size run writes about 4 MB)
MAX_CSV_FIELD = 4096  # characters in one CSV field

# The device-name grammar: letters, digits, space and `_ . ( ) + -`, starting with a letter or
# digit. It leaves out every character that changes the tuning-file grammar (`,` `=` `[` `]`),
# the path (`/`), rich markup (`[`) or the terminal (control characters).
DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()+\-]*")
DEVICE_NAME_RULE = (f"1..{MAX_DEVICE_NAME} characters: letters, digits, space and _ . ( ) + -, "
                    "starting with a letter or digit")


# ---- output: never a raw control character --------------------------------------------

def printable(text: Any) -> str:
    """`text` with every non-printable character (control, format, line and paragraph
    separators) written as a Python escape, so user data cannot move the cursor, recolour
    the terminal or split a line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def shown(value: Any) -> str:
    """A value as an error message quotes it: repr for strings (quotes, escapes), capped."""
    s = repr(value) if isinstance(value, str) else printable(value)
    if len(s) <= 120:
        return s
    return s[:100] + ("...'" if isinstance(value, str) else "...") + f" ({len(str(value))} characters)"


# ---- numbers and strings -----------------------------------------------------------------

def check_int(option: str, value: Any, lo: int, hi: Optional[int] = None, error=InputError) -> int:
    """`value` as an int in lo..hi (hi None: no upper bound)."""
    valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{option} {shown(value)} is not an integer; valid: {valid}")
    if value < lo or (hi is not None and value > hi):
        raise error(f"{option} {shown(value)} is out of range; valid: {valid}")
    return value


def check_float(option: str, value: Any, lo: float, hi: float, error=InputError) -> float:
    """`value` as a finite float with lo < value <= hi."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo < value <= hi:
        raise error(f"{option} {shown(value)} is out of range; valid: a number above {lo:g} and at most {hi:g}")
    return float(value)


def check_text(option: str, value: Any, what: str, max_chars: int = MAX_PATH_CHARS, error=InputError) -> str:
    """A free-form string (a path, a model reference): non-empty, bounded, no control characters."""
    if not isinstance(value, str) or not value.strip():
        raise error(f"{option} {shown(value)} is empty; expected {what}")
    if len(value) > max_chars:
        raise error(f"{option} {shown(value)} is too long ({len(value)} characters; at most {max_chars})")
    if not value.isprintable():
        raise error(f"{option} {shown(value)} contains control characters; expected {what}")
    return value


def check_path(option: str, value: Any, what: str = "a path", error=InputError) -> str:
    """A path: `check_text`, and every component short enough to be a file name."""
    check_text(option, value, what, MAX_PATH_CHARS, error)
    if len(value.encode("utf-8", "surrogateescape")) >= MAX_PATH_CHARS:
        raise error(f"{option} {shown(value)} is too long (at most {MAX_PATH_CHARS - 1} bytes)")
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise error(f"{option} {shown(value)} has a name longer than {MAX_NAME_BYTES} bytes")
    return value


def check_device_name(value: Any, option: str = "--device-name", error=InputError) -> str:
    """A GPU name as it goes into a tuning-file name (before normalisation)."""
    core = value.strip(" ") if isinstance(value, str) else ""  # spaces only: a newline or tab is refused
    if not 1 <= len(core) <= MAX_DEVICE_NAME or not DEVICE_NAME_RE.fullmatch(core):
        raise error(f"{option} {shown(value)} is not a device name; valid: {DEVICE_NAME_RULE}, "
                    "e.g. 'NVIDIA H100 80GB HBM3'")
    return value


def check_batch_sizes(option: str, values: Any, error=InputError) -> tuple[int, ...]:
    """A list of tuning batch sizes (a matrix's `batch_sizes`): the rules of `tune --batch-sizes`."""
    if not isinstance(values, list) or not values:
        raise error(f"{option} {shown(values)} must be a non-empty list of integers in 1..{MAX_TUNE_BATCH}")
    for v in values:
        check_int(f"{option} entry", v, 1, MAX_TUNE_BATCH, error)
    if len(set(values)) > MAX_BATCH_SIZES:
        raise error(f"{option} lists {len(set(values))} sizes; the limit is {MAX_BATCH_SIZES}")
    return tuple(sorted(set(values)))


# ---- files -----------------------------------------------------------------------------------

def read_bytes(path: Any, what: str, limit: int, error=InputError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes."""
    p = os.fspath(path)
    check_path(what, p, "a file path", error)

    def fail(reason: str):
        return error(f"cannot read {what} {shown(p)}: {reason}")

    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise fail("it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise fail("not a regular file (a device, pipe or socket)")
        if st.st_size > limit:
            raise fail(f"{st.st_size:,} bytes is over the limit of {limit:,}")
        with open(p, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as e:
        raise fail((e.strerror or str(e)).lower()) from None
    if len(data) > limit:
        raise fail(f"over the limit of {limit:,} bytes")
    return data


def decode_text(data: bytes, source: str, error=InputError) -> str:
    """Strict UTF-8 (a leading byte-order mark is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{source} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                    "expected a UTF-8 JSON file") from None


def read_text(path: Any, what: str, limit: int = MAX_JSON_BYTES, error=InputError) -> str:
    p = os.fspath(path)
    return decode_text(read_bytes(p, what, limit, error), f"{what} {shown(p)}", error)


_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET_RE = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON text (brackets inside strings ignored)."""
    depth = deepest = 0
    for m in _BRACKET_RE.finditer(_STRING_RE.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text} is out of the range of a float")
    return v


def parse_json(text: str, source: str, error=InputError, max_depth: int = MAX_JSON_DEPTH,
               object_pairs_hook=None) -> Any:
    """JSON text -> Python values: nesting at most `max_depth`, numbers finite, no NaN/Infinity."""
    depth = json_depth(text)
    if depth > max_depth:
        raise error(f"{source} nests {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                          object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except MoeplanError:
        raise
    except (ValueError, RecursionError) as e:  # NaN, 1e999, an integer of over 4300 digits
        raise error(f"{source}: not valid JSON ({printable(e)})") from None


def read_json(path: Any, what: str, error=InputError, limit: int = MAX_JSON_BYTES) -> Any:
    p = os.fspath(path)
    return parse_json(read_text(p, what, limit, error), f"{what} {shown(p)}", error)
