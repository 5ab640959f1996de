#!/bin/bash
# One short GPU call: the SGLang kernel's GPU tests, the A/B noise at large M (scripts/ab_noise.py),
# and a small `tune --engine sglang-0.5.23` (the up/_down pair), each under its own time limit.
#   OUT=/dir T_TESTS=60 T_NOISE=50 T_TUNE=110 scripts/gpu_check_sglang.sh
set -u
OUT=${OUT:-/tmp/moeplan-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; nproc; } \
  > "$OUT/env.txt" 2>&1
s=$(date +%s)
timeout "${T_TESTS:-60}" python3 -m pytest -q -m gpu tests/test_kernel_sglang.py -x > "$OUT/gpu_tests.txt" 2>&1
echo "gpu tests rc=$? $(( $(date +%s) - s )) s" >> "$OUT/walls.txt"
s=$(date +%s)
timeout "${T_NOISE:-50}" python3 scripts/ab_noise.py qwen3-30b-a3b --table "tuned/E=128,N=768,device_name=NVIDIA_H200.json" \
  --batch-sizes 4096 --warm 2,32 --repeats 2 --csv "$OUT/ab_noise_qwen3_tp1.csv" > "$OUT/ab_noise.txt" 2>&1
echo "ab_noise rc=$? $(( $(date +%s) - s )) s" >> "$OUT/walls.txt"
s=$(date +%s)
timeout "${T_TUNE:-110}" python3 -m moeplan tune qwen3-30b-a3b --engine sglang-0.5.23 --batch-sizes 16 --quiet \
  --out "$OUT/sgl" > "$OUT/tune_sglang.txt" 2>&1
echo "tune sglang rc=$? $(( $(date +%s) - s )) s" >> "$OUT/walls.txt"
(cd "$OUT" && tar czf sgl.tgz sgl 2>/dev/null)
