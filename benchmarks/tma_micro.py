"""GEMM main loops on Hopper: pointer loads (what codegen/gemm.py emits) against TMA tensor descriptors, per
transformer GEMM shape (fp16 ``x @ W^T + b``), against cuBLAS (``F.linear``). The weight is [K, N] row-major, as trtjit stores a Linear's.

    python benchmarks/tma_micro.py [--json out.json]

Variants: ``ptr`` loads A and B tiles through pointers (clamped rows, no masks), as trtjit's template does;
``tma`` builds device-side descriptors (``tl.make_tensor_descriptor``: out-of-bounds rows read as zeros, no
clamp) and loads tiles with the TMA unit; ``tma persistent`` runs one program per SM over the tiles with the
loop flattened, so the software pipeline crosses tile boundaries (Triton's persistent-matmul form); ``ws``
adds warp specialization where Triton offers it. Nothing here is used by the compiler: it measures first.
(The shared ``tma_tile`` helper was factored out after the 2026-12-04 run; Triton inlines it, so the kernels
compile to the same code.)
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

SMS = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132

SHAPES = [("vit fc2", 6304, 768, 3072), ("vit proj", 6304, 768, 768), ("vit qkv", 6304, 2304, 768),
          ("vit fc1", 6304, 3072, 768), ("bert qkv", 4096, 2304, 768), ("bert fc2", 4096, 768, 3072)]


@triton.jit
def ptr_kernel(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = x + (rm % M) * K + rk[None, :]
    b_ptrs = w + rn + rk[:, None] * N  # every N here is a multiple of BLOCK_N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs)
        b = tl.load(b_ptrs)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * N
    acc += tl.load(bias + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y + rm * N + rn, acc.to(tl.float16), mask=(rm < M) & (rn < N))


@triton.jit
def tma_tile(a_desc, b_desc, bias, y, off_m, off_n, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One output tile from TMA loads, plus the bias, stored fp16 (inlined by Triton into its caller)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        acc = tl.dot(a_desc.load([off_m, k]), b_desc.load([k, off_n]), acc)
    rm = off_m + tl.arange(0, BLOCK_M)[:, None]
    rn = off_n + tl.arange(0, BLOCK_N)[None, :]
    acc += tl.load(bias + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y + rm * N + rn, acc.to(tl.float16), mask=(rm < M) & (rn < N))


@triton.jit
def tma_kernel(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    a_desc = tl.make_tensor_descriptor(x, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(w, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    tma_tile(a_desc, b_desc, bias, y, tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N, M, N, K, BLOCK_M,
             BLOCK_N, BLOCK_K)


@triton.jit
def tma_persistent(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PROGRAMS: tl.constexpr, WS: tl.constexpr):
    a_desc = tl.make_tensor_descriptor(x, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(w, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    tm = tl.cdiv(M, BLOCK_M)
    tiles = tm * tl.cdiv(N, BLOCK_N)
    for t in tl.range(tl.program_id(0), tiles, PROGRAMS, flatten=True, warp_specialize=WS):
        tma_tile(a_desc, b_desc, bias, y, (t % tm) * BLOCK_M, (t // tm) * BLOCK_N, M, N, K, BLOCK_M, BLOCK_N, BLOCK_K)


TILES = [(128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4)]


def variants():
    for tile in TILES:
        yield "ptr", tile, False
        yield "tma", tile, False
        yield "tma persistent", tile, False
        yield "tma persistent ws", tile, True


def launch(kind, tile, ws, x, w, b, y):
    M, K = x.shape
    N = w.shape[1]
    bm, bn, bk, warps, stages = tile
    if kind == "ptr":
        grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
        return lambda: ptr_kernel[grid](x, w, b, y, M, N, K, bm, bn, bk, num_warps=warps, num_stages=stages)
    if kind == "tma":
        grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
        return lambda: tma_kernel[grid](x, w, b, y, M, N, K, bm, bn, bk, num_warps=warps, num_stages=stages)
    progs = min(SMS, triton.cdiv(M, bm) * triton.cdiv(N, bn))
    return lambda: tma_persistent[(progs,)](x, w, b, y, M, N, K, bm, bn, bk, progs, ws, num_warps=warps,
                                            num_stages=stages)


def gemm_operands(M: int, N: int, K: int, epi: str = "") -> tuple[torch.Tensor, ...]:
    """Seeded fp16 operands of ``epi(x @ w + b)`` (x [M, K], w [K, N] as trtjit folds a Linear weight, b [N],
    r [M, N] a residual) and its fp32 reference, from cuBLAS's fp16 addmm: epi "" (bias only), "gelu" or
    "res" (+ r). Returns x, w, b, r, ref."""
    torch.manual_seed(0)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    w = torch.randn(K, N, device="cuda", dtype=torch.float16) / K ** 0.5
    b = torch.randn(N, device="cuda", dtype=torch.float16)
    r = torch.randn(M, N, device="cuda", dtype=torch.float16)
    ref = torch.addmm(b, x, w).float()
    if epi == "gelu":
        ref = torch.nn.functional.gelu(ref)
    if epi == "res":
        ref = ref + r.float()
    return x, w, b, r, ref


def time_variant(label: str, make, y: torch.Tensor, ref: torch.Tensor, flops: int, cublas_ms: float) -> dict | None:
    """Build one variant's launcher (``make()``), run it once into ``y`` and check it against ``ref``, then
    time it (CUDA-graph replays) and print a line; None (and a "failed" line) where this Triton cannot build
    or run it."""
    try:
        fn = make()
        fn()
        torch.cuda.synchronize()
        err = float((y.float() - ref.float()).abs().max() / ref.float().abs().max())
        ms = do_bench_cudagraph(fn, rep=200)
    except Exception as e:  # noqa: BLE001 - a variant this Triton cannot build is reported, not fatal
        print(f"    {label}: failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
        return None
    print(f"    {label}: {ms * 1e3:7.1f} us {flops / ms / 1e9:5.0f} TFLOP/s x{cublas_ms / ms:.2f} of cuBLAS, "
          f"err {err:.1e}", flush=True)
    return {"us": ms * 1e3, "cublas_us": cublas_ms * 1e3, "vs_cublas": cublas_ms / ms, "tflops": flops / ms / 1e9,
            "err": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    print(f"card: {torch.cuda.get_device_name()}; triton {triton.__version__}; {SMS} SMs", flush=True)
    rows = []
    for name, M, N, K in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(M, K, device="cuda", dtype=torch.float16)
        w = torch.randn(N, K, device="cuda", dtype=torch.float16) / K ** 0.5
        wt = w.t().contiguous()  # [K, N], the layout trtjit's constant folding stores a Linear weight in
        b = torch.randn(N, device="cuda", dtype=torch.float16)
        ref = torch.nn.functional.linear(x, w, b)
        cublas = do_bench_cudagraph(lambda x=x, w=w, b=b: torch.nn.functional.linear(x, w, b), rep=200)
        flops = 2 * M * N * K
        print(f"{name:9s} {M}x{N}x{K} cuBLAS {cublas * 1e3:7.1f} us {flops / cublas / 1e9:5.0f} TFLOP/s", flush=True)
        for kind, tile, ws in variants():
            y = torch.empty(M, N, device="cuda", dtype=torch.float16)
            row = time_variant(f"{kind:18s} {tile}", functools.partial(launch, kind, tile, ws, x, wt, b, y), y, ref,
                               flops, cublas)
            if row:
                rows.append({"gemm": name, "M": M, "N": N, "K": K, "kind": kind, "tile": tile, **row})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
