"""Where an engine's time goes on the GPU: per-kernel device times (CUPTI, no launch overhead), by template.

    python benchmarks/kernel_profile.py vit_b_16:32:2 bert_base:32:3 resnet50:32:2:int8-fp16 [--json out.json]

Each argument is model:batch:opt_level[:precision] (fp16 by default, random weights, as in bench.py; an int8
precision is calibrated as in bench_int8.py: MinMax on two random batches, "int8-fp16" runs the other ops in
fp16). For each engine it prints the
CUDA-graph time, the sum of kernel times per template, and the slowest kernels with their fused IR ops, tile,
TFLOP/s (GEMM/conv) and GB/s (the bytes the kernel must move), so the worst kernels' roofline is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit  # noqa: E402
from benchmarks.bench import time_ms  # noqa: E402
from benchmarks.models import MODELS, randomize  # noqa: E402


def launch_names(engine, device) -> list[str]:
    """The function name each engine kernel launches under, which is the name the profiler reports:
    repeated layers share one compiled function, named after the first kernel that uses it."""
    first: dict[int, str] = {}
    return [first.setdefault(id(fn), k.name) for k, fn in zip(engine.kernels, engine._functions(device))]


def device_times(engine, inputs, iters: int = 5) -> dict[str, float]:
    """Median device time per kernel name (ms) over ``iters`` eager (non-graph) runs, from the profiler.
    Programmatic dependent launch is off meanwhile: an early-launched kernel's time would include its wait
    for the previous one (seen on vit_b_16: kernel times summing to 4.13 ms in a 3.26 ms graph)."""
    from torch.profiler import ProfilerActivity, profile
    engine.cuda_graphs, pdl = False, engine.pdl
    engine.pdl = False
    engine(*inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            engine(*inputs)
        torch.cuda.synchronize()
    per: dict[str, list[float]] = defaultdict(list)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per[ev.name].append(ev.device_time_total / 1e3 if hasattr(ev, "device_time_total") else ev.cuda_time / 1e3)
    engine.cuda_graphs, engine.pdl = True, pdl
    out = {}
    for name, ts in per.items():
        ts.sort()
        out[name] = sum(ts) / iters  # total per forward (a kernel name may run several times per forward)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("specs", nargs="+")
    p.add_argument("--json", default=None)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--gemms", action="store_true", help="list each distinct GEMM/conv problem with its tile")
    a = p.parse_args()
    cap = torch.cuda.get_device_capability()
    report = []
    for spec in a.specs:
        name, batch, level, *prec = spec.split(":")
        torch.manual_seed(0)
        model, inputs = MODELS[name](int(batch))
        targets = [f"sm_{cap[0]}{cap[1]}"]
        if prec and prec[0] != "fp16":
            low, _, fallback = prec[0].partition("-")
            model = randomize(model).eval().cuda()
            g = torch.Generator().manual_seed(1)
            calib = [[torch.randn(t.shape, generator=g) if t.is_floating_point() else t for t in inputs]
                     for _ in range(2)]
            inputs = tuple(t.cuda() for t in inputs)
            engine = trtjit.compile(model, inputs, opt_level=int(level), targets=targets, precision=low,
                                    fallback_precision=fallback or "fp32", calibrator=trtjit.MinMaxCalibrator(calib))
        else:
            model = randomize(model).eval().cuda().half()
            inputs = tuple(t.cuda().half() if t.is_floating_point() else t.cuda() for t in inputs)
            engine = trtjit.compile(model, inputs, opt_level=int(level), targets=targets)
        graph_ms = time_ms(engine, inputs)
        dev = device_times(engine, inputs)
        # a shared function's time is split evenly over the kernels launching it, so each row is one launch
        shared = launch_names(engine, inputs[0].device)
        launches = Counter(shared)
        rows = []
        for k, fn_name in zip(engine.kernels, shared):
            ms = dev.get(fn_name, 0.0) / launches[fn_name]
            rows.append({"name": k.name, "function": fn_name, "template": k.template, "covers": k.covers,
                         "grid": list(k.grid), "tile": {**k.constexprs, "w": k.num_warps, "s": k.num_stages},
                         "src": k.tile, "ms": ms, "problem": getattr(k, "problem", None),
                         "tflops": k.flops / (ms * 1e-3) / 1e12 if ms else 0.0,
                         "gbs": k.bytes / (ms * 1e-3) / 1e9 if ms else 0.0})
        by_t: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for r in rows:
            by_t[r["template"]][0] += r["ms"]
            by_t[r["template"]][1] += 1
        total = sum(r["ms"] for r in rows)
        print(f"\n== {spec}: graph {graph_ms:.3f} ms, kernels {len(rows)}, sum of device times {total:.3f} ms", flush=True)
        for t, (ms, n) in sorted(by_t.items(), key=lambda x: -x[1][0]):
            print(f"   {t:10s} {n:4d} kernels {ms:7.3f} ms")
        print("   per launch, slowest first (x n: launches of that shared function per forward):")
        listed: set[str] = set()
        for r in sorted(rows, key=lambda r: -r["ms"]):
            if r["function"] in listed:
                continue
            listed.add(r["function"])
            print(f"   {r['ms'] * 1e3:7.1f} us x{launches[r['function']]:<3d}{r['template']:9s} {r['tflops']:6.1f} TF "
                  f"{r['gbs']:6.0f} GB/s grid {r['grid']} {r['tile']} {r['src']} | {' '.join(r['covers'])[:100]}",
                  flush=True)
            if len(listed) >= a.top:
                break
        if a.gemms:  # each distinct GEMM/conv problem once: its tile (heuristic or tuned) and summed time
            seen: dict[str, list] = {}
            for r in rows:
                if r["problem"] and r["template"] in ("gemm", "conv"):
                    key = f"{r['template']} {r['problem']} {r['tile']} {r['src']}"
                    entry = seen.setdefault(key, [0.0, 0])
                    entry[0] += r["ms"]
                    entry[1] += 1
            for key, (ms, n) in sorted(seen.items(), key=lambda x: -x[1][0]):
                print(f"   GEMM {key}: {n} launch(es), {ms * 1e3:.1f} us per forward")
        report.append({"spec": spec, "graph_ms": graph_ms, "kernels": rows})
        del engine
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
