#!/usr/bin/env python3
"""Regenerate configs/<alias>.json (moeplan's model presets) from the shared reference.

    python scripts/gen_presets.py [--reference PATH] [--out DIR] [--check]

Reads ``../shared/reference/moe_models.json`` (36 checkpoints), normalises each entry
into the preset format that ``moeplan.models.spec_from_preset`` reads, applies the
data fixes listed in ``FIXES`` (each documented in the preset's ``notes``), validates
every preset through moeplan.models, and writes one file per alias. Deterministic and
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

from moeplan.models import ModelSpec, spec_from_preset  # noqa: E402

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
    }
    notes = [entry["note"]] if entry.get("note") else []
    references = list(entry.get("source") or [])
    fix = FIXES.get(alias)
    if fix is not None:
        overrides, why = fix
        preset.update(overrides)
        notes.append(why)
    # Validate through the same code path the CLI uses, then emit the canonical form.
    spec: ModelSpec = spec_from_preset(preset, f"{alias}.json")
    out = spec.to_preset_dict()
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
