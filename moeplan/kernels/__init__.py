"""Triton fused-MoE kernels (the layer the tuner measures) and their PyTorch references.

Modules (one op each, a pure-torch reference beside it):
  align       sort (token, slot) pairs by expert, pad to BLOCK_SIZE_M tiles
  moe_gemm    the grouped GEMM kernel and its launcher
  fused_moe   the layer `fused_experts` (align, GEMMs, activation, top-k sum), its fast variant
  activation  gated activation (silu / gelu / swigluoai), fused activation quantization
  quantize    weight quantization for every scheme (engine layouts), activation quant
  reference   `fused_experts_ref`, the float32 layer
  inputs      `make_moe_inputs`: realistic inputs for a shape
  runner      `MoeRunner`: preallocated, CUDA-graph capturable layer for the tuner
  _common     small shared helpers (cdiv, dtypes, the interpreter switch)
  testing     helpers the kernel tests share (tolerances, NaN-poisoned buffers)

Importing this package is cheap; torch and triton load on first use of a name.

May import: `moeplan.base`, `model`, `engines`, `tables`, `layout` (never the tuner or the CLI).
"""

from importlib import import_module

_EXPORTS = {
    "fused_experts": "fused_moe",
    "invoke_moe_gemm": "moe_gemm",
    "LayerPlan": "fused_moe",
    "CHUNK_TOKENS": "fused_moe",
    "moe_align_block_size": "align",
    "moe_align_block_size_torch": "align",
    "max_padded_rows": "align",
    "act_and_quant": "activation",
    "act_and_mul_ref": "activation",
    "quantize_weights": "quantize",
    "dequantize_weight": "quantize",
    "quantize_activation": "quantize",
    "quantize_activation_ref": "quantize",
    "fused_experts_ref": "reference",
    "make_moe_inputs": "inputs",
    "make_routing": "inputs",
    "MoeInputs": "inputs",
    "MoeRunner": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'moeplan.kernels' has no attribute {name!r}")
    value = getattr(import_module(f"moeplan.kernels.{mod}"), name)
    globals()[name] = value
    return value
