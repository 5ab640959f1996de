"""MoeRunner: the layer with every buffer preallocated, for CUDA-graph capture and replay.

Dimension letters: M tokens, E local experts, K hidden, N intermediate, topk slots.

The tuner and the benchmark build one runner per (shape, config): inputs x (M, K),
topk_weights (M, topk) and topk_ids (M, topk) live in the runner's static tensors, so a
captured graph reads whatever was last written there. Typical use:

    runner = MoeRunner.from_shape(M, E, N, K, topk, config=cfg, scheme="fp8_w8a8",
                                  block_shape=[128, 128], device="cuda")
    graph = runner.capture(num_calls=10)        # warms up (compiles) first
    for ids, w in routings:                     # fresh routing per replay
        runner.set_routing(ids, w)              # in-place copies
        graph.replay()
    runner.out                                  # (M, K) result of the last call

`capture(gemms_only=True)` captures only the two grouped GEMMs (align and the
activation come from the last full call), `with_config(cfg)` makes a runner for another
config that shares the weights and the static inputs (`with_config(up, down_config=down)`:
GEMM2 with its own config, as SGLang runs a `_down` table).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from moeplan.kernels.fused_moe import LayerPlan, _config_dict, layer_shape, resolve_engine
from moeplan.kernels.inputs import MoeInputs, make_moe_inputs, make_routing
from moeplan.layout.quant import QuantConfig


class MoeRunner:
    def __init__(self, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                 topk_ids: torch.Tensor, config=None, quant: Optional[QuantConfig] = None,
                 activation: str = "silu", expert_map: Optional[torch.Tensor] = None,
                 w1_bias=None, w2_bias=None, _share: bool = False, variant: str = "faithful",
                 fast=None, engine=None, capability=None, swap_ab=None, down_config=None):
        shape = layer_shape(x, w1, w2, topk_ids, quant, expert_map)
        self.shape = shape
        self.w1, self.w2, self.quant, self.activation = w1, w2, quant, activation
        self.expert_map = expert_map
        self.w1_bias, self.w2_bias = w1_bias, w2_bias
        if _share:
            self.x, self.topk_weights, self.topk_ids = x, topk_weights, topk_ids
        else:
            self.x = x.contiguous().clone()  # (M, K) static input
            self.topk_weights = topk_weights.to(torch.float32).contiguous().clone()  # (M, topk) float32
            self.topk_ids = topk_ids.to(torch.int32).contiguous().clone()  # (M, topk) int32
        self.engine = resolve_engine(engine)
        self.capability, self.swap_ab = capability, swap_ab
        self.config = _config_dict(config, shape.M, shape.E, shape.N, shape.K, shape.topk, quant, x.dtype,
                                   self.engine.heuristic)
        self.variant, self.fast = variant, fast
        self.down_config = down_config  # GEMM2's own config (SGLang `_down`); None: GEMM2 runs `config`
        # LayerPlan ties its BLOCK_SIZE_M to config's and refuses it under profiles without _down tables
        self.plan = LayerPlan(shape, x.dtype, x.device, self.config, quant, activation, w1_bias, w2_bias,
                              variant, fast, engine=self.engine, capability=capability, swap_ab=swap_ab,
                              down_config=down_config)
        self.out = torch.empty((shape.M, shape.K), dtype=x.dtype, device=x.device)  # (M, K)

    # ---- construction helpers ------------------------------------------------------------
    @classmethod
    def from_inputs(cls, inputs: MoeInputs, config=None, **kw) -> "MoeRunner":
        return cls(inputs.x, inputs.w1, inputs.w2, inputs.topk_weights, inputs.topk_ids, config,
                   inputs.quant, **kw)

    @classmethod
    def from_shape(cls, M: int, E: int, N: int, K: int, topk: int, config=None, dtype="bf16",
                   scheme: Optional[str] = None, block_shape: Optional[Sequence[int]] = None,
                   device="cuda", seed: int = 0, activation: str = "silu", **input_kw) -> "MoeRunner":
        inputs = make_moe_inputs(M, E, N, K, topk, dtype, scheme, block_shape, device, seed, **input_kw)
        return cls.from_inputs(inputs, config, activation=activation)

    def with_config(self, config, variant: Optional[str] = None, fast=None, down_config=None) -> "MoeRunner":
        """A runner for another config (and kernel variant) sharing weights and static inputs;
        `down_config`: GEMM2's own config (SGLang's `_down` entry; its BLOCK_SIZE_M follows `config`)."""
        return MoeRunner(self.x, self.w1, self.w2, self.topk_weights, self.topk_ids, config, self.quant,
                         self.activation, self.expert_map, self.w1_bias, self.w2_bias, _share=True,
                         variant=variant or self.variant, fast=fast, engine=self.engine,
                         capability=self.capability, swap_ab=self.swap_ab, down_config=down_config)

    # ---- running ------------------------------------------------------------------------------
    def set_routing(self, topk_ids: torch.Tensor, topk_weights: Optional[torch.Tensor] = None) -> None:
        """Write a new routing into the static tensors (in place; capture-safe)."""
        self.topk_ids.copy_(topk_ids)
        if topk_weights is not None:
            self.topk_weights.copy_(topk_weights)

    def new_routing(self, generator: Optional[torch.Generator] = None, routing: str = "uniform"):
        """(topk_weights, topk_ids) drawn like make_moe_inputs does, on the runner's device."""
        s = self.shape
        return make_routing(s.M, s.E_global, s.topk, self.x.device, generator, routing)

    def run(self) -> torch.Tensor:
        """The whole layer (align, quant, GEMM1, activation, GEMM2, topk sum) -> self.out."""
        return self.plan.run(self.x, self.w1, self.w2, self.topk_weights, self.topk_ids, self.expert_map,
                             self.out)

    __call__ = run

    def run_gemms(self) -> None:
        """Only the two grouped GEMMs (needs a previous run() for align and activation)."""
        self.plan.run_gemm1(self.w1)
        self.plan.run_gemm2(self.w2, self.topk_weights)

    def capture(self, num_calls: int = 1, gemms_only: bool = False, warmup: int = 1) -> "torch.cuda.CUDAGraph":
        """Warm up (compiles the kernels), then capture `num_calls` calls in one CUDA graph."""
        fn = self.run_gemms if gemms_only else self.run
        self.run()  # populates align/activation state and compiles
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(num_calls):
                fn()
        torch.cuda.synchronize()
        return graph

