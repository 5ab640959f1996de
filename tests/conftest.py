"""Shared test set-up: tests marked `gpu` are skipped when no CUDA GPU is present; tests
marked `interpreter` (they force Triton's CPU interpreter even on a GPU host) are skipped
when this Triton's interpreter cannot run moeplan's kernels (seen with Triton 3.6 and
NumPy 2.x: a runtime loop bound arrives as a 1-element array, which range() rejects)."""

import functools
import os
import subprocess
import sys

import pytest

_PROBE = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl

@triton.jit
def k(out_ptr, n, B: tl.constexpr):
    acc = tl.zeros((B,), dtype=tl.float32)
    for i in range(0, n * 2):
        acc += 1.0
    tl.store(out_ptr + tl.arange(0, B), acc)

out = torch.zeros(4)
k[(1,)](out, 3, B=4)
assert out.tolist() == [6.0] * 4, out
"""


@functools.lru_cache(maxsize=1)
def interpreter_problem() -> str:
    """Empty if Triton's CPU interpreter runs a kernel with a runtime loop bound, else why not."""
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return ""
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {r.returncode}"


def _has_cuda() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("interpreter" in item.keywords for item in items):
        why = interpreter_problem()
        if why:
            skip_i = pytest.mark.skip(reason=f"this Triton's CPU interpreter cannot run the kernels: {why}")
            for item in items:
                if "interpreter" in item.keywords:
                    item.add_marker(skip_i)
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
