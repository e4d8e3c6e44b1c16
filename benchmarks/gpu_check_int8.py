"""GPU check of the int8 kernels (IMMA tl.dot with int32 accumulators, fused dequantize/requantize epilogues)
and, on sm_89+ (Hopper), of the fp8 (e4m3) GEMMs.

On a GPU: builds int8 engines of the example MLP, transformer layer and CNN (calibrated on random data), runs
the generated kernels and compares them with the reference interpreter on the same int8 IR (must agree to
fp32 rounding) and with the fp32 module (int8 tolerance), then times resnet50-sized conv layers int8 vs fp16.

    python benchmarks/gpu_check_int8.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import trtjit  # noqa: E402
from trtjit.examples import example  # noqa: E402
from trtjit.interpreter import run_graph  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max())


def main() -> None:
    assert torch.cuda.is_available(), "run this on a GPU"
    dev = torch.device("cuda")
    ok = True
    for name in ("mlp", "transformer_layer", "example_net"):
        model, (x,) = example(name, batch=8)
        g = torch.Generator().manual_seed(0)
        data = [torch.randn(*x.shape, generator=g) for _ in range(8)]
        engine = trtjit.compile(model.to(dev), (x.to(dev),), precision="int8", calibrator=trtjit.EntropyCalibrator(data))
        out = engine(x.to(dev))
        ir = run_graph(engine.graph, [x])[0]
        with torch.no_grad():
            ref = model(x.to(dev))
        e_ir, e_fp = rel(out, ir), rel(out, ref)
        good = e_ir < 1e-3 and e_fp < 0.05
        ok &= good
        print(f"{name:18s} kernels vs int8 IR {e_ir:.2e}  vs fp32 {e_fp:.3f}  {'OK' if good else 'FAIL'}")
    if torch.cuda.get_device_capability() >= (8, 9):
        model, (x,) = example("transformer_layer", batch=8)
        g = torch.Generator().manual_seed(0)
        data = [torch.randn(*x.shape, generator=g) for _ in range(8)]
        engine = trtjit.compile(model.to(dev), (x.to(dev),), precision="fp8", calibrator=trtjit.MinMaxCalibrator(data))
        out = engine(x.to(dev))
        with torch.no_grad():
            ref = model(x.to(dev))
        e_ir, e_fp = rel(out, run_graph(engine.graph, [x])[0]), rel(out, ref)
        good = e_ir < 1e-3 and e_fp < 0.1
        ok &= good
        print(f"{'fp8 transformer':18s} kernels vs fp8 IR {e_ir:.2e}  vs fp32 {e_fp:.3f}  {'OK' if good else 'FAIL'}")
        lin = torch.nn.Linear(4096, 4096).eval().to(dev)
        xl = torch.randn(256, 4096, device=dev)
        for prec in ("fp8", "int8", "fp16"):
            kw = {"calibrator": trtjit.MinMaxCalibrator([xl.cpu()])} if prec in ("fp8", "int8") else {}
            e = trtjit.compile(lin, (xl,), precision=prec, **kw)
            prof = e.profile(xl, iters=50)
            print(f"linear 256x4096x4096 {prec}: {sum(p.ms for p in prof):.3f} ms over {len(prof)} kernels")
    conv = torch.nn.Sequential(torch.nn.Conv2d(256, 256, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(256, 256, 3, padding=1)).eval().to(dev)
    x = torch.randn(32, 256, 14, 14, device=dev)
    e8 = trtjit.compile(conv, (x,), precision="int8", calibrator=trtjit.MinMaxCalibrator([x.cpu()]))
    e16 = trtjit.compile(conv, (x,), precision="fp16")
    for tag, e in (("int8", e8), ("fp16", e16)):
        prof = e.profile(x, iters=50)
        print(f"conv 256x256x3x3 @ 32x14x14 {tag}: {sum(p.ms for p in prof):.3f} ms over {len(prof)} kernels")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
