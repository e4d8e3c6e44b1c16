"""The warp-specialized TMA GEMM main loop (codegen/gemm.py ``_tma_mainloop``, tile key ``WS``).

On the CPU its kernels run under Triton's interpreter (tensor descriptors included, rows and K columns past
the matrix reading zeros, as TMA does); cross-compiled for sm_90 they must come out warp-specialized:
Triton 3.6 splits the loop into a producer and two consumer warpgroups (12 warps launched, ``setmaxnreg``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from trtjit.codegen import generate
from trtjit.codegen.gemm import heuristic_tile, tile_candidates

import trtjit
from tests.conftest import assert_close_rel
from trtjit.errors import BuildError
from trtjit.layout import compute_layouts
from trtjit.options import BuildOptions
from trtjit.passmanager import PassContext, load_pass, run_pass

VIT_FC1 = {"M": 6304, "N": 3072, "K": 768, "batch": 1, "tma": 1}


def _gemms(engine):
    return [k for k in engine.kernels if k.template == "gemm"]


def _is_ws(k) -> bool:
    return "warp_specialize=True" in k.source and "make_tensor_descriptor" in k.source


def test_heuristic_runs_large_16bit_tma_gemms_warp_specialized():
    tile = heuristic_tile(VIT_FC1, torch.float16)
    assert tile[5] == 1 and tile[3] == 4 and tile[0] * tile[1] >= 128 * 128
    assert heuristic_tile(VIT_FC1, torch.bfloat16)[5] == 1
    # no TMA operands, fp32, a short reduction, a batch-1 GEMM (too few tiles): the pointer loop
    for problem, dtype in (({**VIT_FC1, "tma": 0}, torch.float16), (VIT_FC1, torch.float32),
                           ({**VIT_FC1, "K": 64}, torch.float16), ({**VIT_FC1, "M": 197}, torch.float16)):
        assert heuristic_tile(problem, dtype)[5] == 0, (problem, dtype)
    assert any(c["WS"] for c in tile_candidates(VIT_FC1, torch.float16))
    assert not any(c["WS"] for c in tile_candidates({**VIT_FC1, "tma": 0}, torch.float16))


def test_default_build_runs_a_large_linear_warp_specialized(gen):
    model = torch.nn.Sequential(torch.nn.Linear(256, 1536), torch.nn.GELU()).eval().half()
    x = torch.randn(2, 704, 256, generator=gen).half()
    engine = trtjit.compile(model, (x,))
    (k,) = _gemms(engine)
    assert _is_ws(k) and k.num_warps == 4 and k.problem["tma"] == 1
    with torch.no_grad():
        assert_close_rel(engine(x).float(), copy.deepcopy(model).float()(x.float()), 1e-2)


class _TransposedRagged(torch.nn.Module):
    """``a @ b^T`` with b a run-time [N, K] input (K contiguous: the transposed-descriptor path) and a K
    that is no multiple of BLOCK_K (the TMA zero-fill is the tail), plus a residual."""

    def forward(self, a, b, r):
        return a @ b.t() + r


def _tuned_to_ws(model, inputs, path) -> None:
    """Tune with a fake timer on which warp-specialized candidates are fastest, so the cache holds WS tiles."""
    graph = copy.deepcopy(trtjit.compile(model, inputs).graph)

    def timer(k):
        return 1.0 if "warp_specialize" in k.source else 2.0

    ctx = PassContext(BuildOptions(opt_level=3, tuning_cache=str(path)), timer=timer, tuning_arch="sm_90")
    tiles = run_pass(load_pass("autotune"), graph, ctx).meta["tiles"]
    assert tiles and all(t["WS"] == 1 for t in tiles.values())


def test_transposed_weight_and_ragged_k_through_the_tuning_cache(tmp_path, gen):
    model = _TransposedRagged().eval()
    a = torch.randn(96, 200, generator=gen).half()
    b = torch.randn(80, 200, generator=gen).half()
    r = torch.randn(96, 80, generator=gen).half()
    _tuned_to_ws(model, (a, b, r), tmp_path / "t.json")
    engine = trtjit.compile(model, (a, b, r), tuning_cache=str(tmp_path / "t.json"), targets=["sm_90"])
    (k,) = _gemms(engine)
    assert _is_ws(k) and k.tile == "cache" and ".T" in k.source
    (b90,) = [bn for kk, bn in zip(engine.kernels, engine.binaries["sm_90"]) if kk.template == "gemm"]
    # the sm_90 binary is warp-specialized: producer + two consumer warpgroups, registers rebalanced, and a
    # global scratch for the device-built descriptors (the cubin launcher allocates it)
    assert b90.num_warps == 12 and b90.ptx.count("setmaxnreg") >= 2 and b90.global_scratch_size > 0
    with torch.no_grad():
        for _ in range(2):  # fresh inputs each time
            a, b, r = (torch.randn(t.shape, generator=gen).half() for t in (a, b, r))
            assert_close_rel(engine(a, b, r).float(), a.float() @ b.float().t() + r.float(), 1e-2)


@pytest.mark.parametrize("case", ["fp32", "misaligned_k", "batched_b"])
def test_operands_tma_cannot_read_keep_the_pointer_loop(case, gen):
    if case == "fp32":
        model, inputs = _TransposedRagged(), (torch.randn(96, 64, generator=gen), torch.randn(80, 64, generator=gen),
                                              torch.randn(96, 80, generator=gen))
    elif case == "misaligned_k":  # 100 fp16 = 200 bytes per row: not a multiple of TMA's 16
        model, inputs = _TransposedRagged(), tuple(torch.randn(s, generator=gen).half()
                                                   for s in ((96, 100), (80, 100), (96, 80)))
    else:  # a per-batch right operand (bmm): no single [K, N] descriptor
        model = _Bmm()
        inputs = (torch.randn(2, 48, 64, generator=gen).half(), torch.randn(2, 64, 32, generator=gen).half())
    engine = trtjit.compile(model, inputs)
    (k,) = _gemms(engine)
    assert "tma" not in k.problem and not _is_ws(k)
    graph = engine.graph
    graph.meta["tiles"] = {k.node: {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3,
                                    "WS": 1}}
    with pytest.raises(BuildError, match="warp-specialized TMA loop.*do not allow TMA"):
        generate(graph, k.node, compute_layouts(graph))


class _Bmm(torch.nn.Module):
    def forward(self, a, b):
        return torch.bmm(a, b)


def test_tile_without_ws_key_is_a_pointer_loop_tile(gen):
    """Tuning caches written before the WS key existed hold 5-key tiles: they still build, on the pointer loop."""
    model = torch.nn.Sequential(torch.nn.Linear(256, 1536)).eval().half()
    x = torch.randn(2, 704, 256, generator=gen).half()
    engine = trtjit.compile(model, (x,))
    (k,) = _gemms(engine)
    graph = engine.graph
    graph.meta["tiles"] = {k.node: {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}}
    spec = generate(graph, k.node, compute_layouts(graph))
    assert not _is_ws(spec) and "a_ptrs" in spec.source
