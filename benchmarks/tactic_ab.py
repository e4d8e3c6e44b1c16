"""GEMM tactic A/B: each model built with the ping-pong Gluon template where ``gemm_tactic="auto"`` picks it
(GEMMs with a GELU epilogue), and with the Triton template everywhere (the default), checked against eager
PyTorch and timed interleaved on one GPU. If "auto" wins, it can become BuildOptions' default.

    python benchmarks/tactic_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Both engines carry cubins for this GPU (fp16, random weights, as in bench.py). Per model it prints the
errors against eager, ms per forward (CUDA-graph replays, bench.interleaved), how many GEMMs took the
ping-pong template, and (unless --no-profile) the time per forward of each distinct GEMM problem in both
engines (CUPTI, PDL off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trtjit.codegen.gluon_gemm import is_gluon_source  # noqa: E402

from benchmarks.order_ab import ab_rows, build_with  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,bert_base,gpt2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--checks", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()

    def builds_of(model, inputs) -> dict[str, tuple]:
        return {t: build_with(model, inputs, options={"gemm_tactic": t}) for t in ("triton", "auto")}

    def annotate(row: dict, builds: dict) -> None:
        row["pingpong_gemms"] = sum(is_gluon_source(k.source) for k in builds["auto"][0].kernels)
        row["speedup"] = round(row["ms"]["triton"] / row["ms"]["auto"], 4)

    rows = ab_rows(args.models, args.batch, args.checks, builds_of, annotate, profile=not args.no_profile)
    print("\n| model | batch | triton ms | auto (ping-pong) ms | speedup | ping-pong GEMMs | max rel err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ms']['triton']:.3f} | {r['ms']['auto']:.3f} | {r['speedup']:.3f} | "
              f"{r['pingpong_gemms']} | {max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
