"""GEMM template paths chosen by shape: mask-free main loops with clamped rows/columns for tiles that overhang
M or N, the column mask where N is no multiple of 16, the ragged K tail, and epilogue operands loaded in
their broadcast shape (a bias as one row of BLOCK_N values)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from trtjit.codegen.gemm import gemm_config, heuristic_tile, tile_candidates

import trtjit
from tests.conftest import assert_close_rel


def gemm_sources(engine) -> list[str]:
    return [k.source for k in engine.kernels if k.template == "gemm"]


@pytest.mark.parametrize(("m", "n", "k", "rows", "cols"), [
    (64, 64, 64, "rm", "rn"),      # tiles fit exactly: no clamp, no mask
    (37, 48, 40, "ra", "rb"),      # rows clamp, columns wrap (48 % 16 == 0), K is only a ragged tail
    (37, 50, 100, "ra", "mask"),   # columns keep their mask (50 % 16 != 0); one full K step and a tail
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_linear_clamped_main_loop(m, n, k, rows, cols, dtype, gen):
    model = nn.Sequential(nn.Linear(k, n), nn.GELU()).eval().to(dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    engine = trtjit.compile(model, (x,))
    (src,) = gemm_sources(engine)
    loop = src[src.index("acc = tl.zeros"):src.index("mask = (rm")]  # main loop and K tail
    if rows == "ra":
        assert f"ra = rm % {m}" in src
    if cols == "rb":
        assert f"rb = rn % {n}" in src and "mask=rn <" not in loop
    elif cols == "mask":
        assert f"mask=rn < {n}" in loop or f"(rn < {n})" in loop
    else:
        assert "a = tl.load(a_ptrs)" in src and "b = tl.load(b_ptrs)" in src
    # the bias loads as one [1, BLOCK_N] row, not a tile of pointers
    (bias_load,) = [ln for ln in src.splitlines() if ln.endswith("# 0.bias")]
    assert f"tl.load(in2 + rn, mask=rn < {n}, other=0.0)" in bias_load
    with torch.no_grad():
        ref = model.double()(x.double())
    assert_close_rel(engine(x).double(), ref, 1e-4 if dtype == torch.float32 else 1e-2)


def test_batched_matmul_folds_batch_and_clamps(gen):
    """A batched activation times a shared weight folds the batch into M; a ragged M clamps the folded row."""
    model = nn.Linear(24, 32).eval()
    x = torch.randn(3, 5, 24, generator=gen)
    engine = trtjit.compile(model, (x,))
    (src,) = gemm_sources(engine)
    assert "ra = rm % 15" in src and "ab0 = (ra // 5) % 3" in src
    with torch.no_grad():
        assert_close_rel(engine(x), model(x), 1e-4)


def test_tile_heuristic_fills_the_gpu():
    # wide N with many tiles: 128x256, 8 warps
    assert gemm_config(4096, 3072, 768, 1, torch.float16) == (128, 256, 64, 8, 3)
    # batch-1 transformer shapes step down until half of the 132 SMs have a program
    assert gemm_config(197, 3072, 768, 1, torch.float16)[:2] == (64, 128)
    assert gemm_config(128, 2304, 768, 1, torch.float16)[:2] == (64, 64)
    assert gemm_config(197, 768, 3072, 1, torch.float16)[:3] == (64, 32, 128)
    # BLOCK_K spans 128 bytes of K for every operand width
    assert gemm_config(4096, 1024, 4096, 1, torch.int8)[2] == 128
    assert gemm_config(4096, 1024, 4096, 1, torch.float32)[2] == 32
    cands = tile_candidates({"M": 4096, "N": 1024, "K": 4096, "batch": 1}, torch.int8)
    assert all(c["BLOCK_K"] >= 64 for c in cands) and len({tuple(c.values()) for c in cands}) == len(cands)


def test_gathered_stem_conv_takes_the_small_tile(gen):
    """An NCHW-input convolution over a short K (resnet50's 7x7 stem: K = 147) is bound by its element
    gather: 64-row tiles with a 64-byte BLOCK_K. A long K, a K of one step (mobilenet_v2's 3x3 stem), a
    channels-last input or int8 keep gemm_config."""
    stem = {"M": 401408, "N": 64, "K": 147, "batch": 1, "gather": 1}
    assert heuristic_tile(stem, torch.float16) == (64, 64, 32, 4, 3)
    assert heuristic_tile(stem, torch.float32)[2] == 16
    assert tile_candidates(stem, torch.float16)[0] == dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps",
                                                                "num_stages"), (64, 64, 32, 4, 3)))
    for problem, dtype in (({**stem, "K": 1152}, torch.float16), ({**stem, "gather": 0}, torch.float16),
                           (stem, torch.int8), ({**stem, "K": 27}, torch.float16)):
        assert heuristic_tile(problem, dtype) == gemm_config(401408, 64, problem["K"], 1, dtype)
    # 16 channels (an RGB stem reads an NHWC copy instead: passes/stem_input_nhwc), K = 144
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU()).eval().half()
    x = torch.randn(2, 16, 16, 16, generator=gen).half()
    engine = trtjit.compile(model, (x,))
    (k,) = [k for k in engine.kernels if k.template == "conv"]
    assert k.problem["gather"] == 1 and k.constexprs["BLOCK_K"] == 32 and k.constexprs["BLOCK_M"] <= 64
    with torch.no_grad():
        ref = model.double()(x.double())
    assert_close_rel(engine(x).double(), ref, 1e-2)


def test_program_order(gen, monkeypatch):
    """A static GEMM of more than one column block launches its N tiles fastest (each A row block read once
    per wave); one of a single column block keeps M fastest. Both orders compute the same product."""
    import trtjit.codegen.gemm as gemm

    big = trtjit.compile(torch.nn.Linear(2048, 512).eval().half(), (torch.randn(8192, 2048, generator=gen).half(),))
    (k,) = [k for k in big.kernels if k.template == "gemm"]
    assert "pid_n = tl.program_id(0)" in k.source
    assert k.grid == (512 // k.constexprs["BLOCK_N"], 8192 // k.constexprs["BLOCK_M"], 1)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.ReLU()).eval()
    x = torch.randn(2, 70, 48, generator=gen)
    n_fast = trtjit.compile(model, (x,))
    (k,) = [k for k in n_fast.kernels if k.template == "gemm"]
    assert "pid_n = tl.program_id(0)" in k.source and k.grid[0] == -(-96 // k.constexprs["BLOCK_N"]) > 1
    narrow = trtjit.compile(torch.nn.Linear(48, 16).eval(), (x,))
    (k,) = [k for k in narrow.kernels if k.template == "gemm"]
    assert "pid_m = tl.program_id(0)" in k.source
    monkeypatch.setattr(gemm, "N_FASTEST_A_BYTES", 1 << 62)  # M fastest everywhere
    m_fast = trtjit.compile(model, (x,))
    (k,) = [k for k in m_fast.kernels if k.template == "gemm"]
    assert "pid_m = tl.program_id(0)" in k.source
    with torch.no_grad():
        ref = model(x)
        assert_close_rel(n_fast(x), ref)
        assert_close_rel(m_fast(x), ref)


def test_wave_tail_rule():
    """vit_b_16's layer GEMMs (M = 6304 = 44 * 128 + 672) and bert's fc2 split off their partial last wave;
    GEMMs whose tiles fill whole waves, fit in one, or whose tail tiles would not fit in a wave do not."""
    from trtjit.codegen.gemm import wave_tail

    f16 = torch.float16
    assert wave_tail(6304, 768, 128, 128, 8, 1, f16) == 5632    # fc2, proj: 300 tiles -> 264 + 132 tail tiles
    assert wave_tail(6304, 2304, 128, 256, 8, 1, f16) == 5632   # qkv: 450 tiles -> 396 + 99
    assert wave_tail(6304, 3072, 128, 256, 8, 1, f16) == 5632   # fc1: 600 tiles -> 528 + 132
    assert wave_tail(4096, 768, 128, 128, 8, 1, f16) == 2816    # bert fc2: 192 tiles -> 132 + 120
    assert wave_tail(128 * 132, 128, 128, 128, 8, 1, f16) is None      # whole waves
    assert wave_tail(4096, 256, 128, 128, 8, 1, f16) is None           # one wave (64 tiles)
    assert wave_tail(4096, 2304, 128, 256, 8, 1, f16) == 3712   # bert qkv: 288 tiles -> 261 + 54
    assert wave_tail(256, 25600, 128, 256, 8, 1, f16) is None          # 200 tail tiles of 64 rows: no wave holds them
    assert wave_tail(6304, 768, 128, 128, 8, 4, f16) is None           # batched (not folded)
    assert wave_tail(6304, 768, 64, 128, 4, 1, f16) is None            # already small tiles
    assert wave_tail(6304, 768, 128, 128, 8, 1, torch.float32) is None


@pytest.mark.parametrize(("n_fastest", "dtype"), [(False, torch.float16), (True, torch.float16),
                                                   (False, torch.bfloat16)])
def test_wave_tail_kernel_matches_torch(gen, monkeypatch, n_fastest, dtype):
    """The split kernel (whole waves of 128-row tiles, then 64-row tiles) computes the same GEMM and epilogue
    as PyTorch, in both program orders; a GPU of 4 SMs makes a problem the interpreter runs split."""
    import trtjit.codegen.gemm as gemm

    monkeypatch.setattr(gemm, "SMS", 4)
    if not n_fastest:  # (N fastest is the default)
        monkeypatch.setattr(gemm, "N_FASTEST_A_BYTES", 1 << 62)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 256)

        def forward(self, x, r):
            return nn.functional.gelu(self.fc(x)) + r

    model = Block().eval().to(dtype)
    x = torch.randn(3, 100, 64, generator=gen).to(dtype)   # 300 rows: 3 x 2 tiles of 128x128 on 4 "SMs"
    r = torch.randn(3, 100, 256, generator=gen).to(dtype)
    engine = trtjit.compile(model, (x, r))
    (k,) = [k for k in engine.kernels if k.template == "gemm"]
    assert "def _gemm_tile(" in k.source and "rows from 256 in 64-row tiles" in k.source
    assert k.grid == (2 * 2 + 1 * 2, 1, 1)  # 4 main tiles (rows 0-255) + 2 tail tiles of 64 rows (256-299)
    main_order = "pid // 2, pid % 2" if n_fastest else "pid % 2, pid // 2"  # (pid_m, pid_n) of the main tiles
    assert f"_gemm_tile(in0, in1, in2, in3, out0, {main_order}, 0, BLOCK_M" in k.source
    with torch.no_grad():
        assert_close_rel(engine(x, r), model(x, r))
