#!/usr/bin/env python3
"""Regenerate configs/<alias>.json (moeplan's model presets) from the shared reference.

    python scripts/gen_presets.py [--reference PATH] [--out DIR] [--check]

Reads ``../shared/reference/moe_models.json`` (36 checkpoints), normalises each entry
into the preset format that ``moeplan.model.spec.spec_from_preset`` reads, applies the
data fixes listed in ``FIXES`` (each documented in the preset's ``notes``), validates
every preset through moeplan.model, and writes one file per alias. Deterministic and
idempotent: unchanged files are not rewritten, stale ``*.json`` files are removed.
``--check`` writes nothing and exits 1 if anything would change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moeplan.model.spec import ModelSpec, spec_from_preset  # noqa: E402

DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "moe_models.json"
DEFAULT_OUT = ROOT / "configs"

# repo id (as cleaned by clean_name) -> alias
ALIASES = {
    "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b",
    "mistralai/Mixtral-8x22B-v0.1": "mixtral-8x22b",
    "deepseek-ai/DeepSeek-V2": "deepseek-v2",
    "deepseek-ai/DeepSeek-V2-Lite": "deepseek-v2-lite",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    "deepseek-ai/DeepSeek-R1": "deepseek-r1",
    "moonshotai/Kimi-K2-Instruct": "kimi-k2",
    "Qwen/Qwen1.5-MoE-A2.7B": "qwen1.5-moe-a2.7b",
    "Qwen/Qwen2-57B-A14B": "qwen2-57b-a14b",
    "Qwen/Qwen3-30B-A3B": "qwen3-30b-a3b",
    "Qwen/Qwen3-30B-A3B-FP8": "qwen3-30b-a3b-fp8",
    "Qwen/Qwen3-235B-A22B": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b-fp8",
    "Qwen/Qwen3-Coder-480B-A35B-Instruct": "qwen3-coder-480b-a35b",
    "Qwen/Qwen3-Next-80B-A3B-Instruct": "qwen3-next-80b-a3b-instruct",
    "Qwen/Qwen3-Next-80B-A3B-Thinking": "qwen3-next-80b-a3b-thinking",
    "openai/gpt-oss-20b": "gpt-oss-20b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": "llama-4-scout",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct": "llama-4-maverick",
    "databricks/dbrx-instruct": "dbrx",
    "allenai/OLMoE-1B-7B-0924": "olmoe-1b-7b",
    "ai21labs/Jamba-v0.1": "jamba-v0.1",
    "microsoft/Phi-3.5-MoE-instruct": "phi-3.5-moe",
    "zai-org/GLM-4.5": "glm-4.5",
    "zai-org/GLM-4.5-Air": "glm-4.5-air",
    "zai-org/GLM-4.7": "glm-4.7",
    "baidu/ERNIE-4.5-21B-A3B-PT": "ernie-4.5-21b-a3b",
    "baidu/ERNIE-4.5-300B-A47B-PT": "ernie-4.5-300b-a47b",
    "ibm-granite/granite-3.0-3b-a800m-instruct": "granite-3.0-3b-a800m",
    "ibm-granite/granite-3.0-1b-a400m-base": "granite-3.0-1b-a400m",
    "MiniMaxAI/MiniMax-M1-80k": "minimax-m1",
    "MiniMaxAI/MiniMax-M2": "minimax-m2",
    "tencent/Hunyuan-A13B-Instruct": "hunyuan-a13b",
    "tencent/Tencent-Hunyuan-Large": "hunyuan-large",
    "Snowflake/snowflake-arctic-instruct": "snowflake-arctic",
}

# alias -> (field overrides, note explaining the fix)
FIXES: dict[str, tuple[dict, str]] = {
    "hunyuan-large": (
        {"moe_intermediate_size": 18304, "shared_expert_intermediate_size": 18304, "num_moe_layers": 64},
        "moeplan fix: the reference left the expert width null. The official config has intermediate_size=18304 and "
        "no moe_intermediate_size; Hunyuan's MLP uses moe_intermediate_size when set and falls back to "
        "intermediate_size otherwise (shared MLP = that width x num_shared_expert). Parameter count confirms it: "
        "17 experts x 3 x 6400 x 18304 x 64 layers = 382B (+~7B attention/embeddings = the advertised 389B), and "
        "2 active experts give ~45B + ~7B = the advertised 52B active. With no moe_layer_num_skipped (default 0) "
        "and use_mixed_mlp_moe=true every one of the 64 layers is MoE (1 shared + 16 routed, top-1).",
    ),
    "minimax-m1": ({"shared_expert_intermediate_size": None}, "moeplan: shared_intermediate_size=0 means no shared expert (stored as null)."),
    "minimax-m2": ({"shared_expert_intermediate_size": None}, "moeplan: shared_intermediate_size=0 means no shared expert (stored as null)."),
}


# alias -> the rest of the model (what `moeplan plan` needs for memory), read from each
# checkpoint's official config.json: the shared reference holds only the MoE numbers (and the
# dense MLP width, checked against it below). Letters: V vocab_size, H/H_kv/d attention heads,
# key/value heads and head width; MLA models give (q_lora, kv_lora, rope, v) instead of H_kv.
def _gqa(V, H, Hkv, d, tied=False, **extra):
    return {"vocab_size": V, "tie_word_embeddings": tied, "num_attention_heads": H, "num_key_value_heads": Hkv,
            "head_dim": d, **extra}


def _mla(V, H, q_lora, kv_lora=512, nope=128, rope=64, v=128, groups=1):
    return {"vocab_size": V, "tie_word_embeddings": False, "num_attention_heads": H, "num_key_value_heads": H,
            "head_dim": nope, "q_lora_rank": q_lora, "kv_lora_rank": kv_lora, "qk_rope_head_dim": rope,
            "v_head_dim": v, "num_expert_groups": groups}


# Jamba: 4 of 32 layers attention (attn_layer_period 8, offset 4), the others Mamba
# (d_inner 8192 = 2 x 4096, d_state 16, d_conv 4, dt_rank 256): in_proj, conv, x_proj, dt_proj,
# A, D and out_proj parameters.
_JAMBA_MAMBA = 4096 * 16384 + 8192 * 5 + 8192 * 288 + 256 * 8192 + 8192 + 8192 * 16 + 8192 + 8192 * 4096
# Qwen3-Next: 12 of 48 layers attention (full_attention_interval 4), the others gated delta-net
# (16 key heads, 32 value heads, 128 wide, conv 4).
_QWEN3_NEXT_DELTANET = 2048 * (2 * 2048 + 2 * 4096) + 2048 * 64 + 8192 * 4 + 64 + 128 + 4096 * 2048
# MiniMax-M1: 10 of 80 layers softmax attention (attn_type_list), the others lightning attention
# (qkv, output gate and out projections of 64 heads x 128, and a norm).
_MINIMAX_LIGHTNING = 6144 * 3 * 8192 + 6144 * 8192 + 8192 * 6144 + 8192

REST: dict[str, dict] = {
    "mixtral-8x7b": _gqa(32000, 32, 8, 128),
    "mixtral-8x22b": _gqa(32000, 48, 8, 128),
    "deepseek-v2": _mla(102400, 128, 1536, groups=8),
    "deepseek-v2-lite": _mla(102400, 16, None),
    "deepseek-v3": _mla(129280, 128, 1536, groups=8),
    "deepseek-r1": _mla(129280, 128, 1536, groups=8),
    "kimi-k2": _mla(163840, 64, 1536),
    "qwen1.5-moe-a2.7b": _gqa(151936, 16, 16, 128),
    "qwen2-57b-a14b": _gqa(151936, 28, 4, 128),
    "qwen3-30b-a3b": _gqa(151936, 32, 4, 128),
    "qwen3-30b-a3b-fp8": _gqa(151936, 32, 4, 128),
    "qwen3-235b-a22b": _gqa(151936, 64, 4, 128),
    "qwen3-235b-a22b-fp8": _gqa(151936, 64, 4, 128),
    "qwen3-coder-480b-a35b": _gqa(151936, 96, 8, 128),
    "qwen3-next-80b-a3b-instruct": _gqa(151936, 16, 2, 256, num_attention_layers=12,
                                        linear_mixer_params=_QWEN3_NEXT_DELTANET),
    "qwen3-next-80b-a3b-thinking": _gqa(151936, 16, 2, 256, num_attention_layers=12,
                                        linear_mixer_params=_QWEN3_NEXT_DELTANET),
    "gpt-oss-20b": _gqa(201088, 64, 8, 64),
    "gpt-oss-120b": _gqa(201088, 64, 8, 64),
    "llama-4-scout": _gqa(202048, 40, 8, 128),
    "llama-4-maverick": _gqa(202048, 40, 8, 128),
    "dbrx": _gqa(100352, 48, 8, 128),
    "olmoe-1b-7b": _gqa(50304, 16, 16, 128),
    "jamba-v0.1": _gqa(65536, 32, 8, 128, num_attention_layers=4, linear_mixer_params=_JAMBA_MAMBA),
    "phi-3.5-moe": _gqa(32064, 32, 8, 128),
    "glm-4.5": _gqa(151552, 96, 8, 128),
    "glm-4.5-air": _gqa(151552, 96, 8, 128),
    "glm-4.7": _gqa(151552, 96, 8, 128),
    "ernie-4.5-21b-a3b": _gqa(103424, 20, 4, 128, tied=True),
    "ernie-4.5-300b-a47b": _gqa(103424, 64, 8, 128),
    "granite-3.0-3b-a800m": _gqa(49155, 24, 8, 64, tied=True),
    "granite-3.0-1b-a400m": _gqa(49155, 16, 8, 64, tied=True),
    "minimax-m1": _gqa(200064, 64, 8, 128, num_attention_layers=10, linear_mixer_params=_MINIMAX_LIGHTNING),
    "minimax-m2": _gqa(200064, 48, 8, 128),
    "hunyuan-a13b": _gqa(128167, 32, 8, 128, tied=True),
    "hunyuan-large": _gqa(129024, 80, 8, 128, tied=True),
    # Arctic's residual MLP (width hidden_size) runs beside the MoE in every one of its 35 layers.
    "snowflake-arctic": _gqa(32000, 56, 8, 128, num_dense_mlp_layers=35),
}
REST_NOTE = ("moeplan: vocabulary, attention shape, tied embeddings and hybrid-layer facts come from the "
             "checkpoint's config.json as moeplan read it (the shared reference lists only the MoE numbers and "
             "the dense MLP width, which is checked against it).")

# Fields copied verbatim from the reference; the generator refuses to disagree with it
# except through an explicit FIXES override.
CHECKED = (
    "num_experts",
    "top_k",
    "hidden_size",
    "moe_intermediate_size",
    "num_shared_experts",
    "shared_expert_intermediate_size",
    "num_hidden_layers",
    "num_moe_layers",
    "expert_bias",
    "dense_intermediate_size",
)


def clean_name(name: str) -> str:
    return name.split(" (")[0].strip()


def clean_token(value: str) -> str:
    return value.split(" (")[0].split(";")[0].strip()


def activation_of(entry: dict) -> str:
    if entry["model_type"] == "gpt_oss":
        return "swigluoai"
    act = entry["activation"].lower()
    if act.startswith("silu"):
        return "silu"
    if act.startswith("gelu"):
        return "gelu"
    raise SystemExit(f"{entry['name']}: cannot map activation {entry['activation']!r}")


def quantization_of(entry: dict) -> dict | None:
    """Rebuild the checkpoint's verbatim quantization_config from the reference entry."""
    q = entry.get("quantization")
    if q is None:
        return None
    if isinstance(q.get("raw"), dict) and "quant_method" in q["raw"]:
        out = dict(q["raw"])
    else:
        out = {"quant_method": q["method"]}
        for key in ("fmt", "activation_scheme", "weight_block_size"):
            if key in q:
                out[key] = q[key]
    if isinstance(q.get("modules_to_not_convert"), list) and "modules_to_not_convert" not in out:
        out["modules_to_not_convert"] = list(q["modules_to_not_convert"])
    return out


def build(entry: dict) -> dict:
    name = clean_name(entry["name"])
    alias = ALIASES[name]
    preset = {
        "alias": alias,
        "name": name,
        "model_type": clean_token(entry["model_type"]),
        "architecture": clean_token(entry["architectures"][0]),
        "num_experts": entry["num_experts"],
        "top_k": entry["top_k"],
        "hidden_size": entry["hidden_size"],
        "moe_intermediate_size": entry["moe_intermediate_size"],
        "num_shared_experts": entry["num_shared_experts"],
        "shared_expert_intermediate_size": entry["shared_expert_intermediate_size"],
        "num_hidden_layers": entry["num_hidden_layers"],
        "num_moe_layers": entry["num_moe_layers"],
        "activation": activation_of(entry),
        "expert_bias": bool(entry["expert_bias"]),
        "quantization": quantization_of(entry),
        "dense_intermediate_size": entry.get("dense_intermediate_size"),
        **REST[alias],
    }
    notes = [entry["note"]] if entry.get("note") else []
    notes.append(REST_NOTE)
    references = list(entry.get("source") or [])
    fix = FIXES.get(alias)
    if fix is not None:
        overrides, why = fix
        preset.update(overrides)
        notes.append(why)
    # Validate through the same code path the CLI uses, then emit the canonical form.
    spec: ModelSpec = spec_from_preset(preset, f"{alias}.json")
    out = spec.to_dict()
    overridden = fix[0] if fix else {}
    for key in CHECKED:
        ref = entry[key]
        if ref != out[key] and key not in overridden:
            raise SystemExit(f"{alias}: {key} {out[key]} disagrees with the reference {ref}")
    out["references"] = references
    out["verification"] = entry.get("verification", "")
    out["notes"] = notes
    return out


def _dump(value, indent: int) -> str:
    """json.dumps(indent=2), except that lists of scalars stay on one line ([128, 128])."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if all(isinstance(v, (int, float, bool)) or v is None for v in value):
            return json.dumps(value)
        items = [f"{inner}{_dump(v, indent + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def render(preset: dict) -> str:
    text = _dump(preset, 0) + "\n"
    assert json.loads(text) == preset
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="report differences, write nothing")
    args = ap.parse_args(argv)

    models = json.loads(args.reference.read_text(encoding="utf-8"))["models"]
    unknown = sorted({clean_name(m["name"]) for m in models} - set(ALIASES))
    if unknown:
        raise SystemExit(f"no alias for: {', '.join(unknown)} (add them to ALIASES)")
    files = {}
    for entry in models:
        preset = build(entry)
        fname = f"{preset['alias']}.json"
        if fname in files:
            raise SystemExit(f"duplicate alias {preset['alias']!r}")
        files[fname] = render(preset)

    args.out.mkdir(parents=True, exist_ok=True)
    changed = []
    for fname, text in sorted(files.items()):
        path = args.out / fname
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            changed.append(fname)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    stale = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
    if not args.check:
        for name in stale:
            (args.out / name).unlink()
    verb = "would change" if args.check else "wrote"
    print(f"{len(files)} presets in {args.out}: {verb} {len(changed)}, stale {len(stale)}")
    return 1 if args.check and (changed or stale) else 0


if __name__ == "__main__":
    sys.exit(main())
