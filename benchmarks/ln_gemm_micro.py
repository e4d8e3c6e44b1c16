"""LayerNorm -> GEMM micro-benchmark on the GPU: where a LayerNorm's cost can go, on vit_b_16's bs32 shapes.

    python benchmarks/ln_gemm_micro.py [--json out.json]

Variants, in the structure trtjit's templates emit (clamped main loop, 128x256x64 tiles, 8 warps, 3 stages):
  gemm+bias            the GEMM on normalized rows (what follows a LayerNorm kernel)
  gemm+folded epi      the GEMM on raw rows, epilogue rstd * (acc - mean * colsum) + bias, mean/rstd loaded
                       (a LayerNorm folded into the GEMM, with a statistics kernel;
                       tried on 2026-12-04 and not adopted: benchmarks/RESULTS.md)
  gemm+moments         the same, the row moments accumulated in the main loop from the A tiles (shifted by
                       each row's first element), so no statistics kernel runs
and the row kernels: a full LayerNorm (read x, write y) and statistics only (read x, write mean and rstd),
in the reduction template's tile (4 rows x 1024) and in wider ones. Each is timed with
``triton.testing.do_bench_cudagraph``; nothing here is used by the compiler.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph


@triton.jit
def gemm_ln(a_ptr, b_ptr, bias_ptr, colsum_ptr, mean_ptr, rstd_ptr, c_ptr, M, N: tl.constexpr, K: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr):
    """MODE 0: gemm + bias; 1: folded epilogue with loaded statistics; 2: moments from the main loop."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    ra = rm % M
    rk = tl.arange(0, BLOCK_K)
    a_row = a_ptr + ra * K
    a_ptrs = a_row + rk[None, :]
    b_ptrs = b_ptr + rn + rk[:, None] * N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if MODE == 2:
        shift = tl.load(a_row).to(tl.float32)
        m1 = tl.zeros((BLOCK_M, 1), dtype=tl.float32)
        m2 = tl.zeros((BLOCK_M, 1), dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs)
        b = tl.load(b_ptrs)
        acc = tl.dot(a, b, acc)
        if MODE == 2:
            d = a.to(tl.float32) - shift
            m1 += tl.sum(d, axis=1, keep_dims=True)
            m2 += tl.sum(d * d, axis=1, keep_dims=True)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * N
    mask = (rm < M) & (rn < N)
    bias = tl.load(bias_ptr + rn).to(tl.float32)
    if MODE == 0:
        out = acc + bias
    else:
        if MODE == 1:
            mean = tl.load(mean_ptr + rm, mask=rm < M, other=0.0)
            rstd = tl.load(rstd_ptr + rm, mask=rm < M, other=0.0)
        else:
            mu = m1 / K
            mean = shift + mu
            rstd = tl.rsqrt(tl.maximum(m2 / K - mu * mu, 0.0) + 1e-6)
        colsum = tl.load(colsum_ptr + rn)
        out = (acc - mean * colsum) * rstd + bias
    tl.store(c_ptr + rm * N + rn, out.to(tl.float16), mask=mask)


@triton.jit
def row_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, R, C: tl.constexpr, BLOCK_R: tl.constexpr,
               BLOCK_C: tl.constexpr, STATS_ONLY: tl.constexpr):
    """The reduction template's LayerNorm: whole rows in registers, two-pass statistics."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    cols = tl.arange(0, BLOCK_C)[None, :]
    mask = (rows < R) & (cols < C)
    x = tl.load(x_ptr + rows * C + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(tl.where(mask, x, 0.0), axis=1, keep_dims=True) / C
    c = x - mean
    var = tl.sum(tl.where(mask, c * c, 0.0), axis=1, keep_dims=True) / C
    rstd = tl.rsqrt(var + 1e-6)
    if STATS_ONLY:
        tl.store(mean_ptr + rows, mean, mask=rows < R)
        tl.store(rstd_ptr + rows, rstd, mask=rows < R)
    else:
        w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows * C + cols, (c * rstd * w + b).to(tl.float16), mask=mask)


def bench(fn) -> float:
    return do_bench_cudagraph(fn, rep=200) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    M, K = 32 * 197, 768
    x = (torch.randn(M, K, device="cuda") * 0.5 + 0.3).half()
    g, beta = torch.rand(K, device="cuda") + 0.5, torch.randn(K, device="cuda") * 0.1
    ref_y = torch.nn.functional.layer_norm(x.float(), (K,), g, beta, 1e-6)
    mean = x.float().mean(1, keepdim=True)
    rstd = torch.rsqrt(x.float().var(1, unbiased=False, keepdim=True) + 1e-6)
    rows = []
    print(f"card: {torch.cuda.get_device_name()}; M={M} K={K}", flush=True)
    for label, N in (("qkv", 2304), ("fc1", 3072)):
        w = torch.randn(K, N, device="cuda") * 0.03
        bias = torch.randn(N, device="cuda") * 0.1
        wf = (g[:, None] * w).half()
        colsum = wf.float().sum(0)
        bias_f = (bias + beta @ w).float()
        ref = ref_y @ w + bias
        y16 = ref_y.half()
        out = torch.empty(M, N, device="cuda", dtype=torch.float16)
        grid = (triton.cdiv(M, 128), triton.cdiv(N, 256))
        for mode, name in ((0, "gemm+bias"), (1, "gemm+folded epi"), (2, "gemm+moments")):
            a, wt, bb = (y16, w.half(), bias) if mode == 0 else (x, wf, bias_f)

            def run(a=a, wt=wt, bb=bb, mode=mode, cs=colsum, out=out, n=N, grid=grid):
                gemm_ln[grid](a, wt, bb, cs, mean, rstd, out, M, n, K, 128, 256, 64, mode, num_warps=8,
                              num_stages=3)
            run()
            err = float((out.float() - ref).abs().max() / ref.abs().max())
            us = bench(run)
            flops = 2 * M * N * K
            rows.append({"gemm": label, "variant": name, "us": round(us, 2), "tflops": round(flops / us / 1e6, 1),
                         "rel_err": err})
            print(f"{label} {name:18s} {us:7.2f} us {flops / us / 1e6:6.1f} TFLOP/s err {err:.1e}", flush=True)
    y = torch.empty_like(x)
    m_out = torch.empty(M, 1, device="cuda")
    r_out = torch.empty(M, 1, device="cuda")
    for stats in (0, 1):
        for br, warps in ((4, 4), (8, 4), (8, 8), (16, 8), (2, 4)):
            def run(br=br, warps=warps, stats=stats):
                row_kernel[(triton.cdiv(M, br),)](x, g, beta, y, m_out, r_out, M, K, br, 1024, stats,
                                                  num_warps=warps)
            run()
            err = float((m_out - mean).abs().max()) if stats else float((y.float() - ref_y).abs().max())
            us = bench(run)
            moved = M * K * 2 * (1 if stats else 2)
            name = f"{'stats' if stats else 'layernorm'} {br}x1024 w{warps}"
            rows.append({"row_kernel": name, "us": round(us, 2), "gb_s": round(moved / us / 1e3, 1), "err": err})
            print(f"{name:24s} {us:7.2f} us {moved / us / 1e3:7.1f} GB/s err {err:.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
