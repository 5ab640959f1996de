"""Tuning-table files: read, write (atomic, byte-exact), merge (`table`), verify (`verify`),
compare (`diff`), find in the engine's lookup order (`lookup`; SGLang's Triton-version folders: `sglang_lookup`), judge stale (`staleness`), and the
measurements CSV beside each table (`measurements`).

May import: `moeplan.base`, `moeplan.model`, `moeplan.engines`. Pure: no torch or triton; files
are read only when a function is called.
"""
