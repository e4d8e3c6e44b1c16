"""GEMM micro-benchmark on the GPU: the structure trtjit's GEMM template emits, with variations, against cuBLAS.

    python benchmarks/gemm_micro.py [--json out.json]

Each variant is timed with ``triton.testing.do_bench_cudagraph`` (no launch overhead) on the fp16 shapes
of the transformer models at batch 32 and 1. It answers which tile / swizzle / load style the template's
defaults should take; nothing here is used by the compiler.
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

SMS = 132  # H100/H200 SXM streaming multiprocessors


@triton.jit
def grouped_pid(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) in grouped order: GROUP_M row blocks share their B columns while they are in L2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    return first_m + (pid % width) % size_m, (pid % width) // size_m


@triton.jit
def mm_masked(a_ptr, b_ptr, c_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """trtjit's template: row/column masks on every load, full K steps unmasked (K % BLOCK_K == 0 here)."""
    if GROUP_M == 0:
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
    else:
        pid_m, pid_n = grouped_pid(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm * K + rk[None, :]
    b_ptrs = b_ptr + rk[:, None] * N + rn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=rm < M, other=0.0)
        b = tl.load(b_ptrs, mask=rn < N, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * N
    tl.store(c_ptr + rm * N + rn, acc.to(tl.float16), mask=(rm < M) & (rn < N))


@triton.jit
def clamped_mainloop(a_ptr, b_ptr, M, N, K: tl.constexpr, pid_m, pid_n, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The template's main loop: no load masks, out-of-range rows/columns clamped (modulo) to valid ones.
    Returns the fp32 tile and its row and column indices (the store masks them)."""
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ram = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)
    rbn = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + ram[:, None] * K + rk[None, :]
    b_ptrs = b_ptr + rk[:, None] * N + rbn[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * N
    return acc, rm, rn


@triton.jit
def mm_clamped(a_ptr, b_ptr, c_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """No load masks: out-of-range rows/columns are clamped (modulo) to valid ones; only the store masks."""
    pid_m, pid_n = grouped_pid(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc, rm, rn = clamped_mainloop(a_ptr, b_ptr, M, N, K, pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K)
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.float16), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def mm_tma(a_ptr, b_ptr, c_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """Device-side TMA descriptors (Hopper bulk tensor copies), grouped order."""
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[N, 1], block_shape=[BLOCK_M, BLOCK_N])
    pid_m, pid_n = grouped_pid(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = a_desc.load([pid_m * BLOCK_M, k])
        b = b_desc.load([k, pid_n * BLOCK_N])
        acc = tl.dot(a, b, acc)
    c_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], acc.to(tl.float16))


@triton.jit
def _gelu_bias(acc, bias_ptr, rn, N, EPI: tl.constexpr):
    """The epilogue of an FFN1 GEMM: bias row, erf GELU, all in fp32. EPI 1: libdevice erf (two polynomials
    selected per element); EPI 2: Abramowitz-Stegun 7.1.26 erfc, one branch-free polynomial."""
    x = acc + tl.load(bias_ptr + rn[None, :], mask=rn[None, :] < N, other=0.0).to(tl.float32)
    if EPI == 1:
        return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    z = tl.abs(x) * 0.7071067811865476
    if EPI == 2:
        t = 1.0 / (1.0 + 0.3275911 * z)
    else:  # EPI 3: 1 / d as rsqrt(d)^2 (one MUFU.RSQ, ftz), exp as exp2 (one MUFU.EX2, ftz)
        r = tl.rsqrt(1.0 + 0.3275911 * z)
        t = r * r
    q = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    if EPI == 2:
        q = q * tl.exp(-z * z)
    else:
        q = q * tl.exp2(x * x * -0.7213475204444817)
    return x * tl.where(x >= 0, 1.0 - 0.5 * q, 0.5 * q)


@triton.jit
def mm_epi(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_K: tl.constexpr, EPI: tl.constexpr, SUBTILE: tl.constexpr):
    """The template's clamped main loop (2-D grid) with an optional bias + GELU epilogue; SUBTILE runs the
    epilogue and store on two [BLOCK_M, BLOCK_N / 2] halves of the accumulator (fewer live registers)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    acc, rm, rn = clamped_mainloop(a_ptr, b_ptr, M, N, K, pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K)
    if SUBTILE:
        h0, h1 = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        for i in tl.static_range(2):
            h = h0 if i == 0 else h1
            rnh = pid_n * BLOCK_N + i * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
            if EPI:
                h = _gelu_bias(h, bias_ptr, rnh, N, EPI)
            tl.store(c_ptr + rm[:, None] * N + rnh[None, :], h.to(tl.float16),
                     mask=(rm[:, None] < M) & (rnh[None, :] < N))
    else:
        if EPI:
            acc = _gelu_bias(acc, bias_ptr, rn, N, EPI)
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.float16),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def mm_persistent(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EPI: tl.constexpr, NUM_PROGS: tl.constexpr,
                  FLATTEN: tl.constexpr):
    """Persistent: NUM_PROGS programs walk the tiles; with FLATTEN the software pipeliner issues the next
    tile's first loads while this tile's epilogue runs."""
    num_n = tl.cdiv(N, BLOCK_N)
    num_tiles = tl.cdiv(M, BLOCK_M) * num_n
    k_tiles: tl.constexpr = K // BLOCK_K
    for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGS, flatten=FLATTEN):
        pid_m = tile // num_n
        pid_n = tile % num_n
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ram = tl.max_contiguous(tl.multiple_of(rm % M, BLOCK_M), BLOCK_M)
        rbn = tl.max_contiguous(tl.multiple_of(rn % N, BLOCK_N), BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = tl.load(a_ptr + ram[:, None] * K + (ki * BLOCK_K + rk)[None, :])
            b = tl.load(b_ptr + (ki * BLOCK_K + rk)[:, None] * N + rbn[None, :])
            acc = tl.dot(a, b, acc)
        if EPI:
            acc = _gelu_bias(acc, bias_ptr, rn, N, EPI)
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.float16),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


EPI_SHAPES = {"bert32 fc1": (4096, 3072, 768), "vit32 fc1": (6304, 3072, 768)}
EPI_TILES = [(128, 256, 64, 8, 3), (128, 128, 64, 8, 3), (256, 128, 64, 8, 3)]


def epilogue_rows() -> list[dict]:
    """Bias + GELU epilogue cost per tile and kernel structure on the FFN1 shapes: plain, subtiled,
    persistent (flattened or not), against the same kernel with no epilogue. On 2026-12-04 (H200) the
    persistent forms, subtiling and 2 CTAs per SM all left the libdevice-erf epilogue's 13-25 us; what
    cost it was the instruction count of erf (EPI 1 against 3)."""
    rows = []
    for sname, (M, N, K) in EPI_SHAPES.items():
        A = torch.randn(M, K, device="cuda", dtype=torch.float16)
        B = torch.randn(K, N, device="cuda", dtype=torch.float16) / 16
        bias = torch.randn(N, device="cuda", dtype=torch.float16)
        ref = torch.nn.functional.gelu((A @ B).float() + bias.float())
        flop = 2 * M * N * K
        ms = do_bench_cudagraph(functools.partial(torch.nn.functional.linear, A, B.t().contiguous(), bias))
        print(f"{sname:12s} cublas+bias {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
        rows.append({"shape": sname, "variant": "cublas+bias", "ms": ms})
        for bm, bn, bk, w, s in EPI_TILES:
            ntiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
            variants = [(f"epi{e} sub{st}", mm_epi, (triton.cdiv(M, bm), triton.cdiv(N, bn)),
                         {"EPI": e, "SUBTILE": st}) for e, st in ((0, 0), (1, 0), (2, 0), (3, 0), (3, 1))]
            for progs in (SMS,):
                for fl in (0, 1):
                    variants.append((f"persist{progs} flat{fl}", mm_persistent, (min(progs, ntiles),),
                                     {"EPI": 1, "NUM_PROGS": min(progs, ntiles), "FLATTEN": fl}))
            for label, kern, grid, kw in variants:
                C = torch.empty(M, N, device="cuda", dtype=torch.float16)
                try:
                    run = functools.partial(kern[grid], A, B, bias, C, M, N, K, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                            num_warps=w, num_stages=s, **kw)
                    run()
                    want = ref if kw.get("EPI") else (A @ B).float()
                    err = ((C.float() - want).abs().max() / want.abs().max()).item()
                    ms = do_bench_cudagraph(run)
                except Exception as e:  # a variant that does not compile is reported, not fatal
                    print(f"{sname:12s} {label} {bm}x{bn} w{w} s{s}: {type(e).__name__} {str(e)[:160]}", flush=True)
                    continue
                rows.append({"shape": sname, "variant": label, "tile": [bm, bn, bk, w, s], "ms": ms, "err": err})
                print(f"{sname:12s} {label:18s} {bm}x{bn}x{bk} w{w} s{s} {ms * 1e3:8.1f} us "
                      f"{flop / ms / 1e9:6.0f} TFLOP/s err {err:.1e}", flush=True)
    return rows


SHAPES = {  # (M, N, K): tokens x out x in
    "vit32 qkv": (6304, 2304, 768), "vit32 fc1": (6304, 3072, 768), "vit32 fc2": (6304, 768, 3072),
    "vit32 proj": (6304, 768, 768), "bert32 fc1": (4096, 3072, 768), "bert32 fc2": (4096, 768, 3072),
    "vit1 fc1": (197, 3072, 768), "vit1 fc2": (197, 768, 3072), "bert1 qkv": (128, 2304, 768),
}
TILES = [(128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
         (128, 128, 64, 8, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4), (32, 64, 64, 4, 4), (64, 32, 128, 4, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default=None)
    p.add_argument("--epilogue", action="store_true", help="only the bias + GELU epilogue study")
    a = p.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    rows = []
    if a.epilogue:
        rows = epilogue_rows()
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        return
    for sname, (M, N, K) in SHAPES.items():
        A = torch.randn(M, K, device="cuda", dtype=torch.float16)
        B = torch.randn(K, N, device="cuda", dtype=torch.float16)
        ref = A @ B
        flop = 2 * M * N * K
        ms = do_bench_cudagraph(functools.partial(torch.matmul, A, B))
        rows.append({"shape": sname, "variant": "cublas", "ms": ms, "tflops": flop / ms / 1e9})
        print(f"{sname:12s} cublas {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
        best = None
        for bm, bn, bk, w, s in TILES:
            if (M < 1000) != (bm * bn <= 128 * 64) and bm * bn != 128 * 128:
                continue  # big tiles for big M, small tiles for small M, 128x128 for both
            for kern, group in ((mm_masked, 0), (mm_masked, 8), (mm_clamped, 8), (mm_tma, 8)):
                C = torch.empty(M, N, device="cuda", dtype=torch.float16)
                ntile = triton.cdiv(M, bm) * triton.cdiv(N, bn)
                grid = (triton.cdiv(M, bm), triton.cdiv(N, bn)) if group == 0 else (ntile,)
                try:
                    run = functools.partial(kern[grid], A, B, C, M, N, K, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                            GROUP_M=group, num_warps=w, num_stages=s)
                    run()
                    err = ((C.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                    ms = do_bench_cudagraph(run)
                except Exception as e:  # a variant that does not compile is reported, not fatal
                    print(f"{sname:12s} {kern.__name__} g{group} {bm}x{bn}x{bk} w{w} s{s}: {type(e).__name__} "
                          f"{str(e)[:120]}", flush=True)
                    continue
                r = {"shape": sname, "variant": f"{kern.__name__} g{group}", "tile": [bm, bn, bk, w, s], "ms": ms,
                     "tflops": flop / ms / 1e9, "err": err}
                rows.append(r)
                if best is None or ms < best["ms"]:
                    best = r
                print(f"{sname:12s} {kern.__name__:10s} g{group} {bm}x{bn}x{bk} w{w} s{s} {ms * 1e3:8.1f} us "
                      f"{flop / ms / 1e9:6.0f} TFLOP/s err {err:.1e}", flush=True)
        print(f"BEST {sname}: {best}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
