"""The local GPU's name, read with `nvidia-smi` (never by importing torch), for the tuning-file
names `resolve` looks up. Runs a subprocess only when called."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from moeplan.base.safeio import check_device_name


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
    index = int(visible) if visible.isascii() and visible.isdigit() and len(visible) < 5 else None
    name = names[index] if index is not None and index < len(names) else names[0]
    # the GPU's own name passes the same grammar as --device-name
    return check_device_name(name, "the local GPU's name (from nvidia-smi; pass --device-name)")
