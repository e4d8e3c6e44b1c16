"""Warp-specialized Hopper GEMM main loops against trtjit's pointer-load loop and cuBLAS, on the transformer
GEMM shapes (fp16 ``x @ W + b``, W stored [K, N] as trtjit folds a Linear weight), with an optional GELU.

    python benchmarks/ws_micro.py [--json out.json]      # on the GPU
    python benchmarks/ws_micro.py --compile-only         # anywhere: sm_90 cubins, warps and shared memory

Triton 3.6 partitions a loop marked ``tl.range(..., warp_specialize=True)`` on sm_90 into a TMA producer
warpgroup and two consumer warpgroups (``ttg.warp_specialize``, ``setmaxnreg``) only when the kernel is
launched with 4 warps (the consumers then split the tile along M) and its loads are tensor descriptors. The
2026-12-04 run (tma_micro.py) tried it only on persistent loops and 8-warp tiles, where it does not apply.
Nothing here is used by the compiler: it measures first.

Result on an H100 (2026-12-06, runs/2026-12-06-s2/ws.log): every warp-specialized variant computed wrong
outputs (relative error ~1, or NaN) where the pointer loop was exact, and only the persistent ones were
faster than the pointer loop (fc2 64.2 against 69.9 us). A warp-specialized GEMM template built on this was
reverted before it landed; the error column is why. (The shared ``_descriptors`` / ``_ws_tile`` helpers
were factored out after that run; Triton inlines them, so the kernels compile to the same code.)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.tma_micro import gemm_operands, time_variant  # noqa: E402

SHAPES = [("vit qkv", 6304, 2304, 768, False), ("vit proj", 6304, 768, 768, False),
          ("vit fc1", 6304, 3072, 768, True), ("vit fc2", 6304, 768, 3072, False),
          ("bert fc2", 4096, 768, 3072, False)]
MORE_SHAPES = [("bert qkv", 4096, 2304, 768, False), ("bert fc1", 4096, 3072, 768, True)]  # --all


@triton.jit
def _gelu(x):
    z = tl.abs(x) * 0.7071067811865476
    r = tl.rsqrt(1.0 + 0.3275911 * z)
    t = r * r
    q = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    q = q * tl.exp2(x * x * -0.7213475204444817)
    return x * tl.where(x >= 0, 1.0 - 0.5 * q, 0.5 * q)


@triton.jit
def _epilogue(acc, bias, y, rm, rn, M, N, GELU: tl.constexpr):
    acc += tl.load(bias + rn, mask=rn < N, other=0.0).to(tl.float32)
    if GELU:
        acc = _gelu(acc)
    tl.store(y + rm * N + rn, acc.to(tl.float16), mask=(rm < M) & (rn < N))


@triton.jit
def ptr_tile(x, w, bias, y, off_m, off_n, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr):
    """One output tile through trtjit's main loop: clamped rows, no load masks, pointer loads."""
    rm = off_m + tl.arange(0, BLOCK_M)[:, None]
    rn = off_n + tl.arange(0, BLOCK_N)[None, :]
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = x + (rm % M) * K + rk[None, :]
    b_ptrs = w + rn + rk[:, None] * N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * N
    _epilogue(acc, bias, y, rm, rn, M, N, GELU)


@triton.jit
def ptr_kernel(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr):
    """trtjit's current main loop over a (M blocks, N blocks) grid."""
    ptr_tile(x, w, bias, y, tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N, M, N, K, BLOCK_M, BLOCK_N,
             BLOCK_K, GELU)


@triton.jit
def _descriptors(x, w, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    a_desc = tl.make_tensor_descriptor(x, shape=[M, K], strides=[K, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(w, shape=[K, N], strides=[N, 1], block_shape=[BLOCK_K, BLOCK_N])
    return a_desc, b_desc


@triton.jit
def _ws_tile(a_desc, b_desc, bias, y, off_m, off_n, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr,
             WS: tl.constexpr):
    """One output tile from TMA loads in a (warp-specialized if WS) K loop, then the epilogue (inlined)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in tl.range(0, K, BLOCK_K, warp_specialize=WS):
        acc = tl.dot(a_desc.load([off_m, k]), b_desc.load([k, off_n]), acc)
    rm = off_m + tl.arange(0, BLOCK_M)[:, None]
    rn = off_n + tl.arange(0, BLOCK_N)[None, :]
    _epilogue(acc, bias, y, rm, rn, M, N, GELU)


@triton.jit
def ws_kernel(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr, WS: tl.constexpr):
    """TMA descriptor loads (rows past M read as zeros) in a warp-specialized loop."""
    a_desc, b_desc = _descriptors(x, w, M, N, K, BLOCK_M, BLOCK_N, BLOCK_K)
    _ws_tile(a_desc, b_desc, bias, y, tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N, M, N, K, BLOCK_M,
             BLOCK_N, BLOCK_K, GELU, WS)


@triton.jit
def ws_grouped(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr, WS: tl.constexpr):
    """ws_kernel over a 1-D grid walked N-fastest, so programs running together share A row blocks in L2."""
    a_desc, b_desc = _descriptors(x, w, M, N, K, BLOCK_M, BLOCK_N, BLOCK_K)
    tn: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
    _ws_tile(a_desc, b_desc, bias, y, (tl.program_id(0) // tn) * BLOCK_M, (tl.program_id(0) % tn) * BLOCK_N, M, N,
             K, BLOCK_M, BLOCK_N, BLOCK_K, GELU, WS)


@triton.jit
def ws_persistent(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GELU: tl.constexpr, PROGRAMS: tl.constexpr,
                  OUTER: tl.constexpr):
    """One program per SM over the tiles (N fastest). OUTER warp-specializes the tile loop (the producer
    runs ahead into the next tile while the consumers store this one), else the K loop of each tile."""
    a_desc, b_desc = _descriptors(x, w, M, N, K, BLOCK_M, BLOCK_N, BLOCK_K)
    tn: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
    tiles: tl.constexpr = ((M + BLOCK_M - 1) // BLOCK_M) * tn
    for t in tl.range(tl.program_id(0), tiles, PROGRAMS, warp_specialize=OUTER):
        _ws_tile(a_desc, b_desc, bias, y, (t // tn) * BLOCK_M, (t % tn) * BLOCK_N, M, N, K, BLOCK_M, BLOCK_N,
                 BLOCK_K, GELU, not OUTER)


# (kind, BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
VARIANTS = [("ptr", 128, 256, 64, 8, 3), ("ws", 128, 256, 64, 4, 3), ("ws", 128, 128, 64, 4, 4),
            ("ws", 128, 128, 64, 4, 5), ("ws", 256, 128, 64, 4, 3), ("wsp outer", 128, 128, 64, 4, 4),
            ("wsp outer", 128, 256, 64, 4, 3)]
MORE = [("ptr", 128, 128, 64, 8, 3), ("tma", 128, 256, 64, 8, 3), ("ws", 128, 256, 64, 4, 4),
        ("ws grouped", 128, 256, 64, 4, 3), ("wsp inner", 128, 128, 64, 4, 4)]  # --all

SMS = 132


def _variant(kind: str):
    """The kernel of a variant kind and its constexprs beyond the shape, the tile and GELU (a persistent one
    also takes PROGRAMS)."""
    if kind == "ptr":
        return ptr_kernel, {}
    if kind.startswith("wsp"):
        return ws_persistent, {"OUTER": kind == "wsp outer"}
    return (ws_grouped if kind == "ws grouped" else ws_kernel), {"WS": kind != "tma"}


def _launch(kind, bm, bn, bk, warps, stages, x, w, b, y, gelu):
    M, K = x.shape
    N = w.shape[1]
    fn, extra = _variant(kind)
    tiles_m, tiles_n = triton.cdiv(M, bm), triton.cdiv(N, bn)
    if kind.startswith("wsp"):
        extra = {**extra, "PROGRAMS": min(SMS, tiles_m * tiles_n)}
        grid = (extra["PROGRAMS"],)
    else:
        grid = (tiles_m * tiles_n,) if kind == "ws grouped" else (tiles_m, tiles_n)
    return lambda: fn[grid](x, w, b, y, M, N, K, bm, bn, bk, gelu, **extra, num_warps=warps, num_stages=stages)


def diagnose() -> None:
    """Is it TMA or the warp specialization? The same descriptor kernel with WS off and on, 4 and 8 warps,
    with and without the GELU epilogue, on vit's proj shape."""
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    M, N, K = 6304, 768, 768
    torch.manual_seed(0)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    w = torch.randn(K, N, device="cuda", dtype=torch.float16) / K ** 0.5
    b = torch.randn(N, device="cuda", dtype=torch.float16)
    for gelu in (False, True):
        ref = torch.addmm(b, x, w).float()
        ref = torch.nn.functional.gelu(ref) if gelu else ref
        for ws, warps in ((False, 4), (False, 8), (True, 4)):
            y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
            ws_kernel[(triton.cdiv(M, 128), triton.cdiv(N, 128))](x, w, b, y, M, N, K, 128, 128, 64, gelu, ws,
                                                                  num_warps=warps, num_stages=3)
            torch.cuda.synchronize()
            err = float((y.float() - ref).abs().max() / ref.abs().max())
            bad = int((~torch.isclose(y.float(), ref, rtol=2e-2, atol=2e-2)).sum())
            print(f"gelu {gelu!s:5s} ws {ws!s:5s} warps {warps}: rel err {err:.1e}, {bad} of {M * N} wrong",
                  flush=True)


def compile_only() -> None:
    from triton.backends.compiler import GPUTarget
    sig = {"x": "*fp16", "w": "*fp16", "bias": "*fp16", "y": "*fp16"}
    for kind, bm, bn, bk, warps, stages in VARIANTS:
        fn, extra = _variant(kind)
        consts = {"M": 6304, "N": 3072, "K": 768, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GELU": True,
                  **extra, **({"PROGRAMS": SMS} if kind.startswith("wsp") else {})}
        s = {**sig, **{k: "constexpr" for k in consts}}
        try:
            c = triton.compile(triton.compiler.ASTSource(fn=fn, signature=s, constexprs=consts),
                               target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{kind:11s} {(bm, bn, bk, warps, stages)}: failed {type(e).__name__}: {str(e)[:200]}")
            continue
        ptx = c.asm["ptx"]
        print(f"{kind:11s} {(bm, bn, bk, warps, stages)}: warps {c.metadata.num_warps}, shared "
              f"{c.metadata.shared} B, setmaxnreg {ptx.count('setmaxnreg')}, local stores (spills) "
              f"{ptx.count('st.local')}, scratch {c.metadata.global_scratch_size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--all", action="store_true", help="more variants and shapes")
    ap.add_argument("--diagnose", action="store_true", help="errors only: the TMA kernel with and without WS")
    args = ap.parse_args()
    if args.diagnose:
        diagnose()
        return
    if args.all:
        VARIANTS.extend(MORE)
        SHAPES.extend(MORE_SHAPES)
    if args.compile_only:
        compile_only()
        return
    from triton.testing import do_bench_cudagraph
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    print(f"card: {torch.cuda.get_device_name()}; triton {triton.__version__}", flush=True)
    rows = []
    for name, M, N, K, gelu in SHAPES:
        x, w, b, _, ref = gemm_operands(M, N, K, "gelu" if gelu else "")
        ref = ref.half()  # (the check compares with the fp16 reference, as before)
        cublas = do_bench_cudagraph(lambda x=x, w=w, b=b: torch.addmm(b, x, w), rep=200)
        flops = 2 * M * N * K
        print(f"{name:9s} {M}x{N}x{K}{' +gelu' if gelu else ''} cuBLAS(no gelu) {cublas * 1e3:7.1f} us "
              f"{flops / cublas / 1e9:5.0f} TFLOP/s", flush=True)
        for kind, *tile in VARIANTS:
            y = torch.empty(M, N, device="cuda", dtype=torch.float16)
            make = functools.partial(_launch, kind, *tile, x, w, b, y, gelu)
            row = time_variant(f"{kind:11s} {tuple(tile)}", make, y, ref, flops, cublas)
            if row:
                rows.append({"gemm": name, "M": M, "N": N, "K": K, "gelu": gelu, "kind": kind, "tile": tile, **row})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
