"""GEMM program order A/B/C: the default (N tiles fastest from ``codegen.gemm.N_FASTEST_A_BYTES`` of A, since
2026-12-06's third session 0: everywhere), N tiles fastest everywhere and M tiles fastest everywhere, in the
same models on one GPU in one run.

    python benchmarks/order_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Per model (fp16, random weights, as in bench.py), three engines with cubins for this GPU, built with the
threshold as it is, at 0 and out of reach. All are checked against eager PyTorch on fresh random inputs,
timed interleaved as CUDA-graph replays (bench.interleaved), and profiled (CUPTI, PDL off): the time per
forward of each distinct GEMM problem in each order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit.codegen.gemm as gemm  # noqa: E402

import trtjit  # noqa: E402
from benchmarks.bench import interleaved, rel_err  # noqa: E402
from benchmarks.kernel_profile import device_times, launch_names  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from benchmarks.pdl_ab import fresh  # noqa: E402


def build(model, inputs, arch: str, threshold: int | None):
    saved = gemm.N_FASTEST_A_BYTES
    if threshold is not None:
        gemm.N_FASTEST_A_BYTES = threshold
    try:
        t0 = time.perf_counter()
        return trtjit.compile(model, inputs, targets=[arch]), time.perf_counter() - t0
    finally:
        gemm.N_FASTEST_A_BYTES = saved


def gemm_ms(engine, inputs) -> dict[str, float]:
    """ms per forward of each distinct GEMM problem (all its launches), from the profiler."""
    dev = device_times(engine, inputs)  # per launched function: all its launches
    out: dict[str, float] = defaultdict(float)
    counted: set[str] = set()
    for k, name in zip(engine.kernels, launch_names(engine, inputs[0].device)):
        if k.template == "gemm" and name not in counted:
            counted.add(name)
            p = k.problem
            out[f"{p['M']}x{p['N']}x{p['K']} grid {list(k.grid)}"] += dev.get(name, 0.0)
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vit_b_16,bert_base,gpt2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--checks", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    cap = torch.cuda.get_device_capability()
    arch = f"sm_{cap[0]}{cap[1]}"
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; {arch}", flush=True)
    gen = torch.Generator().manual_seed(4321)
    rows = []
    for name in args.models.split(","):
        model, inputs = fp16_cuda(name, args.batch)
        engines = {"rule": build(model, inputs, arch, None), "n_fastest": build(model, inputs, arch, 0),
                   "m_fastest": build(model, inputs, arch, 1 << 62)}
        row: dict = {"model": name, "batch": args.batch, "build_s": {k: round(v[1], 2) for k, v in engines.items()}}
        errs = {k: 0.0 for k in engines}
        for _ in range(args.checks):
            xs = fresh(inputs, gen)
            with torch.no_grad():
                ref = model(*xs)
                for k, (e, _) in engines.items():
                    errs[k] = max(errs[k], rel_err(e(*xs), ref))
        row["rel_err"] = errs
        with torch.no_grad():
            ms = interleaved({k: e for k, (e, _) in engines.items()}, inputs, rounds=7)
        row["ms"] = {k: round(v, 4) for k, v in ms.items()}
        row["speedup"] = {k: round(ms["m_fastest"] / ms[k], 4) for k in ("rule", "n_fastest")}
        row["gemm_ms"] = {k: gemm_ms(e, inputs) for k, (e, _) in engines.items()}
        print(json.dumps({k: v for k, v in row.items() if k != "gemm_ms"}), flush=True)
        for order in engines:
            for prob, t in sorted(row["gemm_ms"][order].items(), key=lambda kv: -kv[1]):
                print(f"    {order:9s} {prob:45s} {t * 1e3:8.1f} us per forward", flush=True)
        rows.append(row)
        del engines
        torch.cuda.empty_cache()
    print("\n| model | batch | M fastest ms | N fastest ms | rule ms | speedup N fastest | speedup rule | max rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms, sp = r["ms"], r["speedup"]
        print(f"| {r['model']} | {r['batch']} | {ms['m_fastest']:.3f} | {ms['n_fastest']:.3f} | {ms['rule']:.3f} | "
              f"{sp['n_fastest']:.3f} | {sp['rule']:.3f} | {max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
