"""The warp-specialized TMA GEMM loop on and off in the same models, on one GPU, in one run.

    python benchmarks/ws_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Per model (fp16, random weights, as in bench.py), two engines with cubins for this GPU: the default build
(GEMMs that ``codegen.gemm.ws_config`` covers run warp-specialized) and one built with ``WS_TILES`` emptied
(every GEMM on the pointer loop, as before). Both are checked against eager PyTorch on fresh random inputs,
timed interleaved as CUDA-graph replays (bench.interleaved), and profiled per kernel (CUPTI) so each GEMM's
time shows next to its other-loop twin. A JIT engine (no stored cubins) of one WS GEMM is checked too: its
TMA descriptors take their scratch from Triton's allocator rather than from the cubin launcher.
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
from benchmarks.kernel_profile import device_times  # noqa: E402
from benchmarks.models import MODELS, randomize  # noqa: E402
from benchmarks.pdl_ab import fresh  # noqa: E402


def build(model, inputs, arch: str, ws: bool):
    saved = gemm.WS_TILES
    if not ws:
        gemm.WS_TILES = ()
    try:
        t0 = time.perf_counter()
        engine = trtjit.compile(model, inputs, targets=[arch])
        return engine, time.perf_counter() - t0
    finally:
        gemm.WS_TILES = saved


def gemm_times(engine, inputs) -> dict[str, float]:
    """Device time per GEMM kernel node (ms), the WS flag and tile in the key."""
    t = device_times(engine, inputs)
    out = {}
    for k in engine.kernels:
        if k.template == "gemm" and k.name in t:
            c = k.constexprs
            out[f"{k.name} {k.problem.get('M')}x{k.problem.get('N')}x{k.problem.get('K')} "
                f"{c['BLOCK_M']}x{c['BLOCK_N']}/{k.num_warps}w/{k.num_stages}s"
                f"{' ws' if 'warp_specialize' in k.source else ''}"] = t[k.name]
    return out


def jit_check(gen: torch.Generator) -> dict:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(768, 3072), torch.nn.GELU()).eval().cuda().half()
    x = torch.randn(32, 197, 768, generator=gen).cuda().half()
    e = trtjit.compile(m, (x,))
    ws = sum("warp_specialize" in k.source for k in e.kernels)
    with torch.no_grad():
        return {"ws_kernels": ws, "rel_err": rel_err(e(x), m(x))}


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
    print("jit engine:", json.dumps(jit_check(gen)), flush=True)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, inputs = MODELS[name](args.batch)
        model = randomize(model).eval().cuda().half()
        inputs = tuple(t.cuda().half() if t.is_floating_point() else t.cuda() for t in inputs)
        engines = {k: build(model, inputs, arch, k == "ws") for k in ("ws", "ptr")}
        row: dict = {"model": name, "batch": args.batch,
                     "build_s": {k: round(v[1], 2) for k, v in engines.items()},
                     "ws_kernels": sum("warp_specialize" in k.source for k in engines["ws"][0].kernels)}
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
        row["speedup"] = round(ms["ptr"] / ms["ws"], 4)
        row["gemm_ms"] = {k: gemm_times(e, inputs) for k, (e, _) in engines.items()}
        row["gemm_sum_ms"] = {k: round(sum(v.values()), 4) for k, v in row["gemm_ms"].items()}
        print(json.dumps({k: v for k, v in row.items() if k != "gemm_ms"}), flush=True)
        for k in engines:
            seen = set()
            for kern, t in sorted(row["gemm_ms"][k].items(), key=lambda kv: -kv[1]):
                shape = kern.split(" ", 1)[1]
                if shape not in seen:
                    seen.add(shape)
                    print(f"    {k:3s} {shape:40s} {t * 1e3:7.1f} us", flush=True)
        rows.append(row)
        del engines
        torch.cuda.empty_cache()
    print("\n| model | batch | WS GEMMs | pointer loop ms | WS ms | speedup | GEMM sum ms ptr / ws | max rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ws_kernels']} | {r['ms']['ptr']:.3f} | {r['ms']['ws']:.3f} | "
              f"{r['speedup']:.3f} | {r['gemm_sum_ms']['ptr']:.3f} / {r['gemm_sum_ms']['ws']:.3f} | "
              f"{max(r['rel_err'].values()):.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
