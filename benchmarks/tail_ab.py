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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.order_ab import ab_rows, build_with  # noqa: E402


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

    def builds_of(model, inputs) -> dict[str, tuple]:
        return {"off": build_with(model, inputs, wave_tail=no_tail), "tail": build_with(model, inputs)}

    def annotate(row: dict, builds: dict) -> None:
        row["split_gemms"] = sum("def _gemm_tile(" in k.source for k in builds["tail"][0].kernels)
        row["speedup"] = round(row["ms"]["off"] / row["ms"]["tail"], 4)

    rows = ab_rows(args.models, args.batch, args.checks, builds_of, annotate, profile=not args.no_profile)
    print("\n| model | batch | one tile size ms | wave tail ms | speedup | split GEMMs | max rel err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ms']['off']:.3f} | {r['ms']['tail']:.3f} | {r['speedup']:.3f} | "
              f"{r['split_gemms']} | {max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
