"""What an engine is and what each engine does: the kernel knobs of a table entry (`knobs`),
`EngineProfile`, one range of an engine's releases with its launch rules and tuning domains
(`profile`), vLLM's profiles, file-name grammar, lookup order, folders and default-config
heuristic (`vllm`), SGLang's (`sglang`), every known profile and which one a command uses (`registry`), the knob
limits every table is held to (`limits`), and the launch geometry the kernel and the pruner share
(`launch`). Adding an engine is adding its module here and listing it in `registry`.

May import: `moeplan.base`, `moeplan.model`. Pure: no torch or triton; an installed engine is found
from package metadata, never imported.
"""
