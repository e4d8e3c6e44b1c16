#!/usr/bin/env bash
# onnx's backend test suite with CUDA engines (node tests, the pytorch-converted/pytorch-operator/simple model
# tests and the light zoo models, which take tens of minutes each under the CPU interpreter). Prints the pass
# counts and the causes of the failures; compare with tests/onnx_backend_excludes.txt (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m trtjit.onnx_backend --device CUDA --real --progress "$@"
