#!/usr/bin/env bash
# GPU validation of issue 6 (engine files, cross-compiled cubins, cubin launcher, CLI). Run on the GPU machine
# from the repository root, after `python benchmarks/gpu_check_engine.py prepare` here (carry build/gpu_check):
#   bash benchmarks/gpu_check_engine.sh
# Writes $OUT/gpu_check.json and $OUT/gpu_check.log; exits non-zero when a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu_check/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu_check.log"
python3 benchmarks/gpu_check_engine.py check --out "$OUT" 2>&1 | tee -a "$OUT/gpu_check.log"
