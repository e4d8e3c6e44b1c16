"""A/B of passes inside whole engines: the default pipeline against it without the named passes.

    python benchmarks/pass_ab.py --without sink_permutes [--without a,b] [--models vit_b_16,gpt2] [--batch 32]
                                 [--opt-level 2] [--json out.json]

Per model (fp16, random weights, as in bench.py): both engines are checked against eager PyTorch, timed
interleaved (CUDA-graph replay, median of rounds), and profiled per kernel on the CUPTI clock
(kernel_profile.device_times), summed by template, so the change shows where it moved time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit  # noqa: E402
from benchmarks.bench import interleaved, rel_err  # noqa: E402
from benchmarks.kernel_profile import device_times  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from trtjit import pipeline  # noqa: E402


def build(model, inputs, level: int, without: list[str]):
    saved = list(pipeline.PIPELINES[level])
    pipeline.PIPELINES[level] = [p for p in saved if p not in without]
    try:
        return trtjit.compile(model, inputs, opt_level=level)
    finally:
        pipeline.PIPELINES[level] = saved


def profiles(engines: dict, inputs, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per-kernel CUPTI device times (us per forward), the engines profiled in turn ``rounds`` times and the
    minimum kept: whichever runs first on a cold card must not look slower."""
    best: dict[str, dict[str, float]] = {n: {} for n in engines}
    for _ in range(rounds):
        for n, e in engines.items():
            for k, ms in device_times(e, inputs).items():
                best[n][k] = min(best[n].get(k, float("inf")), ms * 1e3)
    return best


def by_template(engine, times: dict[str, float]) -> dict[str, float]:
    """us per forward per template, and the kernel count."""
    out: dict[str, float] = defaultdict(float)
    for k in engine.kernels:
        out[k.template] += times.get(k.name, 0.0)
    out["kernels"] = len(engine.kernels)
    return {k: round(v, 1) for k, v in out.items()}


def kernel_rows(engine, times: dict[str, float]) -> list[list]:
    """[us, template, fused ops] per kernel in launch order (the kernels a change moved are visible)."""
    return [[round(times.get(k.name, 0.0), 2), k.template, " ".join(engine._op_of(k, c) for c in k.covers)]
            for k in engine.kernels]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", required=True, action="append",
                    help="comma-separated pass names left out of an engine B; repeat for more engines")
    ap.add_argument("--models", default="vit_b_16,gpt2,bert_base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--opt-level", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    variants = [w.split(",") for w in args.without]
    unknown = [p for w in variants for p in w if p not in pipeline.PIPELINES[args.opt_level]]
    if unknown:
        sys.exit(f"pass(es) {unknown} are not in the level-{args.opt_level} pipeline")
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; A = default, B = without each of {variants}",
          flush=True)
    rows = []
    for name in args.models.split(","):
        model, inputs = fp16_cuda(name, args.batch)
        with torch.no_grad():
            ref = model(*inputs)
        engines = {"A default": trtjit.compile(model, inputs, opt_level=args.opt_level)}
        for w in variants:
            engines[f"B without {','.join(w)}"] = build(model, inputs, args.opt_level, w)
        errs = {n: rel_err(e(*inputs), ref) for n, e in engines.items()}
        with torch.no_grad():
            ms = interleaved(engines, inputs, rounds=7)
        times = profiles(engines, inputs)
        a = ms["A default"]
        row = {"model": name, "batch": args.batch, "ms": ms,
               "speedup_A_over": {n: round(t / a, 4) for n, t in ms.items() if n != "A default"}, "rel_err": errs,
               "templates_us": {n: by_template(e, times[n]) for n, e in engines.items()}}
        print(json.dumps(row), flush=True)
        row["kernels_us"] = {n: kernel_rows(e, times[n]) for n, e in engines.items()}
        for n in engines:
            print(f"  {n}: first layer's kernels (us): "
                  + "; ".join(f"{t} {tpl} [{ops[:40]}]" for t, tpl, ops in row["kernels_us"][n][:12]), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
