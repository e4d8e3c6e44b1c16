"""trtjit against PyTorch eager and torch.compile, fp16, on one GPU, in one run.

    python benchmarks/bench.py [--models resnet50,bert_base] [--batches 1,32] [--max-autotune] [--gemm-tactic auto]
        [--json out.json]

For every (model, batch): check trtjit's output against eager, then time eager, torch.compile (default;
reduce-overhead at batch 1; max-autotune behind a flag) and trtjit with CUDA events after warm-up (medians
of 5 rounds of 20 runs, the contenders taking turns within each round), and report trtjit's build time,
engine save + load + first inference time, achieved TFLOP/s and fraction of the measured GEMM ceiling (GEMM/conv
FLOPs; a second column adds attention's score and value products, causal ones over the pairs computed), and
peak GPU memory.

Compile caches: the run starts with empty Inductor and Triton cache folders (fresh temporary ones, unless
``--warm-caches``), so torch.compile's first call and trtjit's build both start cold on the run's first model
and are equally warm for whatever a later row shares with an earlier one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit  # noqa: E402
from benchmarks.models import MODELS, fp16_cuda  # noqa: E402

GEMM_CEILING_TFLOPS = 756.0  # fp16 dense GEMM measured on the H100 (issue 9)


def time_ms(fn, inputs, warmup: int = 10, iters: int = 50) -> float:
    for _ in range(warmup):
        fn(*inputs)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(*inputs)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def interleaved(fns: dict[str, object], inputs, rounds: int = 5, iters: int = 20) -> dict[str, float]:
    """ms of each contender: the median over ``rounds`` of each round's median, the contenders timed in turn
    within every round, so a drift of the card's speed during the run (clocks, other tenants) falls on all
    of them alike instead of on whichever was timed last."""
    per: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            per[k].append(time_ms(fn, inputs, warmup=3, iters=iters))
    return {k: statistics.median(v) for k, v in per.items()}


def compiled(model, inputs, mode: str | None):
    fn = torch.compile(model, mode=mode)
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(*inputs)
    torch.cuda.synchronize()
    return fn, time.perf_counter() - t0


def bench_one(name: str, batch: int, args) -> dict:
    model, inputs = fp16_cuda(name, batch)
    row: dict = {"model": name, "batch": batch, "precision": "fp16"}
    torch._dynamo.reset()
    contenders: dict[str, object] = {"eager_ms": model}
    with torch.no_grad():
        ref = model(*inputs)
        contenders["compile_ms"], row["compile_first_s"] = compiled(model, inputs, None)
        if batch == 1:
            contenders["ro_ms"], row["ro_first_s"] = compiled(model, inputs, "reduce-overhead")
        if args.max_autotune:
            contenders["ma_ms"], row["ma_first_s"] = compiled(model, inputs, "max-autotune")
    t0 = time.perf_counter()
    cap = torch.cuda.get_device_capability()
    targets = [f"sm_{cap[0]}{cap[1]}"] if not args.jit else []  # cubins compiled in parallel worker processes
    engine = trtjit.compile(model, inputs, opt_level=args.opt_level, targets=targets, gemm_tactic=args.gemm_tactic)
    out = engine(*inputs)
    torch.cuda.synchronize()
    row["trtjit_build_s"] = time.perf_counter() - t0
    row["build_phases_s"] = {k: round(v, 2) for k, v in engine.build_phases.items()}
    row["kernels"] = len(engine.kernels)
    row["pdl"] = engine._pdl_on(inputs[0].device)
    row["max_rel_err"] = rel_err(out, ref)
    if not ref.abs().max() > 0:
        raise RuntimeError(f"{name}: the eager reference output is all zeros; the output check would prove nothing")
    contenders["trtjit_ms"] = engine
    torch.cuda.reset_peak_memory_stats()
    engine(*inputs)
    row["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    with torch.no_grad():
        row.update(interleaved(contenders, inputs))
    del contenders
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as d:
        path = engine.save(os.path.join(d, "m.plan"))
        t0 = time.perf_counter()
        loaded = trtjit.load(path)
        t1 = time.perf_counter()
        loaded(*inputs)
        torch.cuda.synchronize()
        row["load_first_s"] = time.perf_counter() - t0
        row["load_s"] = t1 - t0  # reading, checking and lowering the file; the rest loads cubins and captures
    flops = sum(k.flops for k in engine.kernels if k.template in ("gemm", "conv"))
    row["tflops"] = flops / (row["trtjit_ms"] * 1e-3) / 1e12
    row["roofline"] = row["tflops"] / GEMM_CEILING_TFLOPS
    # with attention's score and value products (causal: the pairs computed), the model's whole tensor-core work
    flops_all = flops + sum(k.flops for k in engine.kernels if k.template == "attention")
    row["roofline_all"] = flops_all / (row["trtjit_ms"] * 1e-3) / 1e12 / GEMM_CEILING_TFLOPS
    best = min(row.get("compile_ms", math.inf), row.get("ro_ms", math.inf), row.get("ma_ms", math.inf))
    row["speedup_vs_compile"] = row["compile_ms"] / row["trtjit_ms"]
    row["speedup_vs_best"] = best / row["trtjit_ms"]
    if args.profile:
        prof = engine.profile(*inputs, iters=5)
        row["top_kernels"] = [(p.name, round(p.ms, 4)) for p in sorted(prof, key=lambda p: -p.ms)[:8]]
    return row


def table(rows: list[dict]) -> str:
    head = ("| model | precision | batch | eager ms | torch.compile ms | reduce-overhead ms | trtjit ms | "
            "speedup vs compile | speedup vs best | TFLOP/s | roofline | roofline incl. attention | build s | load+first s | "
            "compile first s | peak MB | max rel err |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | fp16 | {r['batch']} | error: {r['error']} |")
            continue
        ro = f"{r['ro_ms']:.2f}" if "ro_ms" in r else ""
        lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['eager_ms']:.2f} | {r['compile_ms']:.2f} | "
                     f"{ro} | {r['trtjit_ms']:.2f} | {r['speedup_vs_compile']:.2f} | {r['speedup_vs_best']:.2f} | "
                     f"{r['tflops']:.1f} | {r['roofline']:.1%} | {r.get('roofline_all', float('nan')):.1%} | {r['trtjit_build_s']:.1f} | {r['load_first_s']:.2f} | "
                     f"{r['compile_first_s']:.1f} | {r['peak_mem_mb']:.0f} | {r['max_rel_err']:.1e} |")
    ok = [r for r in rows if "error" not in r]
    for b, key in ((32, "speedup_vs_compile"), (1, "speedup_vs_best")):
        sel = [r[key] for r in ok if r["batch"] == b]
        if sel:
            g = math.exp(sum(math.log(x) for x in sel) / len(sel))
            mode = "default mode" if b == 32 else "best mode (reduce-overhead)"
            lines.append(f"\ngeomean speedup vs torch.compile, fp16 bs{b}: {g:.2f} ({mode}, {len(sel)} models)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--opt-level", type=int, default=2)
    p.add_argument("--max-autotune", action="store_true")
    p.add_argument("--gemm-tactic", default="auto", choices=("triton", "auto", "pingpong"),
                   help="BuildOptions.gemm_tactic (auto: the ping-pong Gluon GEMM for GELU epilogues on sm_90)")
    p.add_argument("--profile", action="store_true", help="also record the slowest trtjit kernels")
    p.add_argument("--json", default=None)
    p.add_argument("--jit", action="store_true", help="let Triton JIT-compile kernels instead of building cubins")
    p.add_argument("--warm-caches", action="store_true",
                   help="keep the Inductor/Triton cache folders of earlier runs (default: fresh empty ones)")
    args = p.parse_args()
    if not args.warm_caches:  # read when compiling, so set before the first compile (worker processes inherit it)
        cold = tempfile.mkdtemp(prefix="bench-caches-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cold, "inductor")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(cold, "triton")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
          f"{__import__('triton').__version__}, trtjit {trtjit.__version__}", flush=True)
    rows = []
    for name in args.models.split(","):
        for b in (int(x) for x in args.batches.split(",")):
            try:
                rows.append(bench_one(name, b, args))
            except Exception as e:  # report and go on with the other models
                traceback.print_exc()
                rows.append({"model": name, "batch": b, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
