"""A model on a TP/DP/EP layout: ranks and expert placement (`parallel`), the engine's quant
config (`quant`), model + layout + quantization -> what every device gets and which tables it
loads (`resolve`), and that resolution as the dict `moeplan resolve` prints (`describe`, which
looks the tables up on disk), and the `moeplan tune` / `vllm serve` command lines of a layout
(`commands`).

May import: `moeplan.base`, `moeplan.model`, `moeplan.engines`, `moeplan.tables`. Pure: no torch or
triton, no I/O at import.
"""
