"""Markdown summaries of tuning runs from their measurement CSVs.

    python scripts/tune_report.py tuned/*.csv

Per batch size: the winner (the config that passed the gate), its confirmed median, the
engine default's confirmed median, the speed-up, the roofline floor and the fraction of
it reached; then per table the geomean speed-up and the points/configs measured.
"""

from __future__ import annotations

import math
import sys

import pandas as pd


def geomean(xs):
    xs = [x for x in xs if x and x == x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def summary(path: str) -> str:
    df = pd.read_csv(path)
    conf = df[df.phase == "confirm"]
    lines = [f"#### `{df.table.iloc[0]}`", "",
             "| M | winner BM/BN/BK/G/warps/stages | time us | default us | speed-up | floor us | of roofline |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    sp, rf = [], []
    for M in sorted(df.batch_size.unique()):
        w = conf[(conf.batch_size == M) & conf.is_winner]
        d = conf[(conf.batch_size == M) & conf.is_default & (conf.status == "ok")]
        floor = df[df.batch_size == M].floor_us.iloc[0] if "floor_us" in df else float("nan")
        if w.empty:
            lines.append(f"| {M} | (none passed) | | | | | |")
            continue
        t = float(w.median_us.iloc[0])
        td = float(d.median_us.iloc[0]) if not d.empty else float("nan")
        sp.append(td / t)
        rf.append(floor / t)
        lines.append(f"| {M} | {w.config.iloc[0]} | {t:.1f} | {td:.1f} | {td / t:.2f}x | {floor:.1f} | "
                     f"{100 * floor / t:.0f}% |")
    n_cfg = df.config.nunique()
    failed = int((df.status != "ok").sum())
    lines += ["", f"Geomean speed-up over the default heuristic **{geomean(sp):.2f}x**; geomean roofline "
              f"fraction {100 * geomean(rf):.0f}%; {len(df)} measurements of {n_cfg} configs "
              f"({failed} not ok: {dict(df[df.status != 'ok'].status.value_counts())})."]
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summary(p))
        print()
