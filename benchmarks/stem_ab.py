"""A/B of the gathered-convolution tile rule (codegen/gemm.py ``GATHER_SMALL_K``) inside whole engines.

    python benchmarks/stem_ab.py [--models resnet50,mobilenet_v2] [--batch 32] [--json out.json]

Builds each model at opt_level 2 (fp16), then the same engine with every convolution the rule changed put
back on ``gemm_config``'s tile, checks both against eager PyTorch, and times them interleaved (CUDA-graph
replay), with each changed kernel's time from ``Engine.profile``.
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
from trtjit.engine import Engine  # noqa: E402
from trtjit.layout import compute_layouts  # noqa: E402


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
        new = trtjit.compile(model, inputs, opt_level=2)
        old_tiles = {}
        for k in new.kernels:
            if k.template == "conv" and k.tile == "heuristic":
                p = k.problem
                before = gemm_config(p["M"], p["N"], p["K"], p["batch"], torch.float16)
                if before != heuristic_tile(p, torch.float16):
                    old_tiles[k.node] = dict(zip(TILE_KEYS, before))
        g = copy.deepcopy(new.graph)
        g.meta["tiles"] = old_tiles
        layouts = compute_layouts(g)
        old = Engine(g, [generate(g, k.node, layouts, kernel_name=k.name) if k.node in old_tiles else k
                         for k in new.kernels], new.options)
        engines = {"gemm_config tile": old, "small gather tile": new}
        errs = {n: rel_err(e(*inputs), ref) for n, e in engines.items()}
        with torch.no_grad():
            ms = interleaved(engines, inputs, rounds=7)
        prof = {n: {p.name: p.ms * 1e3 for p in e.profile(*inputs, iters=10)} for n, e in engines.items()}
        changed = {k.name: {"tile_before": old_tiles[k.node], "tile_after": dict(k.constexprs),
                            "us_before": round(prof["gemm_config tile"][k.name], 1),
                            "us_after": round(prof["small gather tile"][k.name], 1)}
                   for k in new.kernels if k.node in old_tiles}
        row = {"model": name, "batch": args.batch, "ms": ms, "rel_err": errs, "changed": changed,
               "speedup": ms["gemm_config tile"] / ms["small gather tile"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
