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
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit.codegen.gemm as gemm  # noqa: E402

import trtjit  # noqa: E402
from benchmarks.bench import interleaved, rel_err  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from benchmarks.order_ab import gemm_ms  # noqa: E402
from benchmarks.pdl_ab import fresh  # noqa: E402

VARIANTS = ("off", "tail")


def build(model, inputs, arch: str, tail: bool):
    saved = gemm.wave_tail
    if not tail:
        gemm.wave_tail = lambda *a, **k: None
    try:
        t0 = time.perf_counter()
        return trtjit.compile(model, inputs, targets=[arch]), round(time.perf_counter() - t0, 2)
    finally:
        gemm.wave_tail = saved


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
        for v in VARIANTS:
            engines[v], build_s[v] = build(model, inputs, arch, v == "tail")
        split = [k.node for k in engines["tail"].kernels if "def _gemm_tile(" in k.source]
        row: dict = {"model": name, "batch": args.batch, "build_s": build_s, "split_gemms": len(split)}
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
        row["speedup"] = round(ms["off"] / ms["tail"], 4)
        print(json.dumps(row), flush=True)
        if not args.no_profile:
            row["gemm_ms"] = {k: gemm_ms(e, inputs) for k, e in engines.items()}
            for t in engines:
                for prob, v in sorted(row["gemm_ms"][t].items(), key=lambda kv: -kv[1]):
                    print(f"    {t:5s} {prob:45s} {v * 1e3:8.1f} us per forward", flush=True)
        rows.append(row)
        del engines
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
