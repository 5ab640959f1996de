"""Re-measure two tables' picks side by side in one process (fast vs exhaustive, or tuned vs default).

    PYTHONPATH=. python scripts/tune_compare.py MODEL [resolve options] --a FAST.json --b EXHAUSTIVE.json \
        --batch-sizes 8,128,2048 [--rounds 3] [--csv out.csv]

For each batch size, both configs are measured with the tuner's full (`confirm`) timing,
alternating A, B, A, B, ... `rounds` times on the same GPU, inputs and routing pool; the
report gives the median of each and A's time over B's. `--b default` compares against
the engine's default heuristic.
"""

from __future__ import annotations

import argparse
import statistics
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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the tuner's seed: same weights and routing draws")
    args = ap.parse_args(argv)

    import torch

    from moeplan.layout.resolve import resolution_from_options
    from moeplan.tables.table import load_table
    from moeplan.tune.job import TableJob, TuneOptions
    from moeplan.tune.measure import Bench
    from moeplan.tune.space import engine_space
    from moeplan.tune.worker import bench_job

    name = torch.cuda.get_device_name(0)
    res = resolution_from_options(args.model, args.tp, args.dp, args.ep, "linear", args.dtype, args.block_shape,
                                  False, False, name, detect_device=False)
    spec = res.tables()[0]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    a = load_table(args.a)
    b = None if args.b == "default" else load_table(args.b)
    tmp = Path(tempfile.mkdtemp(prefix="moeplan-compare-"))
    import triton
    opts = TuneOptions(batch_sizes=sizes, configs=engine_space()[:1], space_source="-", out_dir=tmp, gpus=[0],
                       seed=args.seed, device_name=name, triton_version=triton.__version__)
    job = TableJob(spec, res, opts)
    job.plan()
    bench = Bench(bench_job(job.job_payload()), 0)  # routing pools travel as bytes
    rows = []
    print(f"{spec.file_name} on {name}; A={args.a} B={args.b}")
    print(f"{'M':>6} {'A config':<28} {'A us':>9} {'B config':<28} {'B us':>9} {'A/B':>6}")
    for M in sizes:
        ca = a.entry_for(M)[1]
        cb = job.defaults[M] if b is None else b.entry_for(M)[1]
        ta, tb = [], []
        for _ in range(args.rounds):
            for cfg, acc in ((ca, ta), (cb, tb)):
                r = bench.measure(cfg, M, "confirm")
                if r.status != "ok":
                    print(f"M={M} {cfg.short()}: {r.status} {r.error}", file=sys.stderr)
                    acc.append(float("inf"))
                else:
                    acc.append(r.median_us)
        ma, mb = statistics.median(ta), statistics.median(tb)
        rows.append({"M": M, "a_config": ca.short(), "a_us": ma, "b_config": cb.short(), "b_us": mb,
                     "a_over_b": ma / mb})
        print(f"{M:>6} {ca.short():<28} {ma:>9.1f} {cb.short():<28} {mb:>9.1f} {ma / mb:>6.3f}")
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
