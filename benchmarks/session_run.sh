#!/usr/bin/env bash
# One device call: PDL A/B (correctness + timing), then the full benchmark table at bs32 and bs1.
#   bash benchmarks/session_run.sh      (on the GPU machine, from the repository root; writes under $OUT)
set -uo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
pip install --no-deps --no-build-isolation -e . -q 2>&1 | tail -2
{ timeout 75 python benchmarks/pdl_ab.py --models vit_b_16,gpt2 --batches 32 --checks 4 --json "$OUT/pdl32.json"
  timeout 60 python benchmarks/pdl_ab.py --models mobilenet_v2,bert_base --batches 1 --checks 4 --json "$OUT/pdl1.json"
} 2>&1 | grep -v -i warn | tee "$OUT/pdl_ab.log"
timeout 230 python benchmarks/bench.py --batches 32 --json "$OUT/bench32.json" 2>&1 | grep -v -i warn | tee "$OUT/bench32.log"
timeout 200 python benchmarks/bench.py --batches 1 --json "$OUT/bench1.json" 2>&1 | grep -v -i warn | tee "$OUT/bench1.log"
