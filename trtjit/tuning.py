"""The tuning cache (TensorRT's timing cache) and the GPU timer the autotune pass measures tiles with.

A cache is one JSON file: ``{"format": "trtjit-tuning-cache", "version": 1, "entries": {key: entry}}``. A key
is the SHA-256 of a GEMM/conv kernel's generated source (its name, docstring and comments left out, so
identical layers share one entry: the source spells out the op, every shape and stride, the dtypes and the fused epilogue),
the GPU arch and the Triton version; the entry holds the chosen tile (block sizes, warps, stages), its time
and the alternatives' times. It is plain data: nothing in it is executed. Builds read it at opt_level 2 when
``tuning_cache=`` names it, and at opt_level 3 on a GPU they time what it lacks and add it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trtjit.errors import InputError, TrtjitError

log = logging.getLogger("trtjit.autotune")

FORMAT = "trtjit-tuning-cache"
VERSION = 1
DEFAULT_PATH = Path("~/.cache/trtjit/tuning_cache.json")


def kernel_key(source: str, name: str, arch: str, triton_version: str, arg_dtypes: tuple[str, ...]) -> str:
    """Cache key of a kernel: its source up to name, docstring and comments, the dtypes of the buffers it is
    launched on (one source serves an int32 and an int64 index gather, compiled and timed apart), the arch
    and the Triton version."""
    from trtjit.codegen.common import kernel_identity

    body = kernel_identity(source, name)
    return hashlib.sha256("\0".join((body, ",".join(arg_dtypes), arch, triton_version)).encode()).hexdigest()


class TuningCache:
    """A persistent map from kernel key to the tile measured fastest for it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"tuning cache {self.path}: cannot read it ({type(e).__name__}: {e})") from None
            if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
                raise InputError(f"tuning cache {self.path}: not a trtjit tuning cache (format tag {FORMAT!r} missing)")
            if data.get("version") != VERSION:
                raise InputError(f"tuning cache {self.path}: version {data.get('version')!r}, this trtjit reads "
                                 f"version {VERSION}; delete it or pass another tuning_cache=")
            self.entries = data["entries"]

    def get(self, key: str) -> dict[str, int] | None:
        e = self.entries.get(key)
        return dict(e["tile"]) if isinstance(e, dict) and isinstance(e.get("tile"), dict) else None

    def put(self, key: str, tile: dict[str, int], info: dict[str, Any]) -> None:
        self.entries[key] = {"tile": dict(tile), **info}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "entries": self.entries}, indent=1,
                                  sort_keys=True))
        os.replace(tmp, self.path)
        self.dirty = False


def _binary_key(k: Any) -> tuple:
    """What one compiled binary of a candidate is specific to. Candidate tiles often share a source (block
    sizes are constexprs), so a binary looked up by source alone would run another tile's code on this
    tile's grid (and time a fraction of the work)."""
    return k.source, json.dumps(k.constexprs, sort_keys=True), k.num_warps, k.num_stages


GRAPH_REPS = 20  # launches per timed CUDA-graph replay


def gpu_timer(graph: Any, device: Any, iters: int = 25) -> Callable[[Any], float]:
    """``time(kernel_spec) -> ms``: median CUDA-event time per launch, from CUDA-graph replays of
    ``GRAPH_REPS`` launches (``iters`` single launches where capture fails), on random buffers
    shaped like the kernel's arguments (allocated once per build and shared by all candidates). A
    dynamic-batch graph (trtjit.dynamic) is timed at its opt batch: the engine is tuned for opt."""
    import torch

    from trtjit.backend import load_kernel
    from trtjit.dynamic import at, grid_at

    bufs: dict[Any, torch.Tensor] = {}
    fns: dict[str, Any] = {}
    opt = graph.meta["batch_range"]["opt"] if graph.meta.get("batch_range") else None

    def buffer(v: Any) -> torch.Tensor:
        if v not in bufs:
            spec = at(graph.spec(v), opt) if opt is not None else graph.spec(v)
            if spec.dtype.is_floating_point:
                bufs[v] = torch.randn(spec.shape, device=device).to(spec.dtype)
            else:
                bufs[v] = torch.zeros(spec.shape, dtype=spec.dtype, device=device)
        return bufs[v]

    def prepare(kernels: list[Any]) -> None:
        """Compile every candidate at once in the cross-compile worker processes (cubins for this GPU's arch):
        the build waits for the slowest worker, not for the sum of hundreds of sequential JIT compilations.
        A candidate that fails to compile here is left to the JIT, which reports it when it is timed."""
        from trtjit.crosscompile import compile_kernels
        from trtjit.cuda_launcher import CubinKernel, current_arch

        todo = [k for k in kernels if _binary_key(k) not in fns]
        arch = current_arch(device)
        if not todo or arch is None:
            return
        try:
            bins = compile_kernels(graph, todo, [arch])[arch]
        except TrtjitError as e:
            log.info("parallel candidate compilation failed (%s); timing falls back to the JIT", e)
            return
        for k, b in zip(todo, bins):
            try:
                fns[_binary_key(k)] = CubinKernel(b, device)
            except TrtjitError as e:  # e.g. more shared memory than this GPU allows: the JIT says so when timed
                log.info("candidate %s not loadable as a cubin: %s", k.name, e)

    def time_ms(k: Any) -> float:
        key = _binary_key(k)
        if key not in fns:
            fns[key] = load_kernel(k.name, k.source)
        fn = fns[key]
        args = [buffer(a) for a in k.args] + ([opt] if getattr(k, "batch_arg", False) else [])

        def launch() -> None:
            fn[grid_at(k.grid, opt)](*args, **k.constexprs, num_warps=k.num_warps, num_stages=k.num_stages)

        launch()  # compiles this tile
        torch.cuda.synchronize(device)
        # Time GRAPH_REPS back-to-back launches replayed from a CUDA graph: one launch between two events
        # would also time the CPU's launch (several us, as long as a small GEMM) and rank candidates by noise.
        run, reps = launch, 1
        try:
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                for _ in range(GRAPH_REPS):
                    launch()
            run, reps = cuda_graph.replay, GRAPH_REPS
            run()
        except RuntimeError as e:  # capture refused (e.g. a launcher that syncs): time single launches
            log.info("CUDA-graph timing of %s unavailable (%s); timing single launches", k.name, e)
        torch.cuda.synchronize(device)
        times = []
        for _ in range(iters if reps == 1 else max(3, iters // 4)):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / reps)
        return statistics.median(times)

    time_ms.prepare = prepare  # type: ignore[attr-defined]
    return time_ms
