"""What a MoE model is: `ModelSpec` and the bundled presets (`spec`), the config.json reader for
every naming convention (`hf_config`), a checkpoint's quantization_config (`checkpoint_quant`),
and `load_model` for a preset alias, repo id or config.json path (`load`).

May import: `moeplan.base`. Pure: no torch, triton, rich or typer; presets are read on first use.
"""
