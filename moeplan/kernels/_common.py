"""Small helpers shared by the kernel modules (dtype maps, interpreter detection).

Dimension letters used across moeplan.kernels:
  M     tokens in the batch (rows of x)
  E     experts held by this device (w1/w2 leading dim); E_g the global count under EP
  K     hidden size (GEMM1 reduction dim, GEMM2 output dim)
  N     intermediate size of one expert (w1 is (E, 2N, K), w2 is (E, K, N))
  topk  experts each token is routed to
  T     M * topk, the (token, slot) pairs; pair t belongs to token t // topk
  BM/BN/BK  BLOCK_SIZE_M/N/K of the kernel config
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448.0
INT8_MAX = 127.0

_TL_DTYPES = {
    torch.bfloat16: tl.bfloat16,
    torch.float16: tl.float16,
    torch.float32: tl.float32,
    torch.float8_e4m3fn: tl.float8e4nv,
    torch.int8: tl.int8,
    torch.uint8: tl.uint8,
}

TORCH_ACT_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def tl_dtype(dtype: torch.dtype):
    try:
        return _TL_DTYPES[dtype]
    except KeyError:
        raise TypeError(f"no Triton dtype for {dtype}") from None


def act_dtype(dtype) -> torch.dtype:
    """A torch activation dtype from a torch dtype or a name (bf16, fp16, fp32, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    try:
        return TORCH_ACT_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown activation dtype {dtype!r}; valid: bf16, fp16, fp32") from None


def is_interpreter() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether the kernels must upcast dot operands to fp32.

    The Triton CPU interpreter returns garbage for tl.dot on bf16 operands (seen with
    triton 3.9 + torch 2.13 CPU; fp16/fp32/fp8/int8 are fine), so interpreted kernels
    whose compute dtype is bf16 dot in fp32 instead. Never on a GPU.
    """
    return is_interpreter() and dtype == torch.bfloat16


@triton.jit
def round_to_bf16_grid(x):
    """Round fp32 to the nearest bf16 value (ties to even), staying fp32.

    Only used under the CPU interpreter, whose fp32 -> bf16 cast truncates (about twice
    the rounding error of the GPU's round-to-nearest); after this the cast is exact.
    """
    xi = x.to(tl.uint32, bitcast=True)
    xi = (xi + 0x7FFF + ((xi >> 16) & 1)) & 0xFFFF0000
    return xi.to(tl.float32, bitcast=True)


def cdiv(a: int, b: int) -> int:
    return -(a // -b)


def next_pow2(x: int) -> int:
    return 1 if x <= 1 else triton.next_power_of_2(int(x))
