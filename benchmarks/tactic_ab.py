"""GEMM tactic A/B: each model built with the ping-pong Gluon template where ``gemm_tactic="auto"`` picks it
(GEMMs with a GELU epilogue; BuildOptions' default since it won here on the H100), and with the Triton
template everywhere (``gemm_tactic="triton"``), checked against eager PyTorch and timed interleaved on one GPU.

    python benchmarks/tactic_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--with-pingpong] [--json out.json]

Both engines carry cubins for this GPU (fp16, random weights, as in bench.py). Per model it prints the
errors against eager, ms per forward (CUDA-graph replays, bench.interleaved), how many GEMMs took the
ping-pong template, and (unless --no-profile) the time per forward of each distinct GEMM problem in both
engines (CUPTI, PDL off). ``--with-pingpong`` adds a third engine with every GEMM the template can express
on it (``gemm_tactic="pingpong"``), so each GEMM shape's profile shows which template is faster in an engine.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trtjit.codegen.gluon_gemm import is_gluon_source  # noqa: E402

from benchmarks.order_ab import ab_args, ab_rows, build_with, report  # noqa: E402


def main() -> None:
    args = ab_args(__doc__, extra=lambda ap: ap.add_argument(
        "--with-pingpong", action="store_true", help='also time gemm_tactic="pingpong" (every GEMM it can take)'))
    tactics = ("triton", "auto", "pingpong") if args.with_pingpong else ("triton", "auto")

    def builds_of(model, inputs) -> dict[str, tuple]:
        return {t: build_with(model, inputs, options={"gemm_tactic": t}) for t in tactics}

    def gluon_gemms(build: tuple) -> int:
        return sum(is_gluon_source(k.source) for k in build[0].kernels)

    def annotate(row: dict, builds: dict) -> None:
        row["pingpong_gemms"] = gluon_gemms(builds["auto"])
        row["speedup"] = round(row["ms"]["triton"] / row["ms"]["auto"], 4)
        if "pingpong" in builds:
            row["pingpong_everywhere_gemms"] = gluon_gemms(builds["pingpong"])

    rows = ab_rows(args.models, args.batch, args.checks, builds_of, annotate, profile=not args.no_profile)
    report(rows, {"triton ms": lambda r: f"{r['ms']['triton']:.3f}",
                  "auto (ping-pong) ms": lambda r: f"{r['ms']['auto']:.3f}",
                  "speedup": lambda r: f"{r['speedup']:.3f}", "ping-pong GEMMs": lambda r: str(r["pingpong_gemms"]),
                  **({"every GEMM ping-pong ms": lambda r: f"{r['ms']['pingpong']:.3f}",
                      "its ping-pong GEMMs": lambda r: str(r["pingpong_everywhere_gemms"])}
                     if args.with_pingpong else {})},
           args.json)

if __name__ == "__main__":
    main()
