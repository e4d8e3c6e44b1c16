"""Stem-convolution micro-benchmark on the GPU: resnet50's 7x7 / stride 2 conv over 3 input channels
(fp16, batch 32), in the implicit-GEMM forms trtjit could emit, against cuDNN.

    python benchmarks/stem_micro.py [--batch 32] [--json out.json]

The reduction runs over K = C * KH * KW = 147, far below a tile's usual depth, so the A-tile gather (its
index math, masks and load shape) decides the time, not the tensor cores. Variants:
  gather  K in (c, kh, kw) order, BLOCK_K 64, per-element div/mod (the generic conv loop);
  rows    one (c, kh) pair per step, the KW taps as a 16-wide K tile (contiguous in an NCHW row);
  nhwc    an NHWC input, one kh per step, the KW * C contiguous (kw, c) run as a 32-wide K tile.
Nothing here is used by the compiler. The "rows" form was written into codegen/gemm.py on 2026-12-04 and
passed the CPU tests, but was taken out again: no device time was left to measure it, and for a 3x3 stem
(mobilenet_v2, K = 27) it runs 9 K steps where the generic loop runs one. Run this first, then decide.
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


@triton.jit
def out_tile(OH: tl.constexpr, OW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's output rows (pixels n, oh, ow) and columns (output channels)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    return rm, rn, rm // (OH * OW), (rm // OW) % OH, rm % OW


@triton.jit
def store_nhwc(y, acc, rm, rn, n, oh, ow, M, OH: tl.constexpr, OW: tl.constexpr, OC: tl.constexpr):
    tl.store(y + n * (OH * OW * OC) + (oh * OW + ow) * OC + rn, acc.to(tl.float16), mask=(rm < M) & (rn < OC))


@triton.jit
def stem_gather(x, w, y, M, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
                OC: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, S: tl.constexpr, P: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm, rn, n, oh, ow = out_tile(OH, OW, BLOCK_M, BLOCK_N)
    K: tl.constexpr = C * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        rk = k + tl.arange(0, BLOCK_K)
        c = rk // (KH * KW)
        kh = (rk // KW) % KH
        kw = rk % KW
        ih = oh * S - P + kh[None, :]
        iw = ow * S - P + kw[None, :]
        a_mask = (rm < M) & (rk[None, :] < K) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(x + n * (C * H * W) + c[None, :] * (H * W) + ih * W + iw, mask=a_mask, other=0.0)
        b = tl.load(w + rn * K + rk[:, None], mask=(rk[:, None] < K) & (rn < OC), other=0.0)  # OIHW weight
        acc = tl.dot(a, b, acc)
    store_nhwc(y, acc, rm, rn, n, oh, ow, M, OH, OW, OC)


@triton.jit
def stem_rows(x, w, y, M, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr,
              OC: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, S: tl.constexpr, P: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NHWC: tl.constexpr):
    """A K step is one contiguous run of input elements: the KW taps of one (channel, filter row) of an NCHW
    input (OIHW weight), or with NHWC the KW * C (kw, c) elements of one filter row (OHWI weight)."""
    rm, rn, n, oh, ow = out_tile(OH, OW, BLOCK_M, BLOCK_N)
    RUN: tl.constexpr = KW * C if NHWC else KW
    j = tl.arange(0, BLOCK_K)[None, :]
    iw = ow * S - P + (j // C if NHWC else j)
    col_ok = (rm < M) & (j < RUN) & (iw >= 0) & (iw < W)
    x_row = x + n * (C * H * W) + ((ow * S - P) * C + j if NHWC else iw)
    jb = tl.arange(0, BLOCK_K)[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, KH if NHWC else C * KH):
        ih = oh * S - P + (step if NHWC else step % KH)
        row = ih * (W * C) if NHWC else (step // KH) * (H * W) + ih * W
        a = tl.load(x_row + row, mask=col_ok & (ih >= 0) & (ih < H), other=0.0)
        b = tl.load(w + rn * (C * KH * KW) + step * RUN + jb, mask=(jb < RUN) & (rn < OC), other=0.0)
        acc = tl.dot(a, b, acc)
    store_nhwc(y, acc, rm, rn, n, oh, ow, M, OH, OW, OC)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    N, C, H, W, OC, KH, KW, S, P = a.batch, 3, 224, 224, 64, 7, 7, 2, 3
    OH, OW = (H + 2 * P - KH) // S + 1, (W + 2 * P - KW) // S + 1
    M = N * OH * OW
    x = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16)
    wt = torch.randn(OC, C, KH, KW, device="cuda", dtype=torch.float16) / 8
    ref = torch.nn.functional.conv2d(x, wt, stride=S, padding=P).permute(0, 2, 3, 1).float()
    flop = 2 * M * OC * C * KH * KW
    rows = []
    for label, fn in (("cudnn nchw", functools.partial(torch.nn.functional.conv2d, x, wt, stride=S, padding=P)),
                      ("cudnn nhwc", functools.partial(torch.nn.functional.conv2d, x.to(memory_format=torch.channels_last),
                                                       wt.to(memory_format=torch.channels_last), stride=S, padding=P))):
        ms = do_bench_cudagraph(fn)
        rows.append({"variant": label, "ms": ms})
        print(f"{label:28s} {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous()
    w_ohwi = wt.permute(0, 2, 3, 1).contiguous()
    ms = do_bench_cudagraph(lambda: x.permute(0, 2, 3, 1).contiguous())
    rows.append({"variant": "nchw->nhwc copy", "ms": ms})
    print(f"{'nchw->nhwc copy':28s} {ms * 1e3:8.1f} us", flush=True)
    for name, kern, xin, win, bks, kw in (("gather", stem_gather, x, wt, (32, 64, 128), {}),
                                          ("rows", stem_rows, x, wt, (16,), {"NHWC": False}),
                                          ("nhwc", stem_rows, x_nhwc, w_ohwi, (32,), {"NHWC": True})):
        for bm, bn, warps, stages in ((128, 64, 4, 3), (128, 64, 8, 3), (256, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3)):
            for bk in bks:
                out = torch.empty(N, OH, OW, OC, device="cuda", dtype=torch.float16)
                run = functools.partial(kern[(triton.cdiv(M, bm), triton.cdiv(OC, bn))], xin, win, out, M, C, H, W, OH, OW,
                                        OC, KH, KW, S, P, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
                                        num_stages=stages, **kw)
                label = f"{name} {bm}x{bn}x{bk} w{warps} s{stages}"
                try:
                    run()
                    err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
                    ms = do_bench_cudagraph(run)
                except Exception as e:  # a variant that does not compile is reported, not fatal
                    print(f"{label}: {type(e).__name__} {str(e)[:160]}", flush=True)
                    continue
                rows.append({"variant": label, "ms": ms, "err": err})
                print(f"{label:28s} {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s err {err:.1e}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
