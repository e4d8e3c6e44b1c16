"""Wave-tail A/B: each model built with the GEMM template's wave-tail split (``codegen.gemm.wave_tail``) and
without it, checked against eager PyTorch and timed interleaved on one GPU.

    python benchmarks/tail_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Both engines carry cubins for this GPU (fp16, random weights, as in bench.py). Per model it prints the
errors against eager, ms per forward (CUDA-graph replays, bench.interleaved), how many GEMMs split, and
(unless --no-profile) the time per forward of each distinct GEMM problem in both engines (CUPTI, PDL off).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.order_ab import ab_args, ab_rows, build_with, report  # noqa: E402


def no_tail(*args, **kwargs) -> None:
    """``codegen.gemm.wave_tail`` that never splits."""
    return None


def main() -> None:
    args = ab_args(__doc__)

    def builds_of(model, inputs) -> dict[str, tuple]:
        return {"off": build_with(model, inputs, wave_tail=no_tail), "tail": build_with(model, inputs)}

    def annotate(row: dict, builds: dict) -> None:
        row["split_gemms"] = sum("def _gemm_tile(" in k.source for k in builds["tail"][0].kernels)
        row["speedup"] = round(row["ms"]["off"] / row["ms"]["tail"], 4)

    rows = ab_rows(args.models, args.batch, args.checks, builds_of, annotate, profile=not args.no_profile)
    report(rows, {"one tile size ms": lambda r: f"{r['ms']['off']:.3f}",
                  "wave tail ms": lambda r: f"{r['ms']['tail']:.3f}", "speedup": lambda r: f"{r['speedup']:.3f}",
                  "split GEMMs": lambda r: str(r["split_gemms"])}, args.json)

if __name__ == "__main__":
    main()
