"""The file work behind `moeplan plan`: find every table the layouts need (the engine's lookup
order), read the measurements CSV beside each, and the calibration from every table+CSV pair in
the tuned folders. The planning itself (`planner.plan`) is pure and takes this as `TuningData`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence



def tuning_data(resolutions: Sequence, tuned_dirs: Sequence[str], env: dict):
    """Find every table the layouts need (the engine's lookup order), read the CSV beside each
    found one, and build the calibration from every table+CSV pair in the tuned folders."""
    from moeplan.planner.plan import TuningData, calibration_table
    from moeplan.tables.measurements import read_tuning_csv
    from moeplan.tables.lookup import find_table

    def points(csv_path: Path):  # no CSV: nothing measured (modelled); a bad one: PlanError naming file and line
        return read_tuning_csv(csv_path)

    tables, csvs = {}, {}
    for res in resolutions:
        for spec in res.tables():
            if spec.file_name in tables:
                continue
            path, _ = find_table(spec.file_name, tuned_dirs, env)
            tables[spec.file_name] = path
            if path:
                p = points(Path(path).with_suffix(".csv"))
                if p:
                    csvs[spec.file_name] = p
    cal = []
    for d in tuned_dirs:
        for csv_path in sorted(Path(d).glob("*.csv")):
            if not csv_path.with_suffix(".json").is_file():
                continue
            p = points(csv_path)
            c = calibration_table(csv_path.with_suffix(".json").name, p) if p else None
            if c is not None:
                cal.append(c)
    return TuningData({k: v for k, v in tables.items() if v}, csvs, tuple(cal))


def plan_model(model: str, req, device_name: Optional[str] = None, gpu_mem: Optional[str] = None,
               engine: Optional[str] = None, tuned_dirs: Sequence[str] = (), env: Optional[Mapping[str, str]] = None):
    """`moeplan plan` as one call: (Plan, the engine ProfileChoice). `model` a preset, repo id or
    config.json path; `req` a PlanRequest; tables and CSVs are looked up in `tuned_dirs` (empty:
    ./tuned, then moeplan's shipped tables) under `env` (None: this process's environment)."""
    import os

    from moeplan.engines.registry import PROFILES, choose_profile
    from moeplan.model.load import load_model
    from moeplan.planner.hardware import card_for
    from moeplan.planner.plan import TuningData, make_plan
    from moeplan.tables.lookup import check_tuned_dirs, default_tuned_dirs

    check_tuned_dirs(tuned_dirs)
    card, why = card_for(device_name, gpu_mem)  # every option before the model is read
    spec = load_model(model)
    choice = choose_profile(engine)
    if choice.profile.engine != "vllm":  # the planner models vLLM's table names and lookup only
        from moeplan.base.errors import PlanError
        raise PlanError(f"--engine {choice.profile.name}: plan models vLLM's tables only for now; valid: "
                        f"{', '.join(n for n, p in PROFILES.items() if p.engine == 'vllm')} (for SGLang's file "
                        f"names use moeplan resolve --engine {choice.profile.name})")
    dirs = list(tuned_dirs) or default_tuned_dirs()
    env = dict(os.environ if env is None else env)
    result = make_plan(spec, card, why, req, TuningData(), choice.profile,
                       find=lambda good: tuning_data(good, dirs, env))
    return result, choice
