"""Programmatic dependent launch (PDL) on and off in the same engines, on one GPU, in one run.

    python benchmarks/pdl_ab.py [--models vit_b_16,bert_base] [--batches 32,1] [--checks 8] [--json out.json]

Per (model, batch), fp16 with random weights as in bench.py, one engine built with cubins for this GPU:
1. correctness: the CUDA-graph replay with PDL, without PDL, and plain launches with PDL are each checked
   against eager PyTorch on ``--checks`` fresh random inputs, and the PDL outputs against the non-PDL ones
   (the kernels are deterministic, so any difference is a race: a kernel read memory before its producer
   finished);
2. timing: both graphs replayed interleaved (bench.interleaved: medians of rounds);
3. gaps: the sum of per-kernel device times (CUPTI, kernel_profile.device_times) against each graph's time,
   so the launch gaps PDL hides are visible.
The first model is also run with both driver bindings (cuda-bindings and ctypes) of the cubin launcher.
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
from benchmarks.kernel_profile import device_times  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from trtjit import cuda_launcher  # noqa: E402


def fresh(inputs: tuple, gen: torch.Generator) -> tuple:
    """New random inputs of the same shapes and dtypes (token ids stay in their range)."""
    out = []
    for t in inputs:
        if t.is_floating_point():
            out.append(torch.randn(t.shape, generator=gen).to(t.device, t.dtype))
        else:
            out.append(torch.randint(0, int(t.max()) + 1, t.shape, generator=gen).to(t.device, t.dtype))
    return tuple(out)


def with_pdl(engine, on: bool):
    def run(*xs):
        engine.pdl = on
        return engine(*xs)
    return run


def check(model, engine, inputs, n: int, gen: torch.Generator) -> dict:
    worst = {"graph_pdl": 0.0, "graph_no_pdl": 0.0, "launches_pdl": 0.0}
    max_diff = 0.0
    for _ in range(n):
        xs = fresh(inputs, gen)
        with torch.no_grad():
            ref = model(*xs)
        engine.pdl = True
        a = engine(*xs)
        engine.pdl = False
        b = engine(*xs)
        engine.pdl, engine.cuda_graphs = True, False
        c = engine(*xs)
        engine.cuda_graphs = True
        for k, o in (("graph_pdl", a), ("graph_no_pdl", b), ("launches_pdl", c)):
            if not torch.isfinite(o).all():
                worst[k] = float("inf")
            worst[k] = max(worst[k], rel_err(o, ref))
        max_diff = max(max_diff, float((a.float() - b.float()).abs().max()), float((c.float() - b.float()).abs().max()))
    return {"rel_err": worst, "pdl_vs_no_pdl_max_abs_diff": max_diff}


def drivers(engine, inputs) -> dict:
    """The PDL graph through each driver binding of the cubin launcher, against the default's output."""
    out = {}
    engine.pdl = True
    base = engine(*inputs).float()
    saved = cuda_launcher.DRIVER
    for drv in ("cuda-bindings", "ctypes"):
        try:
            cuda_launcher.DRIVER = drv
            engine.__dict__.pop("_cubin_fns", None)
            engine._graphs.clear()
            o = engine(*inputs).float()
            engine.cuda_graphs = False
            o2 = engine(*inputs).float()
            engine.cuda_graphs = True
            out[drv] = {"driver": cuda_launcher.get_driver().name, "max_abs_diff": float((o - base).abs().max()),
                        "launches_max_abs_diff": float((o2 - base).abs().max())}
        except Exception as e:  # report, go on
            out[drv] = {"error": f"{type(e).__name__}: {e}"}
    cuda_launcher.DRIVER = saved
    engine.__dict__.pop("_cubin_fns", None)
    engine._graphs.clear()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2,vit_b_16,bert_base,gpt2")
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--checks", type=int, default=8)
    ap.add_argument("--opt-level", type=int, default=2)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    arch = cuda_launcher.current_arch()
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; {arch}", flush=True)
    rows = []
    gen = torch.Generator().manual_seed(1234)
    for mi, name in enumerate(args.models.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            model, inputs = fp16_cuda(name, batch)
            t0 = time.perf_counter()
            engine = trtjit.compile(model, inputs, opt_level=args.opt_level, targets=[arch])
            row: dict = {"model": name, "batch": batch, "build_s": round(time.perf_counter() - t0, 1),
                         "kernels": len(engine.kernels), "pdl_kernels": sum(engine._pdl_kernels),
                         "mode": cuda_launcher.describe(engine, inputs[0].device)}
            row.update(check(model, engine, inputs, args.checks, gen))
            if mi == 0 and batch == int(args.batches.split(",")[0]):
                row["drivers"] = drivers(engine, inputs)
            with torch.no_grad():
                ms = interleaved({"pdl": with_pdl(engine, True), "no_pdl": with_pdl(engine, False)}, inputs, rounds=7)
            row["ms"] = {k: round(v, 4) for k, v in ms.items()}
            row["speedup"] = round(ms["no_pdl"] / ms["pdl"], 4)
            if not args.no_profile:  # device_times profiles with PDL off
                kern = sum(device_times(engine, inputs).values())
                row["kernel_sum_ms"] = round(kern, 4)
                row["gap_ms"] = {k: round(v - kern, 4) for k, v in ms.items()}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del engine
            torch.cuda.empty_cache()
    print("\n| model | batch | kernels | no PDL ms | PDL ms | speedup | kernel sum ms | max rel err (PDL) | PDL vs not |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['kernels']} | {r['ms']['no_pdl']:.3f} | {r['ms']['pdl']:.3f} | "
              f"{r['speedup']:.3f} | {r.get('kernel_sum_ms', float('nan')):.3f} | {r['rel_err']['graph_pdl']:.1e} | "
              f"{r['pdl_vs_no_pdl_max_abs_diff']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
