"""Time two tables' entries side by side, interleaved, per batch size (two tunes of one table,
fast vs exhaustive, or a table vs the engine's default heuristic).

    PYTHONPATH=. python scripts/tune_compare.py MODEL [resolve options] --a A.json --b B.json \
        --batch-sizes 1,8,128,2048 [--csv out.csv] [--seed 0] [--interpret]

For each batch size, the config each table's engine would run there (A and B) is timed with the
tuner's own A/B phase (moeplan/tune/measure.py `ab`): one process, the tuner's inputs and routing
pool, AB_ROUNDS rounds in ABBA order, each round a batch of CUDA-graph replays per side. It prints
per M both configs, both medians, each side's spread, and A/B = the median of the paired per-round
ratios (< 1: A is faster), then the geomean; `--csv` writes the same rows. `--b default` compares
against the engine's default heuristic. `--interpret` runs in Triton's CPU interpreter (tests;
with MOEPLAN_TUNE_TIMER=model the times are the tuner's cost model).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--ep", action="store_true")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--block-shape", default=None)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True, help="a table, or 'default'")
    ap.add_argument("--batch-sizes", required=True)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the tuner's seed: same weights and routing draws")
    ap.add_argument("--interpret", action="store_true", help="Triton's CPU interpreter (tests)")
    args = ap.parse_args(argv)
    if args.interpret:
        import os
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

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
    res = resolution_from_options(args.model, args.tp, args.dp, args.ep, "linear", args.dtype, args.block_shape,
                                  False, False, name, detect_device=False)
    spec = res.tables()[0]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    a = load_table(args.a)
    b = None if args.b == "default" else load_table(args.b)
    tmp = Path(tempfile.mkdtemp(prefix="moeplan-compare-"))
    opts = TuneOptions(batch_sizes=sizes, configs=engine_space()[:1], space_source="-", out_dir=tmp, gpus=[gpu],
                       seed=args.seed, device_name=name, triton_version=triton.__version__, interpret=args.interpret)
    job = TableJob(spec, res, opts)
    job.plan()
    bench = Bench(bench_job(job.job_payload()), gpu)  # routing pools travel as bytes
    rows = []
    print(f"{spec.file_name} on {name}; A={args.a} B={args.b}")
    print(f"{'M':>6} {'A config':<26} {'A us':>9} {'A sd':>6} {'B config':<26} {'B us':>9} {'B sd':>6} {'A/B':>6}")
    for M in sizes:
        ca = a.entry_for(M)[1]
        cb = job.defaults[M] if b is None else b.entry_for(M)[1]
        bench.defaults[M] = cb  # the A/B's other side
        r = bench.measure(ca, M, "ab")
        st = ab_stats(r.rounds or []) if r.status == "ok" else None
        if st is None:
            print(f"M={M} {ca.short()} vs {cb.short()}: {r.status} {r.error}", file=sys.stderr)
        row = {"M": M, "a_config": ca.short(), "b_config": cb.short(), "same_config": ca == cb,
               "a_us": st and st.candidate_us, "b_us": st and st.default_us,
               "a_spread": st and st.candidate_spread, "b_spread": st and st.default_spread,
               "a_over_b": st and 1 - st.margin, "rounds": st and st.rounds}
        rows.append(row)
        f = (lambda v, s: "-" if v is None else format(v, s))
        print(f"{M:>6} {ca.short():<26} {f(row['a_us'], '9.1f')} {f(row['a_spread'], '6.3f')} {cb.short():<26} "
              f"{f(row['b_us'], '9.1f')} {f(row['b_spread'], '6.3f')} {f(row['a_over_b'], '6.3f')}")
    ratios = [r["a_over_b"] for r in rows if r["a_over_b"]]
    if ratios:
        g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        worst = max(rows, key=lambda r: abs(math.log(r["a_over_b"])) if r["a_over_b"] else -1)
        print(f"geomean A/B {g:.4f}; farthest from 1: M={worst['M']} {worst['a_over_b']:.4f}")
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    bench.close()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
