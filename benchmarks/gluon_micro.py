"""Hand-written Gluon Hopper GEMMs (TMA producer warp + wgmma consumer warpgroups, persistent tiles) against
trtjit's pointer-load loop and cuBLAS, on the transformer GEMM shapes (fp16 ``x @ W + b``, W stored [K, N] as
trtjit folds a Linear weight), with the epilogues trtjit fuses (GELU, residual add).

    python benchmarks/gluon_micro.py [--json out.json] [--kinds ws,pp,sk]   # on the GPU
    python benchmarks/gluon_micro.py --compile-only      # anywhere: sm_90 cubins, warps, shared memory, spills

Triton 3.6's automatic warp specialization computed wrong results on sm_90 (ws_micro.py). Gluon spells the
partitions, barriers and register budgets out by hand, so this measures whether that structure, written
explicitly, is both right and faster before the compiler uses it.

Result on an H100 (2026-12-06, runs/2026-12-06-s3/gluon_ws.log, gluon_sk.log): every variant is exact (the
pointer loop's errors), and the stream-K flags come back lowered over repeated launches, but none is faster
than trtjit's pointer loop. The persistent kernels match it within a few percent on qkv and fc1 and lose on
the residual shapes; stream-K loses more, to its fp32 partials. A stream-K template built on this
(commit 44bf612) made vit_b_16 12% slower and was reverted.

The ping-pong variants (``pp_gemm``: two consumer warpgroups on alternate whole tiles, so one's epilogue
overlaps the other's MMAs) were added after that run: they compile for sm_90 (12 warps, no spills) and have
not run on a GPU yet. Their smoke run goes first, like stream-K's.
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
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.ws_micro import _gelu  # noqa: E402  (a triton.jit helper: Gluon kernels call it as it is)

SMS = 132
SHAPES = [("vit qkv", 6304, 2304, 768, ""), ("vit proj", 6304, 768, 768, "res"),
          ("vit fc1", 6304, 3072, 768, "gelu"), ("vit fc2", 6304, 768, 3072, "res"),
          ("bert fc2", 4096, 768, 3072, "res")]


@gluon.jit
def _tile_of(t, M: gl.constexpr, N: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, N_FAST: gl.constexpr):
    tm: gl.constexpr = (M + BM - 1) // BM
    tn: gl.constexpr = (N + BN - 1) // BN
    if N_FAST:
        return (t // tn) * BM, (t % tn) * BN
    else:
        return (t % tm) * BM, (t // tm) * BN


@gluon.jit
def _load_stage(a_desc, b_desc, a_bufs, b_bufs, ready, empty, i, off_m, off_n, k, NBUF: gl.constexpr):
    """The producer's step i: once the consumers have released stage i % NBUF, TMA-load A [off_m, k] and
    B [k, off_n] into it, signalling its ready barrier when they land."""
    s = i % NBUF
    mbarrier.wait(empty.index(s), ((i // NBUF) & 1) ^ 1)
    mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + b_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(a_desc, [off_m, k], ready.index(s), a_bufs.index(s))
    tma.async_copy_global_to_shared(b_desc, [k, off_n], ready.index(s), b_bufs.index(s))


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr,
              BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr, PROGRAMS: gl.constexpr,
              N_FAST: gl.constexpr):
    """One warp: stream A and B tiles of every tile this program owns into the ring of NBUF stages."""
    tiles: gl.constexpr = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    ksteps: gl.constexpr = (K + BK - 1) // BK
    i = 0
    for t in range(gl.program_id(0), tiles, PROGRAMS):
        off_m, off_n = _tile_of(t, M, N, BM, BN, N_FAST)
        for kk in range(ksteps):
            _load_stage(a_desc, b_desc, a_bufs, b_bufs, ready, empty, i, off_m, off_n, kk * BK, NBUF)
            i += 1


@gluon.jit
def _consumer(a_bufs, b_bufs, c_smem, ready, empty, y_desc, bias, res, M: gl.constexpr, N: gl.constexpr,
              K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr,
              PROGRAMS: gl.constexpr, N_FAST: gl.constexpr, EPI: gl.constexpr):
    """The kernel's warps: wgmma over the ring (one MMA in flight), release each stage once the MMA that read
    it has retired, then bias (+ GELU or + residual) and a TMA store of the tile."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, BN, 16])
    tiles: gl.constexpr = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    ksteps: gl.constexpr = (K + BK - 1) // BK
    i = 0
    for t in range(gl.program_id(0), tiles, PROGRAMS):
        off_m, off_n = _tile_of(t, M, N, BM, BN, N_FAST)
        acc, i = _k_loop(gl.zeros((BM, BN), dtype=gl.float32, layout=mma), a_bufs, b_bufs, ready, empty, i, ksteps,
                         NBUF)
        acc = _k_loop_end(acc, empty, i, NBUF)
        _epilogue(acc, off_m, off_n, bias, res, c_smem, y_desc, M, N, BM, BN, EPI)
    tma.store_wait(0)


@gluon.jit
def _k_loop(acc, a_bufs, b_bufs, ready, empty, i, ksteps, NBUF: gl.constexpr):
    """``ksteps`` k steps from ring position i: wgmma on each stage once it has landed, one MMA in flight,
    releasing each stage once the MMA that read it has retired (Triton syncs the partition's warps before its
    one thread arrives). Returns the accumulator (its last MMA still in flight) and the next position."""
    for kk in range(ksteps):
        s = i % NBUF
        mbarrier.wait(ready.index(s), (i // NBUF) & 1)
        acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(1, deps=(acc,))
        mbarrier.arrive(empty.index((i + NBUF - 1) % NBUF), pred=kk > 0)
        i += 1
    return acc, i


@gluon.jit
def _k_loop_end(acc, empty, i, NBUF: gl.constexpr):
    """Retire the last MMA of a ``_k_loop`` and release its stage."""
    acc = warpgroup_mma_wait(0, deps=(acc,))
    mbarrier.arrive(empty.index((i + NBUF - 1) % NBUF))
    return acc


@gluon.jit
def _epilogue(acc, off_m, off_n, bias, res, c_smem, y_desc, M: gl.constexpr, N: gl.constexpr, BM: gl.constexpr,
              BN: gl.constexpr, EPI: gl.constexpr, RES_SMEM: gl.constexpr = False):
    """Bias (+ GELU or + residual) on an accumulator tile, then its TMA store through ``c_smem``. With
    RES_SMEM the residual tile is already in ``c_smem`` (TMA-loaded after the previous store drained)."""
    rn = off_n + gl.arange(0, BN, layout=gl.SliceLayout(0, acc.type.layout))
    acc = acc + gl.expand_dims(gl.load(bias + rn, mask=rn < N, other=0.0).to(gl.float32), 0)
    if EPI == "gelu":
        acc = _gelu(acc)
    if EPI == "res":
        if RES_SMEM:
            acc = acc + c_smem.load(acc.type.layout).to(gl.float32)
        else:
            rm = off_m + gl.arange(0, BM, layout=gl.SliceLayout(1, acc.type.layout))
            ptrs = res + gl.expand_dims(rm, 1) * N + gl.expand_dims(rn, 0)
            acc = acc + gl.load(ptrs, mask=gl.expand_dims(rm < M, 1), other=0.0).to(gl.float32)
    if not RES_SMEM:
        tma.store_wait(0)
    c_smem.store(acc.to(gl.float16))
    fence_async_shared()
    tma.async_copy_shared_to_global(y_desc, [off_m, off_n], c_smem)


@gluon.jit
def _pp_consumer(a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, bias, res, M: gl.constexpr, N: gl.constexpr,
                 K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr,
                 PROGRAMS: gl.constexpr, N_FAST: gl.constexpr, EPI: gl.constexpr, ROLE: gl.constexpr):
    """Ping-pong: one warpgroup owns every other tile of the program (local tile j with j % 2 == ROLE),
    whole. The producer fills the ring tile after tile, so while one warpgroup runs its epilogue the other's
    stages are already landing and its MMAs keep the tensor cores busy.

    The main loops take turns (``turn``: warpgroup r waits on turn[r], then hands over on turn[1 - r]). Without
    that, the second warpgroup would wait on a ready barrier many phases ahead of it, and an mbarrier wait
    only tells the parity of a phase: it would take the first warpgroup's stage for its own."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, BN, 16])
    tiles: gl.constexpr = ((M + BM - 1) // BM) * ((N + BN - 1) // BN)
    ksteps: gl.constexpr = (K + BK - 1) // BK
    c_smem = c_bufs.index(ROLE)
    j = ROLE
    n = 0  # main loops this warpgroup has run
    for t in range(gl.program_id(0) + ROLE * PROGRAMS, tiles, 2 * PROGRAMS):
        off_m, off_n = _tile_of(t, M, N, BM, BN, N_FAST)
        acc = gl.zeros((BM, BN), dtype=gl.float32, layout=mma)
        if ROLE == 1:
            mbarrier.wait(turn.index(1), n & 1)
        else:
            mbarrier.wait(turn.index(0), (n - 1) & 1, pred=n > 0)  # warpgroup 0 starts the first tile
        # from the ring position of this tile's first stage (the producer's order)
        acc, i = _k_loop(acc, a_bufs, b_bufs, ready, empty, j * ksteps, ksteps, NBUF)
        mbarrier.arrive(turn.index(1 - ROLE))  # every stage of this tile has landed: the other may start
        n += 1
        acc = _k_loop_end(acc, empty, i, NBUF)
        _epilogue(acc, off_m, off_n, bias, res, c_smem, y_desc, M, N, BM, BN, EPI)
        j += 2
    tma.store_wait(0)


# The shared-memory layout of every 16-bit tile whose rows span 128 bytes or more (B, C and residual tiles).
SWIZZLE_128: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


@gluon.jit
def _ring(x, w, y, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
          BK: gl.constexpr, NBUF: gl.constexpr):
    """What every kernel here sets up: device-side TMA descriptors of x [M, K], w [K, N] and y [M, N] (all
    row-contiguous), the ring of NBUF A and B stages, and its ready and empty barriers (one arrival each)."""
    a_l: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(128, BK * 2), element_bitwidth=16, rank=2)
    a_desc = tma.make_tensor_descriptor(x, [M, K], [K, 1], [BM, BK], a_l)
    b_desc = tma.make_tensor_descriptor(w, [K, N], [N, 1], [BK, BN], SWIZZLE_128)
    y_desc = tma.make_tensor_descriptor(y, [M, N], [N, 1], [BM, BN], SWIZZLE_128)
    a_bufs = gl.allocate_shared_memory(gl.float16, [NBUF, BM, BK], a_l)
    b_bufs = gl.allocate_shared_memory(gl.float16, [NBUF, BK, BN], SWIZZLE_128)
    ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(NBUF):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    return a_desc, b_desc, y_desc, a_bufs, b_bufs, ready, empty


@gluon.jit
def pp_gemm(x, w, bias, res, y, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr,
            BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr,
            EPI: gl.constexpr, CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """ws_gemm with two consumer warpgroups on alternate tiles (the kernel's 4 warps and a 4-warp worker)
    instead of two on halves of each tile, and the producer warp as a second worker."""
    a_desc, b_desc, y_desc, a_bufs, b_bufs, ready, empty = _ring(x, w, y, M, N, K, BM, BN, BK, NBUF)
    c_bufs = gl.allocate_shared_memory(gl.float16, [2, BM, BN], SWIZZLE_128)
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for r in gl.static_range(2):
        mbarrier.init(turn.index(r), count=1)
    gl.warp_specialize([
        (_pp_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, bias, res, M, N, K, BM, BN, BK, NBUF,
                        PROGRAMS, N_FAST, EPI, 0)),
        (_pp_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, bias, res, M, N, K, BM, BN, BK, NBUF,
                        PROGRAMS, N_FAST, EPI, 1)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, BM, BN, BK, NBUF, PROGRAMS, N_FAST)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


@gluon.jit
def ws_gemm(x, w, bias, res, y, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr,
            BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr,
            EPI: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """y = epilogue(x @ w + bias): x [M, K], w [K, N], y [M, N] fp16, all row-contiguous. Descriptors are made
    on the device (global scratch), so the launch takes plain pointers."""
    a_desc, b_desc, y_desc, a_bufs, b_bufs, ready, empty = _ring(x, w, y, M, N, K, BM, BN, BK, NBUF)
    c_smem = gl.allocate_shared_memory(gl.float16, [BM, BN], SWIZZLE_128)
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, c_smem, ready, empty, y_desc, bias, res, M, N, K, BM, BN, BK, NBUF, PROGRAMS,
                     N_FAST, EPI)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, BM, BN, BK, NBUF, PROGRAMS, N_FAST)),
    ], [1], [PRODUCER_REGS])


@gluon.jit
def _sk_span(M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
             BK: gl.constexpr, PROGRAMS: gl.constexpr):
    """Stream-K: the (tile, k step) iterations, tile-major, split evenly over the programs; this program's
    [start, end) and the split's base and remainder (program q gets base + (q < extra) iterations)."""
    ksteps: gl.constexpr = (K + BK - 1) // BK
    total: gl.constexpr = ((M + BM - 1) // BM) * ((N + BN - 1) // BN) * ksteps
    base: gl.constexpr = total // PROGRAMS
    extra: gl.constexpr = total % PROGRAMS
    p = gl.program_id(0)
    start = p * base + gl.minimum(p, extra)
    return start, start + base + (p < extra).to(gl.int32)


@gluon.jit
def _sk_producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M: gl.constexpr, N: gl.constexpr,
                 K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr,
                 PROGRAMS: gl.constexpr, N_FAST: gl.constexpr):
    ksteps: gl.constexpr = (K + BK - 1) // BK
    start, end = _sk_span(M, N, K, BM, BN, BK, PROGRAMS)
    i = 0
    for it in range(start, end):
        tile = it // ksteps
        off_m, off_n = _tile_of(tile, M, N, BM, BN, N_FAST)
        _load_stage(a_desc, b_desc, a_bufs, b_bufs, ready, empty, i, off_m, off_n, (it - tile * ksteps) * BK, NBUF)
        i += 1


@gluon.jit
def _sk_consumer(a_bufs, b_bufs, c_smem, ready, empty, rbar, y_desc, r_desc, bias, res, ws, flags,
                 M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
                 BK: gl.constexpr, NBUF: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr,
                 EPI: gl.constexpr, RES_TMA: gl.constexpr):
    """Each unit is one tile's k range inside this program's span. A unit that starts past k = 0 leaves an
    fp32 partial in its program's workspace slot and raises its flag; the unit holding k = 0 (it runs last in
    its program, while the later parts ran first in theirs) adds the partials of the programs that follow,
    in order, then runs the epilogue. So the sum order is fixed and every flag is lowered again for the next
    launch."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, BN, 16])
    ksteps: gl.constexpr = (K + BK - 1) // BK
    total: gl.constexpr = ((M + BM - 1) // BM) * ((N + BN - 1) // BN) * ksteps
    base: gl.constexpr = total // PROGRAMS
    extra: gl.constexpr = total % PROGRAMS
    p = gl.program_id(0)
    start, end = _sk_span(M, N, K, BM, BN, BK, PROGRAMS)
    lm = gl.arange(0, BM, layout=gl.SliceLayout(1, mma))
    ln = gl.arange(0, BN, layout=gl.SliceLayout(0, mma))
    slot = gl.expand_dims(lm, 1) * BN + gl.expand_dims(ln, 0)
    i = 0
    nres = 0
    it = start
    while it < end:
        tile = it // ksteps
        k0 = it - tile * ksteps
        k1 = gl.minimum(ksteps, k0 + end - it)
        off_m, off_n = _tile_of(tile, M, N, BM, BN, N_FAST)
        acc = gl.zeros((BM, BN), dtype=gl.float32, layout=mma)
        for kk in range(k0, k1):
            s = i % NBUF
            mbarrier.wait(ready.index(s), (i // NBUF) & 1)
            acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s), acc, is_async=True)
            if RES_TMA:
                if kk == 0:
                    tma.store_wait(0)
                    mbarrier.expect(rbar, r_desc.block_type.nbytes)
                    tma.async_copy_global_to_shared(r_desc, [off_m, off_n], rbar, c_smem)
            acc = warpgroup_mma_wait(1, deps=(acc,))
            mbarrier.arrive(empty.index((i + NBUF - 1) % NBUF), pred=kk > k0)
            i += 1
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(empty.index((i + NBUF - 1) % NBUF))
        if k0 > 0:
            gl.store(ws + p * (BM * BN) + slot, acc)
            gl.thread_barrier()
            gl.atomic_xchg(flags + p, 1, sem="release", scope="gpu")
        else:
            done = k1
            q = p + 1
            while done < ksteps:
                got = 0
                while got != 1:
                    got = gl.atomic_cas(flags + q, 1, 0, sem="acquire", scope="gpu")
                acc += gl.load(ws + q * (BM * BN) + slot, cache_modifier=".cg")
                done += base + (q < extra).to(gl.int32)
                q += 1
            if RES_TMA:
                mbarrier.wait(rbar, nres & 1)
                nres += 1
            _epilogue(acc, off_m, off_n, bias, res, c_smem, y_desc, M, N, BM, BN, EPI, RES_TMA)
        it += k1 - k0
    tma.store_wait(0)


@gluon.jit
def sk_gemm(x, w, bias, res, y, ws, flags, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BM: gl.constexpr,
            BN: gl.constexpr, BK: gl.constexpr, NBUF: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr,
            EPI: gl.constexpr, RES_TMA: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """ws_gemm's partitions over a stream-K split: every program gets the same number of k steps, so the
    last wave is not a partial one. ws holds PROGRAMS fp32 [BM, BN] partials, flags PROGRAMS zeroed int32."""
    a_desc, b_desc, y_desc, a_bufs, b_bufs, ready, empty = _ring(x, w, y, M, N, K, BM, BN, BK, NBUF)
    r_desc = tma.make_tensor_descriptor(res, [M, N], [N, 1], [BM, BN], SWIZZLE_128)
    c_smem = gl.allocate_shared_memory(gl.float16, [BM, BN], SWIZZLE_128)
    rbar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(rbar, count=1)
    gl.warp_specialize([
        (_sk_consumer, (a_bufs, b_bufs, c_smem, ready, empty, rbar, y_desc, r_desc, bias, res, ws, flags, M, N, K,
                        BM, BN, BK, NBUF, PROGRAMS, N_FAST, EPI, RES_TMA)),
        (_sk_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, BM, BN, BK, NBUF, PROGRAMS,
                        N_FAST)),
    ], [1], [PRODUCER_REGS])


# Stream-K variants: (BM, BN, BK, NBUF, warps, N_FAST, RES_TMA)
SK_VARIANTS = [(128, 256, 64, 3, 8, False, False), (128, 256, 64, 3, 8, False, True),
               (128, 256, 64, 3, 8, True, True), (128, 128, 64, 4, 8, False, True),
               (128, 128, 64, 4, 8, True, True)]


def _sk_launch(v, x, w, b, r, y, epi):
    bm, bn, bk, nbuf, warps, n_fast, res_tma = v
    M, K = x.shape
    N = w.shape[1]
    ws = torch.empty(SMS * bm * bn, device=x.device, dtype=torch.float32)
    flags = torch.zeros(SMS, device=x.device, dtype=torch.int32)
    return lambda: sk_gemm[(SMS,)](x, w, b, r, y, ws, flags, M, N, K, bm, bn, bk, nbuf, SMS, n_fast, epi,
                                   res_tma and epi == "res", 40, num_warps=warps, maxnreg=168)


# (BM, BN, BK, NBUF, warps, N_FAST, maxnreg, programs per SM; 0: one program per tile). Triton waits for
# every warp of the consumer partition (bar.sync) before its one thread arrives on an "empty" barrier, so both
# consumer warpgroups have retired their MMA on a stage before the producer refills it.
VARIANTS = [(128, 256, 64, 3, 8, False, 168, 1), (128, 128, 64, 4, 8, False, 168, 1)]
# Timed on an H100 (runs/2026-12-06-s3/gluon_ws.log) and dropped: N fastest, one program per tile, 256x128 tiles,
# 4-warp consumers at two programs per SM. None beat the first two.


# Ping-pong variants, not yet timed: (BM, BN, BK, NBUF, N_FAST). 4 + 4 consumer warps and 1 producer warp;
# maxnreg 168 over 12 warps leaves each consumer warpgroup 232 registers.
PP_VARIANTS = [(128, 128, 64, 4, False), (64, 256, 64, 3, False), (128, 128, 64, 4, True)]


def _pp_launch(v, x, w, b, r, y, epi):
    bm, bn, bk, nbuf, n_fast = v
    M, K = x.shape
    N = w.shape[1]
    progs = min(SMS, triton.cdiv(M, bm) * triton.cdiv(N, bn))
    return lambda: pp_gemm[(progs,)](x, w, b, r, y, M, N, K, bm, bn, bk, nbuf, progs, n_fast, epi, 232, 40,
                                     num_warps=4, maxnreg=168)


def _launch(v, x, w, b, r, y, epi):
    bm, bn, bk, nbuf, warps, n_fast, maxnreg, per_sm = v
    M, K = x.shape
    N = w.shape[1]
    tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
    progs = min(SMS * per_sm, tiles) if per_sm else tiles
    return lambda: ws_gemm[(progs,)](x, w, b, r, y, M, N, K, bm, bn, bk, nbuf, progs, n_fast, epi, 40,
                                     num_warps=warps, maxnreg=maxnreg)


def _compile(fn, sig, consts, warps, maxnreg, label) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    s = {**sig, **{k: "constexpr" for k in consts}}
    try:
        c = triton.compile(GluonASTSource(fn=fn, signature=s, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": warps, "maxnreg": maxnreg})
    except Exception as e:  # noqa: BLE001 - report and go on
        while e.__cause__ or e.__context__:
            e = e.__cause__ or e.__context__
        print(f"{label}: failed {type(e).__name__}: {str(e)[-400:]}", flush=True)
        return
    ptx = c.asm["ptx"]
    print(f"{label}: warps {c.metadata.num_warps}, shared {c.metadata.shared} B, setmaxnreg "
          f"{ptx.count('setmaxnreg')}, spills {ptx.count('st.local')}, scratch {c.metadata.global_scratch_size}",
          flush=True)


def compile_only() -> None:
    sig = {"x": "*fp16", "w": "*fp16", "bias": "*fp16", "res": "*fp16", "y": "*fp16"}
    shape = {"M": 6304, "N": 3072, "K": 768}
    for v in VARIANTS:
        bm, bn, bk, nbuf, warps, n_fast, maxnreg, per_sm = v
        for epi in ("", "gelu", "res"):
            _compile(ws_gemm, sig, {**shape, "BM": bm, "BN": bn, "BK": bk, "NBUF": nbuf, "PROGRAMS": SMS,
                                    "N_FAST": n_fast, "EPI": epi, "PRODUCER_REGS": 40}, warps, maxnreg,
                     f"ws {v} {epi!r}")
    for v in PP_VARIANTS:
        bm, bn, bk, nbuf, n_fast = v
        for epi in ("", "gelu", "res"):
            _compile(pp_gemm, sig, {**shape, "BM": bm, "BN": bn, "BK": bk, "NBUF": nbuf, "PROGRAMS": SMS,
                                    "N_FAST": n_fast, "EPI": epi, "CONSUMER_REGS": 232, "PRODUCER_REGS": 40}, 4, 168,
                     f"pp {v} {epi!r}")
    sig = {**sig, "ws": "*fp32", "flags": "*i32"}
    for v in SK_VARIANTS:
        bm, bn, bk, nbuf, warps, n_fast, res_tma = v
        for epi in ("", "gelu", "res"):
            _compile(sk_gemm, sig, {**shape, "BM": bm, "BN": bn, "BK": bk, "NBUF": nbuf, "PROGRAMS": SMS,
                                    "N_FAST": n_fast, "EPI": epi, "RES_TMA": res_tma and epi == "res",
                                    "PRODUCER_REGS": 40}, warps, 168, f"sk {v} {epi!r}")


def smoke(kind: str) -> None:
    """Run each ``kind`` ("sk" or "pp") variant three times on vit's fc2 (+ residual) and check it; exit 1 on a
    wrong result. Run in a time-limited subprocess: a program waiting on a flag or barrier forever hangs."""
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    from benchmarks.tma_micro import gemm_operands

    M, N, K = 6304, 768, 3072
    x, w, b, r, ref = gemm_operands(M, N, K, "res")
    bad = 0
    for v in SK_VARIANTS if kind == "sk" else PP_VARIANTS:
        y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
        fn = (_sk_launch if kind == "sk" else _pp_launch)(v, x, w, b, r, y, "res")
        for _ in range(3):  # stream-K's flags must come back lowered for the next launch
            fn()
        torch.cuda.synchronize()
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        print(f"smoke {kind} {v}: rel err {err:.1e}", flush=True)
        bad += not err < 1e-2
    sys.exit(1 if bad else 0)


def _smoke_ok(kind: str) -> bool:
    import subprocess
    try:
        ok = subprocess.run([sys.executable, __file__, "--smoke", kind], timeout=90).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if not ok:
        print(f"{kind} smoke run failed or hung: its variants are skipped", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--smoke", choices=("sk", "pp"), help="run each stream-K or ping-pong variant once and check it")
    ap.add_argument("--kinds", default="ws,pp,sk", help="variant families to time (ws, pp, sk)")
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))
    if "ws" not in kinds:
        VARIANTS.clear()
    if args.compile_only:
        compile_only()
        return
    if args.smoke:
        smoke(args.smoke)
        return
    if "sk" not in kinds or not _smoke_ok("sk"):  # a kernel waiting forever would hang the run: try each first
        SK_VARIANTS.clear()
    pp_ok = "pp" in kinds and _smoke_ok("pp")
    from triton.testing import do_bench_cudagraph

    from benchmarks.tma_micro import gemm_operands, time_variant
    from benchmarks.ws_micro import _launch as ptr_launch
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    print(f"card: {torch.cuda.get_device_name()}; triton {triton.__version__}", flush=True)
    rows = []
    for name, M, N, K, epi in SHAPES:
        x, w, b, r, ref = gemm_operands(M, N, K, epi)
        cublas = do_bench_cudagraph(lambda x=x, w=w, b=b: torch.addmm(b, x, w), rep=200)
        flops = 2 * M * N * K
        print(f"{name:9s} {M}x{N}x{K} {epi or 'bias':4s} cuBLAS(bias only) {cublas * 1e3:7.1f} us "
              f"{flops / cublas / 1e9:5.0f} TFLOP/s", flush=True)
        y = torch.empty(M, N, device="cuda", dtype=torch.float16)
        if epi != "res":
            time_variant("ptr 128x256 (trtjit loop)", functools.partial(ptr_launch, "ptr", 128, 256, 64, 8, 3, x, w,
                                                                        b, y, epi == "gelu"), y, ref, flops, cublas)
        for v in VARIANTS:
            y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
            row = time_variant(f"ws {v}", functools.partial(_launch, v, x, w, b, r, y, epi), y, ref, flops, cublas)
            if row:
                rows.append({"gemm": name, "M": M, "N": N, "K": K, "epi": epi, "variant": v, **row})
        for v in PP_VARIANTS if pp_ok else ():
            y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
            row = time_variant(f"pp {v}", functools.partial(_pp_launch, v, x, w, b, r, y, epi), y, ref, flops, cublas)
            if row:
                rows.append({"gemm": name, "M": M, "N": N, "K": K, "epi": epi, "variant": ("pp", *v), **row})
        for v in SK_VARIANTS:
            if v[-1] and epi != "res":
                continue
            y = torch.full((M, N), float("nan"), device="cuda", dtype=torch.float16)
            make = functools.partial(_sk_launch, v, x, w, b, r, y, epi)
            row = time_variant(f"sk {v}", make, y, ref, flops, cublas)
            if row:
                rows.append({"gemm": name, "M": M, "N": N, "K": K, "epi": epi, "variant": ("sk", *v), **row})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
