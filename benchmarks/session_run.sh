#!/usr/bin/env bash
# One device call: the Gluon ping-pong GEMMs (their smoke run first) against trtjit's loop and cuBLAS, then the
# full benchmark table at bs32 and bs1.
#   bash benchmarks/session_run.sh      (on the GPU machine, from the repository root; writes under $OUT)
set -uo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
pip install --no-deps --no-build-isolation -e . -q 2>&1 | tail -2
timeout 150 python benchmarks/gluon_micro.py --kinds pp --json "$OUT/gluon_pp.json" 2>&1 | grep -v -i warn \
    | tee "$OUT/gluon_pp.log"
timeout 240 python benchmarks/bench.py --batches 32 --json "$OUT/bench32.json" 2>&1 | grep -v -i warn | tee "$OUT/bench32.log"
timeout 190 python benchmarks/bench.py --batches 1 --json "$OUT/bench1.json" 2>&1 | grep -v -i warn | tee "$OUT/bench1.log"
