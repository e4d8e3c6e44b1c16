"""Autotuning of GEMM/conv tiles, with a persistent tuning cache (TensorRT's timing cache).

Requires: the final graph (views materialized), so every GEMM/conv kernel can be generated. Guarantees: the
graph is unchanged except ``graph.meta["tiles"]``, which maps GEMM/conv kernel nodes to the tile (block sizes,
warps, stages) their kernel uses: the tuning cache's entry where it has one (opt_level >= 2 with
``tuning_cache=``), else, at opt_level 3 on a GPU, the fastest of the candidate tiles timed on that GPU (the
cache gains the result). Every other kernel keeps the deterministic heuristic tile, so builds without a GPU
and without a cache are reproducible. The tiles live in the IR, so an engine file carries them.
"""

from __future__ import annotations

import logging
import math

import triton
from trtjit.codegen import generate, template_of
from trtjit.codegen.gemm import TILE_KEYS, tile_candidates

from trtjit.backend import interpreting
from trtjit.errors import TrtjitError
from trtjit.fusion import rule
from trtjit.ir import Graph
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext
from trtjit.tuning import DEFAULT_PATH, TuningCache, gpu_timer, kernel_key

log = logging.getLogger("trtjit.autotune")

CACHED = rule("tuning cache => tile", "autotune", "reuse the tile a previous build measured fastest")
TUNED = rule("time candidate tiles => fastest tile", "autotune", "measure each candidate tile on the GPU")


def _device_arch() -> tuple[object, str] | None:
    import torch

    if interpreting() or not torch.cuda.is_available():
        return None
    dev = torch.device("cuda", torch.cuda.current_device())
    major, minor = torch.cuda.get_device_capability(dev)
    return dev, f"sm_{major}{minor}"


def run(graph: Graph, ctx: PassContext) -> Graph:
    opts = ctx.options
    gpu = _device_arch() if opts.opt_level >= 3 else None
    timer = ctx.timer
    if timer is None and gpu is not None:
        timer = gpu_timer(graph, gpu[0])
    path = opts.tuning_cache or (DEFAULT_PATH if timer is not None else None)
    arch = ctx.tuning_arch or (gpu[1] if gpu else (opts.targets[0] if opts.targets else None))
    if path is None or arch is None:
        return graph
    cache = TuningCache(path)
    layouts = compute_layouts(graph)
    tiles = dict(graph.meta.get("tiles", {}))
    graph.meta.pop("tiles", None)  # generate the heuristic kernel first: it is the cache key and candidate one
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or graph.node(name).op == "plugin" \
                or template_of(graph, name) != "gemm":
            continue
        base = generate(graph, name, layouts, tf32=opts.tf32)
        opt = graph.meta.get("batch_range", {}).get("opt")  # a dynamic-batch kernel is tuned for its opt batch
        key = kernel_key(base.source, base.name, arch + (f"@batch{opt}" if base.batch_arg else ""),
                         triton.__version__)
        hit = cache.get(key)
        if hit is not None:
            tiles[name] = {**hit, "source": "cache"}
            ctx.fired(CACHED, name, f"{hit}")
            continue
        if timer is None:
            ctx.skipped(CACHED, name, "not in the tuning cache, and no GPU to time candidates on (opt_level 3)")
            continue
        dtype = graph.spec(base.args[0]).dtype
        timed = []
        cands = tile_candidates(base.problem, dtype)
        log.info("tuning %s (%s): %d candidate tiles", name, base.problem, len(cands))
        for cand in cands:
            graph.meta["tiles"] = {name: cand}
            k = generate(graph, name, layouts, tf32=opts.tf32)
            try:
                ms = timer(k)
            except (TrtjitError, RuntimeError, ValueError) as e:  # e.g. too much shared memory for this tile
                ctx.skipped(TUNED, name, f"tile {cand} failed: {type(e).__name__}: {str(e)[:120]}")
                ms = math.inf
            timed.append((ms, cand))
        graph.meta.pop("tiles", None)
        best_ms, best = min(timed, key=lambda t: t[0])
        if math.isinf(best_ms):
            continue
        cache.put(key, best, {"kernel": base.name, "arch": arch, "triton": triton.__version__,
                              "problem": base.problem, "ms": best_ms,
                              "timings": [[ms, [c[k] for k in TILE_KEYS]] for ms, c in timed]})
        tiles[name] = {**best, "source": "tuned"}
        ctx.fired(TUNED, name, f"{best} {best_ms:.4f} ms; heuristic {timed[0][0]:.4f} ms, {len(timed)} candidates")
    if tiles:
        graph.meta["tiles"] = tiles
    cache.save()
    return graph
