"""Helpers of the kernel tests: tolerances, seeds, poisoning, closeness checks."""

from __future__ import annotations

import os
import zlib

import torch

# Per-scheme tolerances: (relative-norm bound, atol, rtol) on outputs of unit scale.
# CPU numbers are measured under the Triton interpreter with moeplan's bf16/fp8 cast
# fixes (see moeplan/kernels/_common.py); the GPU ones on an H100.
TOLERANCES = {
    "fp32": (1e-4, 1e-4, 1e-3),
    "fp16": (3e-3, 5e-3, 2e-2),
    "bf16": (1.2e-2, 3e-2, 5e-2),
    "fp8_w8a8": (4e-2, 1.5e-1, 1e-1),
    "int8_w8a8": (2e-2, 6e-2, 5e-2),
    "int8_w8a16": (1.2e-2, 3e-2, 5e-2),
    "int4_w4a16": (1.5e-2, 4e-2, 5e-2),
    # weight-only fp8 / MXFP4: the reference uses the same dequantized weights in fp32, so
    # only the 16-bit rounding of the dequantized tile (fp8 block scales) and of the
    # outputs remains: bf16-level bounds
    "fp8_w8a16": (1.2e-2, 3e-2, 5e-2),
    "mxfp4": (1.2e-2, 3e-2, 5e-2),
}

# Relative-norm bounds at real model shapes on a GPU (elementwise checks are replaced by a
# max-error sanity bound there: millions of elements make rare fp8 flips certain).
GPU_REL = {"fp32": 1e-3, "fp16": 3e-3, "bf16": 1e-2, "fp8_w8a8": 3e-2, "int8_w8a8": 2e-2,
           "int8_w8a16": 1e-2, "int4_w4a16": 1.5e-2, "fp8_w8a16": 1e-2, "mxfp4": 1e-2}

BASE_SEED = int(os.environ.get("MOEPLAN_TEST_SEED", "0"))


def seed_for(*parts) -> int:
    """A distinct seed per test case (change them all with MOEPLAN_TEST_SEED)."""
    return (zlib.crc32(repr(parts).encode()) + BASE_SEED) % (2 ** 31)


def tol_key(dtype: str, scheme) -> str:
    """TOLERANCES key: the activation dtype for unquantized runs, else the scheme."""
    if scheme in (None, "bf16", "fp16", "fp32"):
        return dtype
    return scheme


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-30)).item()


def check_close(out: torch.Tensor, ref: torch.Tensor, key, what: str = "") -> float:
    """No NaN/inf (every element written), relative norm and elementwise closeness.

    key: a TOLERANCES key, or an explicit (relative-norm bound, atol, rtol) tuple."""
    rel_bound, atol, rtol = TOLERANCES[key] if isinstance(key, str) else key
    assert torch.isfinite(out).all(), f"{what}: output has NaN/inf (unwritten or poisoned elements)"
    err = rel_err(out, ref)
    assert err <= rel_bound, f"{what}: relative error {err:.3e} > {rel_bound:.1e} ({key})"
    torch.testing.assert_close(out.float(), ref.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")
    return err


def poisoned(shape, dtype, device) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def config(bm=16, bn=32, bk=32, gm=1, warps=4, stages=2) -> dict:
    return dict(BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk, GROUP_SIZE_M=gm,
                num_warps=warps, num_stages=stages)


def check_rel(out: torch.Tensor, ref: torch.Tensor, key: str, what: str = "") -> float:
    """GPU-scale check: finite, ||out - ref|| / ||ref|| under GPU_REL, no wild element."""
    assert torch.isfinite(out).all(), f"{what}: output has NaN/inf (unwritten or poisoned elements)"
    err = rel_err(out, ref)
    assert err <= GPU_REL[key], f"{what}: relative error {err:.3e} > {GPU_REL[key]:.1e} ({key})"
    worst = (out.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert worst <= 0.25 * scale + 1e-3, f"{what}: max error {worst:.3e} vs max |ref| {scale:.3e}"
    return err
