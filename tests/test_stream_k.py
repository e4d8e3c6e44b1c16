"""Stream-K GEMMs (codegen/gemm.py ``_stream_k``): persistent programs that share a GEMM's BLOCK_K steps evenly
and hand split tiles over through the engine's workspace (flags and fp32 partial sums).

A stream-K tile comes from the autotuner (on a GPU) or a tuning cache. Here a tuning cache asks for one, as a
cache written on a GPU would; the kernels run under the interpreter (programs run one after another there,
so the hand-over's wait returns at once, while the cross-compiled sm_90 binary shows the same source builds
for the GPU) and must match PyTorch with every tile split, the fused epilogue included.
"""

from __future__ import annotations

import json

import pytest
import torch
import triton
from torch import nn
from trtjit.codegen.gemm import stream_k_allowed, tile_candidates

import trtjit
from tests.conftest import assert_close_rel
from trtjit.tuning import FORMAT, VERSION, kernel_key


class Residual(nn.Module):
    """x @ W^T + b, then GELU, plus a residual: a bias row, an activation and a full-tile epilogue operand."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(self.fc(x)) + r


def _cache_asking_stream_k(path, engine, tile: dict) -> None:
    """A tuning cache whose entry for every GEMM kernel of ``engine`` is ``tile`` (as a GPU build writes it)."""
    entries = {kernel_key(k.source, k.name, "sm_90", triton.__version__): {"tile": tile, "arch": "sm_90"}
               for k in engine.kernels if k.template == "gemm"}
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "entries": entries}))


@pytest.mark.parametrize(("shape", "n", "k", "tile", "programs"), [
    ((3, 64, 64), 176, 64, (16, 16, 16), 5),    # batch folded into M = 192; 132 tiles of 4 steps over 5 programs
    ((100, 64), 48, 96, (16, 16, 32), 4),       # ragged M (clamped rows): 21 tiles of 3 steps over 4 programs
    ((40, 32), 40, 128, (16, 16, 32), 7),       # N % 16 != 0 (column mask): 9 tiles of 4 steps over 7 programs
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_stream_k_gemm_matches_torch(tmp_path, gen, shape, n, k, tile, programs, dtype):
    model = Residual(k, n).eval().to(dtype)
    x = torch.randn(*shape[:-1], k, generator=gen).to(dtype)
    r = torch.randn(*shape[:-1], n, generator=gen).to(dtype)
    plain = trtjit.compile(model, (x, r))
    bm, bn, bk = tile
    cache = tmp_path / "tuning.json"
    _cache_asking_stream_k(cache, plain, {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4,
                                          "num_stages": 2, "STREAM_K": programs})
    engine = trtjit.compile(model, (x, r), tuning_cache=str(cache), targets=["sm_90"])
    (g,) = [kk for kk in engine.kernels if kk.template == "gemm"]
    assert g.tile == "cache" and g.grid == (programs, 1, 1) and g.workspace == (programs, programs * bm * bn)
    assert "tl.atomic_cas(sk_flags" in g.source and "sk_flags, sk_parts" in g.source
    steps = k // bk
    tiles = -(-(x.numel() // k) // bm) * -(-n // bn)
    assert (tiles * steps) % programs, "every case splits tiles between programs"
    with torch.no_grad():
        ref = model.double()(x.double(), r.double())
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    for _ in range(2):  # the flags are left at zero, so a second run hands over the same way
        assert_close_rel(engine(x, r).double(), ref, tol)
        (flags, parts) = next(iter(engine._states.values())).workspace
        assert flags.numel() == programs and not flags.any() and parts.numel() == programs * bm * bn
    # the engine file keeps the tile; the stored sm_90 binary takes the two workspace pointers
    loaded = trtjit.load(engine.save(str(tmp_path / "sk.plan")))
    (lg,) = [kk for kk in loaded.kernels if kk.template == "gemm"]
    assert lg.workspace == g.workspace and lg.source == g.source
    (b,) = [b for b, kk in zip(loaded.binaries["sm_90"], loaded.kernels) if kk.template == "gemm"]
    assert [p[1] for p in b.params[-2:]] == ["*i32", "*fp32"]
    assert_close_rel(loaded(x, r).double(), ref, tol)


def test_stream_k_needs_a_gemm_that_allows_it(tmp_path, gen):
    """A tile asking for stream-K on a GEMM that cannot take it (fewer tiles than programs here) runs one
    program per tile instead, and says so in its grid."""
    model = Residual(64, 32).eval()
    x, r = torch.randn(32, 64, generator=gen), torch.randn(32, 32, generator=gen)
    plain = trtjit.compile(model, (x, r))
    cache = tmp_path / "tuning.json"
    _cache_asking_stream_k(cache, plain, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4,
                                          "num_stages": 2, "STREAM_K": 8})
    engine = trtjit.compile(model, (x, r), tuning_cache=str(cache), targets=["sm_90"])
    (g,) = [kk for kk in engine.kernels if kk.template == "gemm"]
    assert g.grid == (2, 2, 1) and g.workspace == (0, 0) and "sk_flags" not in g.source
    with torch.no_grad():
        assert_close_rel(engine(x, r), model(x, r), 1e-4)


def test_stream_k_conditions_and_candidates():
    fp16 = (128, 128, 64)
    assert stream_k_allowed(6304, 768, 3072, 1, fp16, "ieee", 132)      # vit_b_16's fc2: 300 tiles
    assert not stream_k_allowed(6304, 768, 3072, 2, fp16, "ieee", 132)  # a batch that does not fold
    assert not stream_k_allowed(6304, 768, 3000, 1, fp16, "ieee", 132)  # K not a multiple of BLOCK_K
    assert not stream_k_allowed(6304, 768, 3072, 1, fp16, "int8", 132)  # int32 accumulator: not handed over
    assert not stream_k_allowed(512, 768, 3072, 1, fp16, "ieee", 132)   # 24 tiles for 132 programs
    vit_fc2 = {"M": 6304, "N": 768, "K": 3072, "batch": 1}
    cands = tile_candidates(vit_fc2, torch.float16, stream_k=True)
    sk = [c for c in cands if c.get("STREAM_K")]
    assert sk and all(c["STREAM_K"] == 132 for c in sk)
    assert {(c["BLOCK_M"], c["BLOCK_N"]) for c in sk} == {(128, 128), (128, 256)}
    assert cands[0] == tile_candidates(vit_fc2, torch.float16)[0]  # the heuristic's tile stays first
    assert not any(c.get("STREAM_K") for c in tile_candidates(vit_fc2, torch.float16))  # convolutions: none
    assert not any(c.get("STREAM_K") for c in tile_candidates(vit_fc2, torch.int8, stream_k=True))
