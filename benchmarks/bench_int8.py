"""int8 and fp8 rows: trtjit's calibrated int8 (and, on sm_89+, fp8) engines against torch.compile fp16.

For each model: torch.compile of the fp16 model (the issue's baseline: resnet50 at batch 32 took 2.27 ms on
the H100 on 2026-11-25), then trtjit int8 and fp8 engines of the fp32 model calibrated (MinMax) on two
random batches, their times, and their max relative error against the fp32 model. int8/fp8 layers are
the GEMMs/convolutions; the other ops run in fp32, or with "int8-fp16" in fp16 (``fallback_precision``).

    python benchmarks/bench_int8.py --models resnet50 --batches 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import trtjit  # noqa: E402
from benchmarks.bench import compiled, rel_err, time_ms  # noqa: E402
from benchmarks.models import MODELS, randomize  # noqa: E402


def bench_one(name: str, batch: int, precisions: list[str], opt_level: int = 2, profile: bool = False) -> dict:
    torch.manual_seed(0)
    model, inputs = MODELS[name](batch)
    model = randomize(model).eval()
    row: dict = {"model": name, "batch": batch}
    half = [t.cuda().half() if t.is_floating_point() else t.cuda() for t in inputs]
    with torch.no_grad():
        fn, _ = compiled(model.cuda().half(), half, None)
        row["compile_fp16_ms"] = time_ms(fn, half)
        torch._dynamo.reset()
    model = model.float().cuda()
    x = [t.cuda() for t in inputs]
    with torch.no_grad():
        ref = model(*x)
    cap = torch.cuda.get_device_capability()
    g = torch.Generator().manual_seed(1)
    calib = [[torch.randn(t.shape, generator=g) if t.is_floating_point() else t.cpu() for t in inputs] for _ in range(2)]
    for label in precisions:
        prec, _, fallback = label.partition("-")  # "int8-fp16": int8 layers, fp16 everywhere else
        if prec == "fp8" and cap < (8, 9):
            row[label] = "skipped: needs sm_89+"
            continue
        engine = trtjit.compile(model, x, precision=prec, fallback_precision=fallback or "fp32",
                                calibrator=trtjit.MinMaxCalibrator(calib), targets=[f"sm_{cap[0]}{cap[1]}"],
                                opt_level=opt_level)
        out = engine(*x)
        layers = engine.precision_report()
        row[f"{label}_layers"] = f"{sum(r['precision'] == prec for r in layers)}/{len(layers)}"
        row[f"{label}_ms"] = time_ms(engine, x)
        row[f"{label}_max_rel_err"] = rel_err(out, ref)
        row[f"{label}_speedup_vs_compile_fp16"] = row["compile_fp16_ms"] / row[f"{label}_ms"]
        if profile:
            prof = sorted(engine.profile(*x, iters=5), key=lambda p: -p.ms)[:6]
            row[f"{label}_top_kernels"] = [(p.name, round(p.ms, 4)) for p in prof]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50")
    p.add_argument("--batches", default="32")
    p.add_argument("--precisions", default="int8,int8-fp16,fp8-fp16",
                   help="int8, fp8, and with -fp16/-bf16: that fallback_precision for everything else")
    p.add_argument("--opt-level", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also record each engine's slowest kernels")
    args = p.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, trtjit {trtjit.__version__}")
    for name in args.models.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            print(json.dumps(bench_one(name, b, args.precisions.split(","), args.opt_level, args.profile)), flush=True)


if __name__ == "__main__":
    main()
