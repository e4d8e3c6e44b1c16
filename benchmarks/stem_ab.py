"""A/B of the stem-convolution changes inside whole engines (fp16, opt_level 2).

    python benchmarks/stem_ab.py [--models resnet50,mobilenet_v2] [--batch 32] [--json out.json]

Three engines per model, checked against eager PyTorch and timed interleaved (CUDA-graph replay):
  "nchw gather, gemm_config tile"  the stem gathers the NCHW image, in gemm_config's tile (before 2026-12-04);
  "nchw gather, small tile"        the same loop in the small gather tile (codegen/gemm.py GATHER_SMALL_K);
  "nhwc copy + row loop"           the default pipeline: passes/stem_input_nhwc copies the image to NHWC and
                                   the stem reads one filter row per K step (codegen/gemm.py _row_mainloop).
The first two are built without the stem_input_nhwc pass; per-kernel times of the stem (and copy) come
from ``Engine.profile``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import interleaved, rel_err  # noqa: E402
from models import MODELS, randomize  # noqa: E402
from trtjit.codegen import generate  # noqa: E402
from trtjit.codegen.gemm import TILE_KEYS, gemm_config, heuristic_tile  # noqa: E402

import trtjit  # noqa: E402
from trtjit import pipeline  # noqa: E402
from trtjit.engine import Engine  # noqa: E402
from trtjit.layout import compute_layouts  # noqa: E402


def without_stem_pass(model, inputs) -> Engine:
    saved = list(pipeline.PIPELINES[2])
    pipeline.PIPELINES[2] = [p for p in saved if p != "stem_input_nhwc"]
    try:
        return trtjit.compile(model, inputs, opt_level=2)
    finally:
        pipeline.PIPELINES[2] = saved


def retiled_to_gemm_config(engine: Engine) -> Engine:
    old_tiles = {}
    for k in engine.kernels:
        if k.template == "conv" and k.tile == "heuristic":
            p = k.problem
            before = gemm_config(p["M"], p["N"], p["K"], p["batch"], torch.float16)
            if before != heuristic_tile(p, torch.float16):
                old_tiles[k.node] = dict(zip(TILE_KEYS, before))
    g = copy.deepcopy(engine.graph)
    g.meta["tiles"] = old_tiles
    layouts = compute_layouts(g)
    return Engine(g, [generate(g, k.node, layouts, kernel_name=k.name) if k.node in old_tiles else k
                      for k in engine.kernels], engine.options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}", flush=True)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, inputs = MODELS[name](args.batch)
        model = randomize(model).eval().cuda().half()
        inputs = tuple(t.cuda().half() for t in inputs)
        with torch.no_grad():
            ref = model(*inputs)
        nchw = without_stem_pass(model, inputs)
        engines = {"nchw gather, gemm_config tile": retiled_to_gemm_config(nchw), "nchw gather, small tile": nchw,
                   "nhwc copy + row loop": trtjit.compile(model, inputs, opt_level=2)}
        errs = {n: rel_err(e(*inputs), ref) for n, e in engines.items()}
        with torch.no_grad():
            ms = interleaved(engines, inputs, rounds=7)
        first = {}  # the first kernels (the image's copy, the stem) of each engine, in us
        for n, e in engines.items():
            prof = e.profile(*inputs, iters=10)
            first[n] = [(p.name, dict(e.kernels[i].constexprs), round(p.ms * 1e3, 1)) for i, p in enumerate(prof[:2])]
        row = {"model": name, "batch": args.batch, "ms": ms, "rel_err": errs, "first_kernels_us": first}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
