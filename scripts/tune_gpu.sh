#!/bin/bash
# Run tuning jobs back to back on a GPU machine, within a wall-clock budget.
#   OUT=/some/dir BUDGET_S=540 scripts/tune_gpu.sh JOB [JOB...]
# JOB is NAME=ARGS, e.g. "mixtral=mixtral-8x7b --tp 2" (ARGS go to `moeplan tune`), or
# "compare:NAME=ARGS" (ARGS go to scripts/tune_compare.py). A job starts only while at least
# MIN_LEFT_S (default 60) of the budget is left and is given what is left. Logs, wall times
# and a tarball of the output folder land in $OUT.
set -u
OUT=${OUT:-/tmp/moeplan-out}
BUDGET_S=${BUDGET_S:-540}
MIN_LEFT_S=${MIN_LEFT_S:-60}
TUNED=${TUNED:-tuned}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
set -f  # table names hold [bn,bk]: no globbing of job arguments
t_start=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  nproc; } > "$OUT/env.txt" 2>&1
for job in "$@"; do
  name=${job%%=*}
  args=${job#*=}
  left=$(( BUDGET_S - ($(date +%s) - t_start) ))
  if [ "$left" -lt "$MIN_LEFT_S" ]; then
    echo "$name skipped: only ${left}s left" | tee -a "$OUT/walls.txt"
    continue
  fi
  s=$(date +%s)
  if [[ $name == compare:* ]]; then
    # shellcheck disable=SC2086
    timeout "$left" python scripts/tune_compare.py $args > "$OUT/${name#compare:}.log" 2>&1
  else
    # shellcheck disable=SC2086
    timeout "$left" python -m moeplan tune --out "$TUNED" --quiet $args > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  echo "$name rc=$rc wall=$(( $(date +%s) - s ))s args: $args" | tee -a "$OUT/walls.txt"
done
tar czf "$OUT/tuned.tgz" --exclude=routing.pt "$TUNED" 2>/dev/null  # routing pools are big and re-made from the seed
exit 0
