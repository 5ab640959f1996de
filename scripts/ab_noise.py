"""Where the A/B's noise comes from at a batch size: each side's round-to-round spread, the spread
of the paired per-round ratios, and the margin, for several warm-up lengths, repeated.

    PYTHONPATH=. python scripts/ab_noise.py MODEL [--tp N ...] --table T.json --batch-sizes 2048,4096 \
        [--warm 2,16,64] [--repeats 3] [--csv out.csv] [--interpret]

A = the table's entry at M, B = the engine's default config there, timed by the tuner's own `ab`
phase (moeplan/tune/measure.py) with `warm` untimed replays before each side's timed batch. If the
sides' spreads shrink with a longer warm-up while the ratio spread stays put, the spread was the
GPU's clock settling after the idle spin before each batch, not the configs' own noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


def ratio_spread(rounds) -> float:
    r = [a / b for a, b in rounds]
    return statistics.stdev(r) / statistics.fmean(r) if len(r) > 1 else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--ep", action="store_true")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--table", required=True)
    ap.add_argument("--batch-sizes", required=True)
    ap.add_argument("--warm", default="2,16,64")
    ap.add_argument("--reps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--interpret", action="store_true")
    args = ap.parse_args(argv)
    if args.interpret:
        import os
        os.environ["TRITON_INTERPRET"] = "1"

    import triton

    from moeplan.layout.resolve import resolution_from_options
    from moeplan.tables.table import load_table
    from moeplan.tune.evidence import ab_stats
    from moeplan.tune.job import TableJob, TuneOptions
    from moeplan.tune.measure import Bench
    from moeplan.tune.space import engine_space
    from moeplan.tune.worker import bench_job

    if args.interpret:
        name, gpu = "cpu_interpreter", None
    else:
        import torch
        name, gpu = torch.cuda.get_device_name(0), 0
    res = resolution_from_options(args.model, args.tp, 1, args.ep, "linear", args.dtype, None, False, False, name,
                                  detect_device=False)
    spec = res.tables()[0]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    table = load_table(args.table)
    tmp = Path(tempfile.mkdtemp(prefix="moeplan-abnoise-"))
    opts = TuneOptions(batch_sizes=sizes, configs=engine_space()[:1], space_source="-", out_dir=tmp, gpus=[gpu],
                       device_name=name, triton_version=triton.__version__, interpret=args.interpret)
    job = TableJob(spec, res, opts)
    job.plan()
    bench = Bench(bench_job(job.job_payload()), gpu)
    rows = []
    print(f"{spec.file_name} on {name}: A = the table's entry, B = the default; spreads over AB rounds")
    print(f"{'M':>5} {'warm':>4} {'rep':>3} {'A config':<24} {'B config':<24} {'A sd':>6} {'B sd':>6} {'pooled':>6} "
          f"{'ratio sd':>8} {'margin':>7}")
    for M in sizes:
        ca, cb = table.entry_for(M)[1], job.defaults[M]
        for warm in (int(w) for w in args.warm.split(",")):
            bench.timing["ab"] = (warm, args.reps)
            for i in range(args.repeats):
                r = bench.measure(ca, M, "ab")
                st = ab_stats(r.rounds or []) if r.status == "ok" else None
                if st is None:
                    print(f"M={M}: {r.status} {r.error}", file=sys.stderr)
                    continue
                row = {"M": M, "warm": warm, "repeat": i, "a": ca.short(), "b": cb.short(),
                       "a_spread": st.candidate_spread, "b_spread": st.default_spread, "pooled": st.pooled_spread,
                       "ratio_spread": ratio_spread(r.rounds), "margin": st.margin, "a_us": st.candidate_us,
                       "b_us": st.default_us}
                rows.append(row)
                print(f"{M:>5} {warm:>4} {i:>3} {ca.short():<24} {cb.short():<24} {row['a_spread']:6.4f} "
                      f"{row['b_spread']:6.4f} {row['pooled']:6.4f} {row['ratio_spread']:8.4f} {row['margin']:7.4f}")
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
