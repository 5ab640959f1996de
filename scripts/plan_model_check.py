#!/usr/bin/env python3
"""How far `moeplan plan`'s modelled MoE times are from measured ones, on the committed tables.

    PYTHONPATH=. python scripts/plan_model_check.py [--tuned-dir tuned]

For each table in tuned/ with its CSV: model its times the way `plan` does for a table it
has no CSV for (roofline floor on the table's card x the winner's measured/floor ratio of the
most similar *other* table of the same card: leave-one-out), and print modelled / measured per
batch size, plus the planner's closed-form floor against the tuner's simulated one.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moeplan.planner.hardware import Card  # noqa: E402
from moeplan.model.spec import find_preset  # noqa: E402
from moeplan.engines.vllm import parse_tuning_file_name  # noqa: E402
from moeplan.layout.parallel import Layout  # noqa: E402
from moeplan.layout.resolve import QuantRequest, resolve  # noqa: E402
from moeplan.planner.plan import calibration_table, floor_us, ratio_for  # noqa: E402
from moeplan.tables.measurements import parse_tuning_csv

# table shape -> (preset, layout) that needs it
SOURCES = {(8, 7168): ("mixtral-8x7b", Layout(tp=2)), (128, 768): ("qwen3-30b-a3b", Layout()),
           (256, 256): ("deepseek-v3", Layout(tp=8)), (32, 2048): ("deepseek-v3", Layout(tp=8, ep=True))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuned-dir", default="tuned")
    args = ap.parse_args()
    runs = {}
    for csv_path in sorted(Path(args.tuned_dir).glob("E=*.csv")):
        pts = parse_tuning_csv(csv_path.read_text())
        runs[csv_path.with_suffix(".json").name] = (pts, calibration_table(csv_path.with_suffix(".json").name, pts))
    print("| table | from | modelled / measured per M (1, 16, 64, 256, 1024, 4096) | geomean | "
          "planner floor / tuner floor |")
    print("|---|---|---|---:|---:|")
    device = {n: parse_tuning_file_name(n)["device"] for n in runs}
    for name, (pts, cal) in runs.items():
        alias, layout = SOURCES[(cal.E, cal.N)]
        card = Card.from_name(device[name])
        spec = next(t for t in resolve(find_preset(alias), layout, QuantRequest(), card.name).tables()
                    if t.file_name == name)
        others = [c for n, (_, c) in runs.items() if n != name and device[n] == device[name]]
        ratios, floors, used = [], [], ""
        for M in sorted(pts):
            p = pts[M]
            if not p.winner_us:
                continue
            r, used = ratio_for(others, spec.E, spec.N, spec.scheme, M, tuned=True)
            f = floor_us(spec, find_preset(alias).num_experts, M, card)
            ratios.append((M, f * r / p.winner_us))
            if p.floor_us:
                floors.append(f / p.floor_us)
        shown = ", ".join(f"{v:.2f}" for M, v in ratios if M in (1, 16, 64, 256, 1024, 4096))
        geo = math.exp(sum(math.log(v) for _, v in ratios) / len(ratios))
        fgeo = math.exp(sum(math.log(v) for v in floors) / len(floors))
        print(f"| {name.split(',device')[0]} {device[name]} | {used.split(',device')[0]} | {shown} | {geo:.2f} | "
              f"{fgeo:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
