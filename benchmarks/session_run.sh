#!/usr/bin/env bash
# One device call: the ping-pong GEMM tactic inside engines (checked against eager, timed against the Triton
# template, per-GEMM profiles), then the full benchmark table at bs32 and bs1.
#   bash benchmarks/session_run.sh      (on the GPU machine, from the repository root; writes under $OUT)
set -uo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
pip install --no-deps --no-build-isolation -e . -q 2>&1 | tail -2
timeout 200 python benchmarks/tactic_ab.py --models vit_b_16,bert_base,gpt2 --checks 2 --json "$OUT/tactic.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/tactic.log"
timeout 200 python benchmarks/bench.py --batches 32 --json "$OUT/bench32.json" 2>&1 | grep -v -i warn | tee "$OUT/bench32.log"
timeout 170 python benchmarks/bench.py --batches 1 --json "$OUT/bench1.json" 2>&1 | grep -v -i warn | tee "$OUT/bench1.log"
