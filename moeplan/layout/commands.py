"""The command lines a resolved layout implies: the `moeplan tune ...` that makes its tables and the
engine's flags for the layout (`vllm serve ... --tensor-parallel-size ...`).

Pure: builds strings, no I/O.
"""

from __future__ import annotations

import shlex
from typing import Optional

from moeplan.layout.resolve import Resolution


def model_ref(res: Resolution) -> str:
    """How a command names the model: the preset alias, else the config.json it was read from."""
    from moeplan.base.errors import ModelError
    from moeplan.model.spec import find_preset

    try:
        find_preset(res.model.alias)
        return res.model.alias
    except ModelError:
        return res.model.source or res.model.name


def parallel_options(tp: int, dp: int = 1, ep: bool = False, placement: str = "linear") -> list[str]:
    """moeplan's --tp/--dp/--ep/--placement for a layout, defaults left out."""
    out = ["--tp", str(tp)]
    if dp != 1:
        out += ["--dp", str(dp)]
    if ep:
        out.append("--ep")
        if placement != "linear":
            out += ["--placement", placement]
    return out


def layout_options(res: Resolution) -> list[str]:
    """moeplan's layout and quantization options that give `res` again."""
    lay = res.layout
    out = parallel_options(lay.tp, lay.dp, lay.use_ep, lay.placement)
    q = res.model.quantization
    if q is not None and (q.scheme, tuple(q.block_shape or ()), bool(q.per_token), bool(q.per_channel)) == \
            (res.scheme, tuple(res.block_shape or ()), bool(res.per_token), bool(res.per_channel)):
        return out  # the checkpoint's own scheme: --dtype auto, the default
    if q is None and res.scheme == "bf16":
        return out
    out += ["--dtype", res.scheme]
    if res.block_shape:
        out += ["--block-shape", ",".join(map(str, res.block_shape))]
    if res.per_token:
        out.append("--per-token")
    if res.per_channel:
        out.append("--per-channel")
    return out


def tune_command(res: Resolution, engine_profile: Optional[str] = None, out: Optional[str] = None) -> str:
    """The `moeplan tune` invocation that makes the tables of `res` on its device."""
    args = ["moeplan", "tune", model_ref(res), *layout_options(res)]
    if res.device_name:
        args += ["--device-name", res.device_name]
    if engine_profile:
        args += ["--engine", engine_profile]
    if out:
        args += ["--out", out]
    return shlex.join(args)


def serve_flags(tp: int, dp: int = 1, ep: bool = False, placement: str = "linear") -> list[str]:
    """The engine's parallelism flags for a layout (a round_robin expert placement too)."""
    flags = ["--tensor-parallel-size", str(tp)]
    if dp != 1:
        flags += ["--data-parallel-size", str(dp)]
    if ep:
        flags.append("--enable-expert-parallel")
        if placement != "linear":
            flags += ["--expert-placement-strategy", placement]
    return flags


def serve_command(model_name: str, tp: int, dp: int = 1, ep: bool = False, placement: str = "linear") -> str:
    """A `vllm serve` example for the layout (the checkpoint's repo id)."""
    return shlex.join(["vllm", "serve", model_name, *serve_flags(tp, dp, ep, placement)])
