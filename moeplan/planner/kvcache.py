"""KV-cache capacity of a layout: what is left of the engine's memory budget for the KV cache
after the weights and an activation reserve, as tokens and as concurrent sequences.

Per token and layer of softmax attention the engine caches:

* MLA (DeepSeek-V2/V3, Kimi-K2: `kv_lora_rank` set): the compressed latent and the rotary key,
  `kv_lora_rank + qk_rope_head_dim` values (576 for DeepSeek-V2/V3: 512 + 64). The latent is not
  split by heads, so every device of the attention TP group holds all of it (the engine's MLA
  backends replicate it over TP; data-parallel attention is how the cache grows).
* GQA / MHA: a key and a value per key/value head, `2 x H_kv x d`; over TP a device holds
  `H_kv / tp` heads, at least one (the engine replicates heads when tp > H_kv).

Values are `--kv-cache-dtype auto` (the model's activation dtype: 2 bytes for bf16/fp16) or
`fp8` (1 byte). Linear-attention and Mamba layers of hybrid models keep a state per sequence,
not per token: not counted here. Sliding-window layers are counted as full attention (an upper
bound on the cost per token).

Budget per device: `gpu_memory_utilization x memory - weights - reserve`; the reserve is a
stated model of the engine's profiling run, `RESERVE_FIXED` (CUDA graphs, NCCL buffers, the
CUDA context and allocator slack) plus one step's activations at `RESERVE_TOKENS` tokens
(the engine's default `max_num_batched_tokens`): the fused-MoE layer's intermediate buffers
(top-k x (2N + N + K) values per token) and four hidden-state-sized buffers (4 x K).

Every attention-DP rank holds its own cache: tokens add up over DP; a sequence lives on one DP
rank, so sequences are counted per rank, then added.

Pure: no torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from moeplan.base.errors import PlanError
from moeplan.planner.hardware import GiB

KV_CACHE_DTYPES = ("auto", "fp8")
DEFAULT_CONTEXT_LEN = 8192
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
RESERVE_FIXED = 1 * GiB
RESERVE_TOKENS = 8192
RESERVE_TEXT = (f"{RESERVE_FIXED // GiB} GiB (CUDA graphs, NCCL, allocator) + one step's activations at "
                f"{RESERVE_TOKENS} tokens (fused-MoE buffers, hidden states)")


def check_kv_options(utilization, context_len, kv_cache_dtype) -> None:
    """PlanError naming the value and what is valid."""
    if isinstance(utilization, bool) or not isinstance(utilization, (int, float)) or not 0 < utilization <= 1:
        raise PlanError(f"--gpu-memory-utilization {utilization!r} is invalid; expected a fraction in (0, 1], "
                        "e.g. 0.9 (the engine's default)")
    if isinstance(context_len, bool) or not isinstance(context_len, int) or not 1 <= context_len <= 16_777_216:
        raise PlanError(f"--context-len {context_len!r} is invalid; expected tokens per sequence, an integer in "
                        "1..16777216, e.g. 8192")
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise PlanError(f"--kv-cache-dtype {kv_cache_dtype!r} is invalid; valid: {', '.join(KV_CACHE_DTYPES)}")


def gqa_bytes_per_token(layers: int, kv_heads: int, head_dim: int, value_bytes: int) -> int:
    """A key and a value per key/value head and layer."""
    return layers * 2 * kv_heads * head_dim * value_bytes


def mla_bytes_per_token(layers: int, kv_lora_rank: int, rope_dim: int, value_bytes: int) -> int:
    """The compressed latent and the rotary key per layer (DeepSeek-V2 paper's (d_c + d_h^R) l)."""
    return layers * (kv_lora_rank + rope_dim) * value_bytes


def kv_per_token(model, tp: int, act_dtype: str, kv_cache_dtype: str) -> tuple[int, str]:
    """(bytes of KV cache one token takes on one device of the attention TP group, how it is cached);
    (0, reason) when the model's facts do not describe its attention."""
    value_bytes = 1 if kv_cache_dtype == "fp8" else (4 if act_dtype == "float32" else 2)
    layers = model.num_attention_layers if model.num_attention_layers is not None else model.num_hidden_layers
    if model.kv_lora_rank:
        rope = model.qk_rope_head_dim or 0
        return (mla_bytes_per_token(layers, model.kv_lora_rank, rope, value_bytes),
                f"MLA latent {model.kv_lora_rank}+{rope} x {layers} layers, replicated over TP")
    H, d = model.num_attention_heads, model.head_dim
    if not (H and d):
        return 0, "attention not in the model's facts"
    Hkv = model.num_key_value_heads or H
    per_dev = max(1, Hkv // tp)
    return (gqa_bytes_per_token(layers, per_dev, d, value_bytes),
            f"GQA 2 x {per_dev} of {Hkv} KV heads x {d} x {layers} layers")


def activation_reserve(model, N: int) -> int:
    """Bytes kept for one step's activations and the engine's own buffers (see the module docstring)."""
    K, topk = model.hidden_size, model.top_k
    return int(RESERVE_FIXED + RESERVE_TOKENS * (topk * (3 * N + K) + 4 * K) * 2)


@dataclass(frozen=True)
class KvCapacity:
    utilization: float
    budget_bytes: int  # utilization x the GPU's memory
    weights_bytes: int
    reserve_bytes: int
    bytes_per_token: int  # on one device
    how: str
    dp: int  # attention-DP ranks, each with its own cache
    context_len: int
    kv_cache_dtype: str

    @property
    def kv_bytes(self) -> int:
        return max(0, self.budget_bytes - self.weights_bytes - self.reserve_bytes)

    @property
    def tokens_per_rank(self) -> int:
        return self.kv_bytes // self.bytes_per_token if self.bytes_per_token else 0

    @property
    def tokens(self) -> int:
        return self.tokens_per_rank * self.dp

    @property
    def sequences(self) -> int:
        return (self.tokens_per_rank // self.context_len) * self.dp

    def to_dict(self) -> dict:
        return {"gpu_memory_utilization": self.utilization, "kv_cache_dtype": self.kv_cache_dtype,
                "context_len": self.context_len, "kv_gib": round(self.kv_bytes / GiB, 2),
                "reserve_gib": round(self.reserve_bytes / GiB, 2), "bytes_per_token": self.bytes_per_token,
                "how": self.how, "tokens_per_dp_rank": self.tokens_per_rank, "tokens": self.tokens,
                "sequences": self.sequences}


def kv_capacity(res, weights_bytes: int, memory_bytes: int, utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
                context_len: int = DEFAULT_CONTEXT_LEN, kv_cache_dtype: str = "auto") -> KvCapacity:
    """The KV-cache capacity of resolution `res` on its fullest device."""
    lay = res.layout
    per_token, how = kv_per_token(res.model, lay.tp, res.act_dtype, kv_cache_dtype)
    N = max(d.N for d in res.devices)
    return KvCapacity(utilization, int(utilization * memory_bytes), weights_bytes,
                      activation_reserve(res.model, N), per_token, how, lay.dp, context_len, kv_cache_dtype)
