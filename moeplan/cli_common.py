"""Option handling shared by the commands that take a model + layout + quantization."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from moeplan.errors import MoeplanError
from moeplan.models import load_model
from moeplan.parallel import Layout
from moeplan.plan import QuantRequest, Resolution, resolve
from moeplan.quant import parse_block_shape


def local_device_name() -> Optional[str]:
    """Name of the first visible CUDA GPU via nvidia-smi (no torch import), or None."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not names:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.isdigit() and int(visible) < len(names):
        return names[int(visible)]
    return names[0]


def resolution_from_options(
    model: str,
    tp: int = 1,
    dp: int = 1,
    ep: bool = False,
    placement: str = "linear",
    dtype: str = "auto",
    block_shape: Optional[str] = None,
    per_token: bool = False,
    per_channel: bool = False,
    device_name: Optional[str] = None,
    all2all_backend: str = "allgather_reducescatter",
    detect_device: bool = True,
) -> Resolution:
    """Build a Resolution from CLI option values; raises MoeplanError on bad input."""
    spec = load_model(model)
    layout = Layout(tp=tp, dp=dp, ep=ep, placement=placement, all2all_backend=all2all_backend)
    block = tuple(parse_block_shape(block_shape)) if block_shape is not None else None
    req = QuantRequest(dtype=dtype, block_shape=block, per_token=per_token, per_channel=per_channel)
    if device_name is not None and not device_name.strip():
        raise MoeplanError("--device-name '' is empty; pass a GPU name like 'NVIDIA H100 80GB HBM3'")
    if device_name is None and detect_device:
        device_name = local_device_name()
    return resolve(spec, layout, req, device_name)
