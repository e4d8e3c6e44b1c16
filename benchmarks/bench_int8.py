"""int8 and fp8 rows: trtjit's calibrated int8 (and, on sm_89+, fp8) engines against torch.compile fp16.

For each model: torch.compile of the fp16 model (the issue's baseline: resnet50 at batch 32 took 2.27 ms on
the H100 on 2026-11-25), then trtjit int8 and fp8 engines of the fp32 model calibrated (MinMax) on two
random batches, their times, and their max relative error against the fp32 model. int8/fp8 layers are
the GEMMs/convolutions; the other ops run in fp32.

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


def bench_one(name: str, batch: int, precisions: list[str]) -> dict:
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
    for prec in precisions:
        if prec == "fp8" and cap < (8, 9):
            row["fp8"] = "skipped: needs sm_89+"
            continue
        engine = trtjit.compile(model, x, precision=prec, calibrator=trtjit.MinMaxCalibrator(calib),
                                targets=[f"sm_{cap[0]}{cap[1]}"])
        out = engine(*x)
        layers = engine.precision_report()
        row[f"{prec}_layers"] = f"{sum(r['precision'] == prec for r in layers)}/{len(layers)}"
        row[f"{prec}_ms"] = time_ms(engine, x)
        row[f"{prec}_max_rel_err"] = rel_err(out, ref)
        row[f"{prec}_speedup_vs_compile_fp16"] = row["compile_fp16_ms"] / row[f"{prec}_ms"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50")
    p.add_argument("--batches", default="32")
    p.add_argument("--precisions", default="int8,fp8")
    args = p.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, trtjit {trtjit.__version__}")
    for name in args.models.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            print(json.dumps(bench_one(name, b, args.precisions.split(","))), flush=True)


if __name__ == "__main__":
    main()
