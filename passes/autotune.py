"""Autotuning of GEMM/conv tiles, with a persistent tuning cache (TensorRT's timing cache).

Requires: the final graph (views materialized), so every GEMM/conv kernel can be generated. Guarantees: the
graph is unchanged except ``graph.meta["tiles"]`` (GEMMs on the ping-pong template keep theirs), which maps
GEMM/conv kernel nodes to the tile (block sizes, warps, stages) their kernel uses: the tuning cache's entry
where it has one (opt_level >= 2 with ``tuning_cache=``), else, at opt_level 3 on a GPU, the fastest of the
candidate tiles timed on that GPU (the cache gains the result). Every other kernel keeps the deterministic
heuristic tile, so builds without a GPU and without a cache are reproducible. A candidate must beat the
heuristic's tile by ``MARGIN`` to replace it. The tiles live in the IR, so an engine file carries them.
"""

from __future__ import annotations

import logging
import math

import triton
from trtjit.codegen import generate, template_of
from trtjit.codegen.common import KernelSpec
from trtjit.codegen.gemm import TILE_KEYS, tile_candidates
from trtjit.codegen.gluon_gemm import is_pingpong

from trtjit.crosscompile import arg_dtypes
from trtjit.errors import TrtjitError
from trtjit.fusion import rule
from trtjit.ir import Graph
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.passmanager import PassContext
from trtjit.tuning import DEFAULT_PATH, TuningCache, gpu_timer, kernel_key

log = logging.getLogger("trtjit.autotune")

# A candidate replaces the heuristic's tile only when it is this much faster in isolation: the timings run
# each kernel alone, its inputs hot in L2, and small wins there did not carry over to the engine (vit_b_16
# at batch 32 on the H200: with every GEMM at its fastest timed tile the engine took 3.73 ms, with the
# heuristic's tiles 3.40 ms).
MARGIN = 0.05

CACHED = rule("tuning cache => tile", "autotune", "reuse the tile a previous build measured fastest")
TUNED = rule("time candidate tiles => fastest tile", "autotune", "measure each candidate tile on the GPU")


def _device_arch() -> tuple[object, str] | None:
    import torch

    from trtjit.cuda_launcher import current_arch

    arch = current_arch()
    return None if arch is None else (torch.device("cuda", torch.cuda.current_device()), arch)


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
    pingpong = {n for n, t in tiles.items() if is_pingpong(t)}  # passes/gemm_tactic chose the Gluon template
    todo: dict[str, tuple[str, list[str], dict, list[dict]]] = {}  # key -> (first node, nodes, problem, tiles)
    for name in graph.topo_order():
        if not is_kernel_node(graph, name) or graph.node(name).op == "plugin" \
                or template_of(graph, name) != "gemm" or name in pingpong:
            continue
        base = generate(graph, name, layouts, tf32=opts.tf32)
        opt = graph.meta.get("batch_range", {}).get("opt")  # a dynamic-batch kernel is tuned for its opt batch
        key = kernel_key(base.source, base.name, arch + (f"@batch{opt}" if base.batch_arg else ""),
                         triton.__version__, tuple(arg_dtypes(graph, base)))
        hit = cache.get(key)
        if hit is not None:
            tiles[name] = {**hit, "source": "cache"}
            ctx.fired(CACHED, name, f"{hit}")
            continue
        if timer is None:
            ctx.skipped(CACHED, name, "not in the tuning cache, and no GPU to time candidates on (opt_level 3)")
            continue
        if key in todo:  # an identical kernel (a repeated layer) is tuned once
            todo[key][1].append(name)
            continue
        todo[key] = (name, [name], base.problem, tile_candidates(base.problem, graph.spec(base.args[0]).dtype))
    # every candidate kernel of every layer, generated first so a GPU timer can compile them all in parallel
    specs: dict[tuple[str, int], KernelSpec] = {}
    for key, (name, _, _, cands) in todo.items():
        for i, cand in enumerate(cands):
            graph.meta["tiles"] = {name: cand}
            specs[(key, i)] = generate(graph, name, layouts, tf32=opts.tf32)
    graph.meta.pop("tiles", None)
    if specs and hasattr(timer, "prepare"):
        log.info("compiling %d candidate kernels of %d distinct GEMM/conv kernels", len(specs), len(todo))
        timer.prepare(list(specs.values()))
    for n_done, (key, (name, names, problem, cands)) in enumerate(todo.items()):
        log.info("tuning %d/%d %s (%s): %d candidate tiles", n_done + 1, len(todo), name, problem, len(cands))
        timed = []
        for i, cand in enumerate(cands):
            try:
                ms = timer(specs[(key, i)])
            except (TrtjitError, RuntimeError, ValueError) as e:  # e.g. too much shared memory for this tile
                ctx.skipped(TUNED, name, f"tile {cand} failed: {type(e).__name__}: {str(e)[:120]}")
                ms = math.inf
            timed.append((ms, cand))
        best_ms, best = min(timed, key=lambda t: t[0])
        if math.isinf(best_ms):
            continue
        if best_ms > (1.0 - MARGIN) * timed[0][0]:  # the heuristic's tile (candidate 0) unless clearly beaten
            best_ms, best = timed[0]
        cache.put(key, best, {"kernel": specs[(key, 0)].name, "arch": arch, "triton": triton.__version__,
                              "problem": problem, "ms": best_ms,
                              "timings": [[ms, [c[k] for k in TILE_KEYS]] for ms, c in timed]})
        for n in names:
            tiles[n] = {**best, "source": "tuned"}
            ctx.fired(TUNED, n, f"{best} {best_ms:.4f} ms; heuristic {timed[0][0]:.4f} ms, {len(timed)} candidates")
    if tiles:
        graph.meta["tiles"] = tiles
    cache.save()
    return graph
