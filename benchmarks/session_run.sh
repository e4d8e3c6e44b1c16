#!/usr/bin/env bash
# The next session's device calls, two of them (each fits one 600 s call):
#   bash benchmarks/session_run.sh 1   the ping-pong GEMM template's GPU test (ragged shapes, one-tile programs),
#                                      then the tactic inside engines (benchmarks/tactic_ab.py: checked against
#                                      eager, timed against the Triton template, per-GEMM profiles)
#   bash benchmarks/session_run.sh 2 [TACTIC]   the full benchmark table at bs32 and bs1
#                                      (TACTIC: bench.py --gemm-tactic, default auto)
#   bash benchmarks/session_run.sh 3   one call when the device is scarce: the GPU test, the bs32 rows that the
#                                      "auto" tactic changes ($MODELS, default the three transformers; bs1 never
#                                      takes the template), then the A/B on vit_b_16 alone
# (on the GPU machine, from the repository root; writes under $OUT)
set -uo pipefail
OUT="${OUT:-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee -a "$OUT/card.txt"
python -m pip install --no-deps --no-build-isolation -e . -q 2>&1 | tail -2
TACTIC="${2:-auto}"
echo "gemm tactic: $TACTIC" | tee -a "$OUT/card.txt"
case "${1:-1}" in
1)
    timeout 120 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k gpu -rs 2>&1 | tail -15 \
        | tee "$OUT/gluon_gpu_test.log"
    timeout 300 python benchmarks/tactic_ab.py --models vit_b_16,bert_base,gpt2 --checks 2 --json "$OUT/tactic.json" \
        2>&1 | grep -v -i warn | tee "$OUT/tactic.log"
    ;;
2)
    timeout 250 python benchmarks/bench.py --batches 32 --gemm-tactic "$TACTIC" --json "$OUT/bench32.json" 2>&1 | grep -v -i warn \
        | tee "$OUT/bench32.log"
    timeout 220 python benchmarks/bench.py --batches 1 --gemm-tactic "$TACTIC" --json "$OUT/bench1.json" 2>&1 | grep -v -i warn \
        | tee "$OUT/bench1.log"
    ;;
3)
    timeout 110 python -m pytest -q -p no:cacheprovider tests/test_gluon_gemm.py -k gpu -rs 2>&1 | tail -15 \
        | tee "$OUT/gluon_gpu_test.log"
    echo "t=$SECONDS s" | tee -a "$OUT/card.txt"
    timeout 290 python benchmarks/bench.py --batches 32 --models "${MODELS:-vit_b_16,bert_base,gpt2}" \
        --gemm-tactic auto --json "$OUT/bench32.json" 2>&1 | grep -v -i warn | tee "$OUT/bench32.log"
    echo "t=$SECONDS s" | tee -a "$OUT/card.txt"
    timeout 150 python benchmarks/tactic_ab.py --models vit_b_16 --checks 2 --json "$OUT/tactic.json" \
        2>&1 | grep -v -i warn | tee "$OUT/tactic.log"
    echo "t=$SECONDS s" | tee -a "$OUT/card.txt"
    ;;
*)
    echo "usage: bash benchmarks/session_run.sh [1|2|3] [TACTIC]" >&2
    exit 2
    ;;
esac
