"""Wave-tail A/B: each model built with the GEMM template's wave-tail split (``codegen.gemm.wave_tail``) and
without it, checked against eager PyTorch and timed interleaved on one GPU.

    python benchmarks/tail_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Both engines carry cubins for this GPU (fp16, random weights, as in bench.py). Per model it prints the
errors against eager, ms per forward (CUDA-graph replays, bench.interleaved), how many GEMMs split, and
(unless --no-profile) the time per forward of each distinct GEMM problem in both engines (CUPTI, PDL off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.models import fp16_cuda  # noqa: E402
from benchmarks.order_ab import build_with, compare, print_gemm_ms  # noqa: E402
from trtjit.cuda_launcher import current_arch  # noqa: E402


def no_tail(*args, **kwargs) -> None:
    """``codegen.gemm.wave_tail`` that never splits."""
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,bert_base,gpt2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--checks", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; {current_arch()}", flush=True)
    gen = torch.Generator().manual_seed(4321)
    rows = []
    for name in args.models.split(","):
        model, inputs = fp16_cuda(name, args.batch)
        builds = {"off": build_with(model, inputs, wave_tail=no_tail), "tail": build_with(model, inputs)}
        row = compare(name, args.batch, model, inputs, builds, gen, args.checks, profile=not args.no_profile)
        row["split_gemms"] = sum("def _gemm_tile(" in k.source for k in builds["tail"][0].kernels)
        row["speedup"] = round(row["ms"]["off"] / row["ms"]["tail"], 4)
        print(json.dumps({k: v for k, v in row.items() if k != "gemm_ms"}), flush=True)
        print_gemm_ms(row)
        rows.append(row)
        del builds
        torch.cuda.empty_cache()
    print("\n| model | batch | one tile size ms | wave tail ms | speedup | split GEMMs | max rel err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ms']['off']:.3f} | {r['ms']['tail']:.3f} | {r['speedup']:.3f} | "
              f"{r['split_gemms']} | {max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
