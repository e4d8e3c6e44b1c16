"""Autotuning of GEMM/conv tiles and the tuning cache (passes/autotune.py, trtjit/tuning.py).

On this machine there is no GPU, so the tuner's timer is replaced by a deterministic cost model; the
real timer (CUDA events) runs in benchmarks on the GPU. What is checked here: candidates, the choice of the
fastest, the cache (written, reused without timing, keyed by arch), and that tuned tiles reach the
kernels, the engine file and still compute the right answer.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from trtjit.codegen.gemm import gemm_config, tile_candidates

import trtjit
from tests.conftest import assert_close_rel
from trtjit.errors import InputError
from trtjit.options import BuildOptions
from trtjit.passmanager import PassContext, load_pass, run_pass


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 16)).eval()


def _ref(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return copy.deepcopy(model).double()(x.double())


def _cost(c: dict) -> float:
    """A fake GPU on which larger tiles are faster (the heuristic picks small ones for small problems, to
    fill a real GPU's multiprocessors), so the tuner's pick differs from the heuristic's."""
    return 1e3 / (c["BLOCK_M"] * c["BLOCK_N"]) + c["BLOCK_K"] / 1e5 + c["num_stages"] / 1e6 + c["num_warps"] / 1e7


def _fastest(problem: dict) -> tuple[int, int]:
    best = min(tile_candidates(problem, torch.float32), key=_cost)
    return best["BLOCK_M"], best["BLOCK_N"]


def _tune(graph, path, arch="sm_90", calls=None):
    def timer(k):
        if calls is not None:
            calls.append(k.name)
        return _cost({**k.constexprs, "num_warps": k.num_warps, "num_stages": k.num_stages})

    ctx = PassContext(BuildOptions(opt_level=3, tuning_cache=str(path)), timer=timer, tuning_arch=arch)
    return run_pass(load_pass("autotune"), graph, ctx), ctx


def test_candidates_start_with_the_heuristic_and_fit_the_problem():
    problem = {"M": 48, "N": 40, "K": 24, "batch": 1}
    cands = tile_candidates(problem, torch.float32)
    assert tuple(cands[0][k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")) == \
        gemm_config(48, 40, 24, 1, torch.float32)
    keys = [tuple(c.values()) for c in cands]
    assert len(keys) == len(set(keys)) > 3
    assert all(c["BLOCK_M"] <= 64 and c["BLOCK_N"] <= 64 and c["BLOCK_K"] <= 32 for c in cands)


def test_tuned_tiles_are_cached_reused_and_carried_by_the_engine(tmp_path, gen):
    model = _mlp()
    x = torch.randn(48, 24, generator=gen)
    graph = copy.deepcopy(trtjit.compile(model, (x,)).graph)
    cache = tmp_path / "tuning.json"
    calls: list[str] = []
    tuned, ctx = _tune(graph, cache, calls=calls)
    tiles = tuned.meta["tiles"]
    assert len(tiles) == 2 and calls  # both GEMMs timed
    heuristic = trtjit.compile(model, (x,)).kernels
    want = {k.node: _fastest(k.problem) for k in heuristic if k.template == "gemm"}
    assert any(w != (k.constexprs["BLOCK_M"], k.constexprs["BLOCK_N"]) for k, w in zip(heuristic, want.values()))
    for node, t in tiles.items():
        assert t["source"] == "tuned" and (t["BLOCK_M"], t["BLOCK_N"]) == want[node]  # the cheapest candidate
    fired = [e for r in ctx.log for e in r.events if e["fired"]]
    assert {e["rule"] for e in fired} == {"time candidate tiles => fastest tile"}
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2 and all(e["arch"] == "sm_90" and len(e["timings"]) > 3 for e in entries.values())

    # a second tuning run reuses the cache and times nothing
    calls.clear()
    again, _ = _tune(copy.deepcopy(trtjit.compile(model, (x,)).graph), cache, calls=calls)
    assert calls == [] and all(t["source"] == "cache" for t in again.meta["tiles"].values())

    # a build for sm_90 without a GPU picks the cached tiles up; the engine computes the same function
    engine = trtjit.compile(model, (x,), tuning_cache=str(cache), targets=["sm_90"])
    gemms = [k for k in engine.kernels if k.template == "gemm"]
    assert gemms and all(k.tile == "cache" and (k.constexprs["BLOCK_M"], k.constexprs["BLOCK_N"]) == want[k.node]
                         for k in gemms)
    with torch.no_grad():
        assert_close_rel(engine(x).double(), _ref(model, x), 1e-4)
    path = engine.save(str(tmp_path / "m.plan"))
    loaded = trtjit.load(path)
    assert [k.constexprs for k in loaded.kernels] == [k.constexprs for k in engine.kernels]
    assert [k.tile for k in loaded.kernels] == [k.tile for k in engine.kernels]

    # tiles tuned for another arch are not used; without a cache the heuristic decides
    other = trtjit.compile(model, (x,), tuning_cache=str(cache), targets=["sm_80"])
    plain = trtjit.compile(model, (x,))
    for e in (other, plain):
        for k in e.kernels:
            if k.template == "gemm":
                assert k.tile == "heuristic"
                p = k.problem
                assert (k.constexprs["BLOCK_M"], k.constexprs["BLOCK_N"]) == \
                    gemm_config(p["M"], p["N"], p["K"], p["batch"], torch.float32)[:2]


def test_conv_tiles_are_tuned_too(tmp_path, gen):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8, generator=gen)
    graph = copy.deepcopy(trtjit.compile(model, (x,)).graph)
    tuned, _ = _tune(graph, tmp_path / "t.json")
    (tile,) = tuned.meta["tiles"].values()
    assert tile["source"] == "tuned"
    engine = trtjit.compile(model, (x,), tuning_cache=str(tmp_path / "t.json"), targets=["sm_90"])
    (conv,) = [k for k in engine.kernels if k.template == "conv"]
    assert conv.tile == "cache" and conv.constexprs["BLOCK_N"] == tile["BLOCK_N"]
    with torch.no_grad():
        assert_close_rel(engine(x).double(), _ref(model, x), 1e-4)


def test_bad_tuning_cache_is_refused_with_its_path(tmp_path, gen):
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": "else"}')
    with pytest.raises(InputError, match="bad.json.*not a trtjit tuning cache"):
        trtjit.compile(_mlp(), (torch.randn(4, 24, generator=gen),), tuning_cache=str(bad), targets=["sm_90"])
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: cannot read it"):
        trtjit.compile(_mlp(), (torch.randn(4, 24, generator=gen),), tuning_cache=str(bad), targets=["sm_90"])


def test_opt_level_3_without_a_gpu_builds_like_level_2(gen):
    model = _mlp()
    x = torch.randn(8, 24, generator=gen)
    e3, e2 = trtjit.compile(model, (x,), opt_level=3), trtjit.compile(model, (x,))
    assert [k.source for k in e3.kernels] == [k.source for k in e2.kernels]
    assert [k.constexprs for k in e3.kernels] == [k.constexprs for k in e2.kernels]
    with torch.no_grad():
        assert_close_rel(e3(x).double(), _ref(model, x), 1e-4)


def test_repeated_layers_tuned_once_and_candidates_prepared_together(tmp_path, gen):
    """Identical kernels (repeated blocks) are timed once and share the tile; a timer that can compile in
    bulk (the GPU timer cross-compiles every candidate in parallel workers) gets all candidates first."""
    block = [torch.nn.Linear(32, 32), torch.nn.ReLU()]
    model = torch.nn.Sequential(*block, *copy.deepcopy(block), *copy.deepcopy(block)).eval()
    x = torch.randn(8, 32, generator=gen)
    engine = trtjit.compile(model, (x,), opt_level=2)
    gemms = [k for k in engine.kernels if k.template == "gemm"]
    assert len(gemms) == 3
    calls, prepared = [], []

    def timer(k):
        assert k.source in prepared, "timed a kernel the timer was not asked to prepare"
        calls.append(k.source)
        return _cost({**k.constexprs, "num_warps": k.num_warps, "num_stages": k.num_stages})

    timer.prepare = lambda specs: prepared.extend(s.source for s in specs)
    ctx = PassContext(BuildOptions(opt_level=3, tuning_cache=str(tmp_path / "t.json")), timer=timer,
                      tuning_arch="sm_90")
    g = run_pass(load_pass("autotune"), engine.graph.copy(), ctx)
    n_cands = len(tile_candidates(gemms[0].problem, torch.float32))
    assert len(calls) == len(prepared) == n_cands  # one layer's candidates, not three
    tiles = g.meta["tiles"]
    assert len(tiles) == 3 and len({json.dumps(t, sort_keys=True) for t in tiles.values()}) == 1


def test_heuristic_kept_unless_clearly_beaten(tmp_path, gen):
    """A candidate replaces the heuristic's tile only when it is MARGIN faster: small wins measured on a kernel
    alone did not carry over to the engine on the GPU."""
    from trtjit.passes.autotune import MARGIN

    model = _mlp()
    x = torch.randn(48, 24, generator=gen)
    for gain, source_kept in ((MARGIN / 2, True), (MARGIN * 2, False)):
        graph = copy.deepcopy(trtjit.compile(model, (x,)).graph)
        heuristic = {k.node: dict(k.constexprs) for k in trtjit.compile(model, (x,)).kernels if k.template == "gemm"}

        def timer(k, gain=gain, heuristic=heuristic):  # every other candidate is `gain` faster than the heuristic
            return 1.0 if k.constexprs == heuristic.get(k.node) else 1.0 - gain

        ctx = PassContext(BuildOptions(opt_level=3, tuning_cache=str(tmp_path / f"{gain}.json")), timer=timer,
                          tuning_arch="sm_90")
        tiles = run_pass(load_pass("autotune"), graph, ctx).meta["tiles"]
        for node, t in tiles.items():
            same = {k: t[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")} == heuristic[node]
            assert same == source_kept, (gain, node, t, heuristic[node])


def test_candidate_binaries_are_keyed_by_tile():
    """Candidates often share one source (block sizes are constexprs): the timer's compiled binaries are keyed
    by source, constexprs, warps and stages, so no candidate runs (and is timed as) another tile's binary."""
    from trtjit.codegen.common import KernelSpec

    from trtjit.tuning import _binary_key

    def spec(bm, warps):
        return KernelSpec("k", "gemm", "n", "src", (1,), {"BLOCK_M": bm, "BLOCK_N": 64, "BLOCK_K": 32}, [], [],
                          num_warps=warps, num_stages=3)

    keys = {_binary_key(spec(bm, w)) for bm in (64, 128) for w in (4, 8)}
    assert len(keys) == 4 and _binary_key(spec(64, 4)) == _binary_key(spec(64, 4))


def test_tuning_key_tells_buffer_dtypes_apart():
    """One source can serve buffers of different dtypes (an int32 and an int64 index gather): the cache
    key includes them, as the cubin-sharing key of the cross-compiler does, so neither reuses the other's tile."""
    from trtjit.tuning import kernel_key

    src = "@triton.jit\ndef k(in0, out0):\n    pass\n"
    keys = {kernel_key(src, "k", "sm_90", "3.6.0", dt) for dt in (("int32", "float16"), ("int64", "float16"))}
    assert len(keys) == 2
    assert kernel_key(src, "k", "sm_90", "3.6.0", ("int32",)) == kernel_key(src, "k", "sm_90", "3.6.0", ("int32",))
