"""Wave-tail split for large GEMMs: the rows that fill whole waves of big tiles keep them, the rows of the
last, partly empty wave get smaller tiles in the same launch. Against trtjit's one-tile-size kernel and
cuBLAS, on vit_b_16's GEMM shapes (fp16 ``x @ W + b``, W stored [K, N], optional GELU).

    python benchmarks/tail_micro.py [--json out.json]     # on the GPU

vit's four layer GEMMs all have M = 6304 = 44 * 128 + 672 rows. In 128x128 tiles (fc2, proj: 6 column
blocks) that is 300 tiles for 132 SMs: two full waves and a third of 36 tiles, while 96 SMs wait. Here the
first 44 row blocks (264 tiles, exactly two waves) run as before and the last 672 rows run as 64x64 tiles:
132 of them, one wave of quarter-size tiles. Stream-K (gluon_micro.py) spreads the tail too, but paid for
its fp32 partials; this split needs none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.ws_micro import ptr_tile  # noqa: E402

SMS = 132
# (name, M, N, K, gelu, trtjit's tile (BM, BN, warps, stages), N fastest)
SHAPES = [("vit fc2", 6304, 768, 3072, False, (128, 128, 8, 3), True),
          ("vit proj", 6304, 768, 768, False, (128, 128, 8, 3), False),
          ("vit qkv", 6304, 2304, 768, False, (128, 256, 8, 3), False),
          ("vit fc1", 6304, 3072, 768, True, (128, 256, 8, 3), False),
          ("bert fc2", 4096, 768, 3072, False, (128, 128, 8, 3), False)]
TAILS = {128: [(64, 64), (64, 128)], 256: [(64, 128), (64, 256)]}


@triton.jit
def plain(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
          BK: tl.constexpr, GELU: tl.constexpr, N_FAST: tl.constexpr):
    tn: tl.constexpr = (N + BN - 1) // BN
    tm: tl.constexpr = (M + BM - 1) // BM
    pid = tl.program_id(0)
    if N_FAST:
        pm, pn = pid // tn, pid % tn
    else:
        pm, pn = pid % tm, pid // tm
    ptr_tile(x, w, bias, y, pm * BM, pn * BN, M, N, K, BM, BN, BK, GELU)


@triton.jit
def tail_split(x, w, bias, y, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, BM: tl.constexpr,
               BN: tl.constexpr, BK: tl.constexpr, GELU: tl.constexpr, N_FAST: tl.constexpr, MAIN_ROWS: tl.constexpr,
               TBM: tl.constexpr, TBN: tl.constexpr):
    """Programs [0, MAIN) tile rows [0, MAIN_ROWS) in BM x BN; the rest tile rows [MAIN_ROWS, M) in
    TBM x TBN (launched after them, so they fill the SMs the last full wave leaves)."""
    tn: tl.constexpr = (N + BN - 1) // BN
    tm: tl.constexpr = MAIN_ROWS // BM
    main: tl.constexpr = tm * tn
    pid = tl.program_id(0)
    if pid < main:
        if N_FAST:
            pm, pn = pid // tn, pid % tn
        else:
            pm, pn = pid % tm, pid // tm
        ptr_tile(x, w, bias, y, pm * BM, pn * BN, M, N, K, BM, BN, BK, GELU)
    else:
        t = pid - main
        ttn: tl.constexpr = (N + TBN - 1) // TBN
        ptr_tile(x, w, bias, y, MAIN_ROWS + (t // ttn) * TBM, (t % ttn) * TBN, M, N, K, TBM, TBN, BK, GELU)


def main_rows(M: int, N: int, bm: int, bn: int) -> int:
    """Rows covered by the whole waves of BM x BN tiles (whole row blocks, a multiple of SMS tiles if any)."""
    tn = triton.cdiv(N, bn)
    tiles = triton.cdiv(M, bm) * tn
    full = (tiles // SMS) * SMS
    return (full // tn) * bm


def main() -> None:
    from triton.testing import do_bench_cudagraph

    from benchmarks.tma_micro import gemm_operands, time_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"card: {torch.cuda.get_device_name()}; triton {triton.__version__}", flush=True)
    rows = []
    for name, M, N, K, gelu, (bm, bn, warps, stages), n_fast in SHAPES:
        x, w, b, _, ref = gemm_operands(M, N, K, "gelu" if gelu else "")
        ref = ref.half()  # (the check compares with the fp16 reference, as before)
        cublas = do_bench_cudagraph(lambda x=x, w=w, b=b: torch.addmm(b, x, w), rep=200)
        flops = 2 * M * N * K
        print(f"{name:9s} {M}x{N}x{K}{' +gelu' if gelu else ''} cuBLAS(no gelu) {cublas * 1e3:7.1f} us", flush=True)
        y = torch.empty(M, N, device="cuda", dtype=torch.float16)
        grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)

        def make_plain(y=y, x=x, w=w, b=b, grid=grid, M=M, N=N, K=K, bm=bm, bn=bn, gelu=gelu, n_fast=n_fast,
                       warps=warps, stages=stages):
            return lambda: plain[grid](x, w, b, y, M, N, K, bm, bn, 64, gelu, n_fast, num_warps=warps,
                                       num_stages=stages)
        row = time_variant(f"plain {bm}x{bn}", make_plain, y, ref, flops, cublas)
        if row:
            rows.append({"gemm": name, "variant": "plain", **row})
        mr = main_rows(M, N, bm, bn)
        for tbm, tbn in TAILS[bn]:
            y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
            g = ((mr // bm) * triton.cdiv(N, bn) + triton.cdiv(M - mr, tbm) * triton.cdiv(N, tbn),)

            def make(y=y, x=x, w=w, b=b, g=g, M=M, N=N, K=K, bm=bm, bn=bn, gelu=gelu, n_fast=n_fast, warps=warps,
                     stages=stages, mr=mr, tbm=tbm, tbn=tbn):
                return lambda: tail_split[g](x, w, b, y, M, N, K, bm, bn, 64, gelu, n_fast, mr, tbm, tbn,
                                             num_warps=warps, num_stages=stages)
            label = f"tail {bm}x{bn} rows<{mr}, then {tbm}x{tbn} ({g[0]} programs)"
            row = time_variant(label, make, y, ref, flops, cublas)
            if row:
                rows.append({"gemm": name, "variant": f"tail {tbm}x{tbn}", **row})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
