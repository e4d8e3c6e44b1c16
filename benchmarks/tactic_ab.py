"""GEMM tactic A/B: each model built with the ping-pong Gluon template where ``gemm_tactic="auto"`` picks it
(GEMMs with a GELU epilogue), and with the Triton template everywhere (the default), checked against eager
PyTorch and timed interleaved on one GPU. If "auto" wins, it can become BuildOptions' default.

    python benchmarks/tactic_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Both engines carry cubins for this GPU (fp16, random weights, as in bench.py). Per model it prints the
errors against eager, ms per forward (CUDA-graph replays, bench.interleaved), which GEMMs took the ping-pong template,
and the time per forward of each distinct GEMM problem in both engines (CUPTI, PDL off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit  # noqa: E402
from benchmarks.bench import interleaved, rel_err  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from benchmarks.order_ab import gemm_ms  # noqa: E402
from benchmarks.pdl_ab import fresh  # noqa: E402

TACTICS = ("triton", "auto")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,bert_base,gpt2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--checks", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    cap = torch.cuda.get_device_capability()
    arch = f"sm_{cap[0]}{cap[1]}"
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; {arch}", flush=True)
    gen = torch.Generator().manual_seed(4321)
    rows = []
    for name in args.models.split(","):
        model, inputs = fp16_cuda(name, args.batch)
        engines, build_s = {}, {}
        for t in TACTICS:
            t0 = time.perf_counter()
            engines[t] = trtjit.compile(model, inputs, targets=[arch], gemm_tactic=t)
            build_s[t] = round(time.perf_counter() - t0, 2)
        sk = [k.node for k in engines["auto"].kernels if k.maxnreg]
        row: dict = {"model": name, "batch": args.batch, "build_s": build_s, "pingpong_gemms": len(sk)}
        errs = {k: 0.0 for k in engines}
        for _ in range(args.checks):
            xs = fresh(inputs, gen)
            with torch.no_grad():
                ref = model(*xs)
                for k, e in engines.items():
                    errs[k] = max(errs[k], rel_err(e(*xs), ref))
        row["rel_err"] = errs
        with torch.no_grad():
            ms = interleaved(engines, inputs, rounds=7)
        row["ms"] = {k: round(v, 4) for k, v in ms.items()}
        row["speedup"] = round(ms["triton"] / ms["auto"], 4)
        print(json.dumps(row), flush=True)
        if not args.no_profile:
            row["gemm_ms"] = {k: gemm_ms(e, inputs) for k, e in engines.items()}
            for t in engines:
                for prob, v in sorted(row["gemm_ms"][t].items(), key=lambda kv: -kv[1]):
                    print(f"    {t:7s} {prob:45s} {v * 1e3:8.1f} us per forward", flush=True)
        rows.append(row)
        del engines
        torch.cuda.empty_cache()
    print("\n| model | batch | triton ms | auto (ping-pong) ms | speedup | ping-pong GEMMs | max rel err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ms']['triton']:.3f} | {r['ms']['auto']:.3f} | {r['speedup']:.3f} | "
              f"{r['pingpong_gemms']} | {max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
