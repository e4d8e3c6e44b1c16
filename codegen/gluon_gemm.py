"""Hopper (sm_90) stream-K GEMM template, written in Gluon, with trtjit's fused pointwise epilogue.

The Triton template (``codegen.gemm``) leaves the last wave of a large GEMM partly empty: vit_b_16's
6304x768 GEMMs have 300 tiles of 128x128 for 132 SMs, so the third wave runs 36 tiles while 96 SMs idle.
This template splits the (tile, k step) iterations evenly over one program per SM instead (stream-K). Each
program is warp-specialized by hand: one producer warp streams A and B tiles through TMA into a ring of
shared-memory stages, and two consumer warpgroups run wgmma on them, then the epilogue. A tile's iterations
may span several programs; the program holding its first k step runs that part last in its own span, adds
the fp32 partials the following programs left (each ran its part first), in program order, and runs the
epilogue. So the sum order is fixed, run to run. The partials and their flags live in two engine
workspaces (``PARTIALS``, ``FLAGS``); every flag is lowered again once read, ready for the next launch.

Where it applies (``ineligible`` says why not): a 2-D fp16/bf16 matmul (batch dims folded into rows) with
row-contiguous A [M, K] and B [K, N], one output of A's dtype stored row-contiguous, K and N multiples of 8
(TMA's 16-byte strides), static shapes, an epilogue whose expressions Gluon has, and at least one full wave
of tiles. Gluon kernels do not run under Triton's interpreter, so ``passes/gemm_tactic`` records the
choice in the IR only for builds that target sm_90 alone.
"""

from __future__ import annotations

import math
import re

import torch
from trtjit.codegen.common import (
    SMS,
    BodyEmitter,
    KernelInput,
    KernelSpec,
    Operand,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    load_cast,
    offset_expr,
    store_cast,
)

from trtjit.dynamic import is_dynamic
from trtjit.errors import BuildError
from trtjit.ir import Node, Value
from trtjit.layout import contiguous_strides
from trtjit.ops import TL_HELPERS

# Engine workspaces of stream-K kernels (not IR values): fp32 partial tiles, one slot per program, and one
# int32 flag per program, zero between launches. ``workspace_numel`` sizes them.
PARTIALS = Value("@partials", 0)
FLAGS = Value("@flags", 0)
WORKSPACES = {PARTIALS: torch.float32, FLAGS: torch.int32}

KIND = "stream_k"
# (BLOCK_M, BLOCK_N, BLOCK_K, stages). 8 consumer warps (two warpgroups of 64 rows) + 1 producer warp;
# registers: the producer gets PRODUCER_REGS, the consumers what MAXNREG leaves (232 each).
TILE = (128, 256, 64, 3)
CONSUMER_WARPS = 8
MAXNREG = 168
PRODUCER_REGS = 40
MIN_WAVES = 1  # fewer tiles than programs: the split would only add fix-up traffic


def tile_of(kin: KernelInput) -> dict[str, int | str]:
    """The stream-K tile record of a GEMM (``graph.meta["tiles"]``; ``codegen.gemm.TILE_KEYS`` plus kind)."""
    bm, bn, bk, stages = TILE
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": CONSUMER_WARPS, "num_stages": stages,
            "kind": KIND}


def is_stream_k(tile: dict | None) -> bool:
    return bool(tile) and tile.get("kind") == KIND


def workspace_numel(kernel: KernelSpec) -> dict[Value, int]:
    """Elements of each workspace a kernel needs (none for kernels of other templates)."""
    if PARTIALS not in kernel.args:
        return {}
    c = kernel.constexprs
    return {PARTIALS: c["PROGRAMS"] * c["BLOCK_M"] * c["BLOCK_N"], FLAGS: c["PROGRAMS"]}


def workspace_needs(kernels: list[KernelSpec]) -> dict[Value, int]:
    """Elements of each workspace an engine's kernels need: the largest any one kernel asks for (kernels run
    one at a time, and each leaves the flags lowered)."""
    need: dict[Value, int] = {}
    for k in kernels:
        for v, n in workspace_numel(k).items():
            need[v] = max(need.get(v, 0), n)
    return need


def is_gluon_source(source: str) -> bool:
    return "@gluon.jit" in source


def _anchor(kin: KernelInput) -> Node | None:
    return next((n for n in kin.body if n.op in ("matmul", "conv2d", "conv_transpose2d")), None)


def _row_major(op: Operand, rows: tuple[int, ...]) -> bool:
    return op.layout is not None and tuple(op.layout.shape) == rows and op.layout.offset == 0 \
        and tuple(op.layout.strides) == contiguous_strides(rows)


def _problem(kin: KernelInput) -> tuple[Node, Operand, Operand, tuple[int, ...], int, int, int]:
    anchor = _anchor(kin)
    a_v, b_v = kin.body.inputs_of(anchor.name)
    A = kin.operands[kin.body.node(a_v.node).name]
    B = kin.operands[kin.body.node(b_v.node).name]
    out_shape = tuple(anchor.spec.shape)
    K = A.layout.shape[-1] if A.layout is not None else 0
    return anchor, A, B, out_shape, math.prod(out_shape[:-1]), out_shape[-1], K


def ineligible(kin: KernelInput, min_waves: int = MIN_WAVES) -> str | None:
    """Why this GEMM kernel cannot use the stream-K template (None: it can)."""
    anchor = _anchor(kin)
    if anchor is None or anchor.op != "matmul":
        return "not a matmul"
    a_v, b_v = kin.body.inputs_of(anchor.name)
    if kin.body.node(a_v.node).op != "input" or kin.body.node(b_v.node).op != "input":
        return "an operand is computed inside the kernel"
    anchor, A, B, out_shape, M, N, K = _problem(kin)
    if A.layout is None or B.layout is None:
        return "an operand is a scalar"
    if A.dtype not in (torch.float16, torch.bfloat16) or B.dtype != A.dtype:
        return f"operands are {A.dtype} x {B.dtype}, not fp16/bf16"
    if any(is_dynamic(d) for d in (*out_shape, K)):
        return "dynamic shape"
    if not _row_major(A, (*out_shape[:-1], K)):
        return "A is not row-contiguous over its rows"
    if not _row_major(B, (K, N)):
        return "B is not one row-contiguous [K, N] matrix"
    if K % 8 or N % 8:
        return f"K={K} or N={N} is not a multiple of 8 (TMA needs 16-byte row strides)"
    if len(kin.outputs) != 1 or kin.outputs[0][1].dtype != A.dtype or tuple(kin.outputs[0][1].shape) != out_shape:
        return "the epilogue does not store exactly one output of the operands' dtype and the GEMM's shape"
    lay = kin.out_layouts[0] if kin.out_layouts else None
    if lay is not None and tuple(lay.strides) != contiguous_strides(out_shape):
        return "the output is not stored row-contiguous"
    bm, bn, bk, _ = TILE
    if K <= bk:  # (Triton 3.6 also fails to lower this template with one k step)
        return f"K={K} is one k step of {bk}: nothing to split"
    if cdiv(M, bm) * cdiv(N, bn) < min_waves * SMS:
        return f"{cdiv(M, bm) * cdiv(N, bn)} tiles of {bm}x{bn}: less than {min_waves} full wave(s) of {SMS}"
    try:
        _epilogue(kin, anchor, out_shape, M, N)
    except BuildError as e:
        return str(e)
    return None


def _gl(code: str) -> str:
    """Triton expressions (the op table's) in Gluon: the same functions live in ``gl``; refuse any that do
    not, so an epilogue Gluon cannot express keeps the Triton template."""
    from triton.experimental.gluon import language as gl

    code = re.sub(r"\btl\.", "gl.", code).replace("@triton.jit", "@gluon.jit")
    missing = sorted({f for f in re.findall(r"\bgl\.(\w+)", code) if not hasattr(gl, f)})
    if missing:
        raise BuildError(f"epilogue uses {', '.join('tl.' + f for f in missing)}, which Gluon does not have")
    return code


def _epilogue(kin: KernelInput, anchor: Node, out_shape: tuple[int, ...], M: int, N: int) -> tuple[list[str], str]:
    """Lines computing the stored tile ``y`` from ``acc`` (fp32, rows ``rm`` [BM, 1], columns ``rn``
    [1, BN], both in the accumulator's layout), and the helper functions they call."""
    w = Writer()
    *batch, rows = out_shape[:-1]
    names: dict[int, str] = {}
    for j in reversed(range(len(batch))):
        div = math.prod(out_shape[j + 1:-1])
        names[j] = f"b{j}"
        w(f"b{j} = (rm // {div}) % {batch[j]}")
    if batch:
        w(f"m = rm % {rows}")
    names[len(batch)] = "m" if batch else "rm"
    names[len(batch) + 1] = "rn"
    m_vars = {"rm", "m", *(f"b{j}" for j in range(len(batch)))}
    loaded: dict[str, str] = {}

    def load(inp: str, consumer: Node) -> str:
        if inp in loaded:
            return loaded[inp]
        op = kin.operands[inp]
        off, _ = offset_expr(op.layout, out_shape, names.__getitem__)
        used = set(re.findall(r"[A-Za-z_]\w*", off))
        has_m, has_n = bool(used & m_vars), "rn" in used
        mask = {(True, True): ", mask=mask, other=0.0", (False, True): f", mask=rn < {N}, other=0.0",
                (True, False): f", mask=rm < {M}, other=0.0", (False, False): ""}[(has_m, has_n)]
        v = f"e{len(loaded)}"
        w(f"{v} = {load_cast(f'gl.load({op.pointer} + {off}{mask})', op.dtype)}  # {inp}")
        loaded[inp] = v
        return v

    em = BodyEmitter(w, kin, load)
    em.vars[Value(anchor.name)] = "acc"
    for node in kin.body:
        if node.op in ("input", "constant") or node.name == anchor.name:
            continue
        em.emit(node)
    (_, spec), v = kin.outputs[0], kin.body.outputs[0]
    w(f"y = {store_cast(em.value(v, kin.node), spec.dtype)}")
    code = _gl("\n".join(line[4:] for line in w.lines))
    helpers = [_gl(src.strip()) for h, src in TL_HELPERS.items() if re.search(rf"\b{h}\(", code)]
    return code.splitlines(), "\n\n\n".join(helpers)


_HEADER = '''import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
'''

# The fixed part of the template: tile order, the stream-K split and the producer partition.
_SCHEDULE = '''
@gluon.jit
def _tile_of(t, M: gl.constexpr, N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """Row and column offset of tile t; tiles run along M first (the consecutive programs share B's tiles)."""
    tm: gl.constexpr = (M + BLOCK_M - 1) // BLOCK_M
    return (t % tm) * BLOCK_M, (t // tm) * BLOCK_N


@gluon.jit
def _span(M: gl.constexpr, N: gl.constexpr, K: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
          BLOCK_K: gl.constexpr, PROGRAMS: gl.constexpr):
    """This program's [start, end) of the (tile, k step) iterations, tile-major, split evenly: program q
    gets base + (q < extra) of them."""
    ksteps: gl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
    total: gl.constexpr = ((M + BLOCK_M - 1) // BLOCK_M) * ((N + BLOCK_N - 1) // BLOCK_N) * ksteps
    base: gl.constexpr = total // PROGRAMS
    extra: gl.constexpr = total % PROGRAMS
    p = gl.program_id(0)
    start = p * base + gl.minimum(p, extra)
    return start, start + base + (p < extra).to(gl.int32)


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
              PROGRAMS: gl.constexpr):
    """One warp: TMA loads of A and B for each iteration of the span into the ring of STAGES buffers, once
    the consumers have released the stage."""
    ksteps: gl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
    nbytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
    start, end = _span(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, PROGRAMS)
    i = 0
    for it in range(start, end):
        tile = it // ksteps
        off_m, off_n = _tile_of(tile, M, N, BLOCK_M, BLOCK_N)
        k = (it - tile * ksteps) * BLOCK_K
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
        mbarrier.expect(ready.index(s), nbytes)
        tma.async_copy_global_to_shared(a_desc, [off_m, k], ready.index(s), a_bufs.index(s))
        tma.async_copy_global_to_shared(b_desc, [k, off_n], ready.index(s), b_bufs.index(s))
        i += 1
'''

# The consumer partition; {params} are the epilogue's pointers, {epilogue} computes y from acc.
_CONSUMER = '''
@gluon.jit
def _consumer(a_bufs, b_bufs, c_smem, ready, empty, y_desc, partials, flags, {params}M: gl.constexpr,
              N: gl.constexpr, K: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              BLOCK_K: gl.constexpr, STAGES: gl.constexpr, PROGRAMS: gl.constexpr):
    """Two warpgroups: wgmma over the ring (one MMA in flight; a stage is released once the MMA that read it
    has retired), then per unit (one tile's k range in this span) either leave an fp32 partial and raise
    this program's flag, or, holding k step 0, add the later programs' partials and run the epilogue."""
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    ksteps: gl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
    total: gl.constexpr = ((M + BLOCK_M - 1) // BLOCK_M) * ((N + BLOCK_N - 1) // BLOCK_N) * ksteps
    base: gl.constexpr = total // PROGRAMS
    extra: gl.constexpr = total % PROGRAMS
    p = gl.program_id(0)
    start, end = _span(M, N, K, BLOCK_M, BLOCK_N, BLOCK_K, PROGRAMS)
    lm = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, acc_layout))
    ln = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout))
    slot = gl.expand_dims(lm, 1) * BLOCK_N + gl.expand_dims(ln, 0)
    i = 0
    it = start
    while it < end:
        tile = it // ksteps
        k0 = it - tile * ksteps
        k1 = gl.minimum(ksteps, k0 + end - it)
        off_m, off_n = _tile_of(tile, M, N, BLOCK_M, BLOCK_N)
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=acc_layout)
        for kk in range(k0, k1):
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s), acc, is_async=True)
            acc = warpgroup_mma_wait(1, deps=(acc,))
            # Triton syncs the partition's warps before its one thread arrives: both warpgroups are done
            mbarrier.arrive(empty.index((i + STAGES - 1) % STAGES), pred=kk > k0)
            i += 1
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(empty.index((i + STAGES - 1) % STAGES))
        if k0 > 0:
            gl.store(partials + p * (BLOCK_M * BLOCK_N) + slot, acc)
            gl.thread_barrier()
            gl.atomic_xchg(flags + p, 1, sem="release", scope="gpu")
        else:
            done = k1
            q = p + 1
            while done < ksteps:
                seen = 0
                while seen != 1:
                    seen = gl.atomic_cas(flags + q, 1, 0, sem="acquire", scope="gpu")
                acc += gl.load(partials + q * (BLOCK_M * BLOCK_N) + slot, cache_modifier=".cg")
                done += base + (q < extra).to(gl.int32)
                q += 1
            rm = gl.expand_dims(off_m + lm, 1)
            rn = gl.expand_dims(off_n + ln, 0)
            mask = (rm < M) & (rn < N)
{epilogue}
            tma.store_wait(0)
            c_smem.store(y)
            fence_async_shared()
            tma.async_copy_shared_to_global(y_desc, [off_m, off_n], c_smem)
        it += k1 - k0
    tma.store_wait(0)
'''

_KERNEL = '''
@gluon.jit
def {name}({pointers}, partials, flags, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
        STAGES: gl.constexpr, PROGRAMS: gl.constexpr):
    """{doc}"""
    a_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    b_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    a_desc = tma.make_tensor_descriptor({a}, [{M}, {K}], [{K}, 1], [BLOCK_M, BLOCK_K], a_layout)
    b_desc = tma.make_tensor_descriptor({b}, [{K}, {N}], [{N}, 1], [BLOCK_K, BLOCK_N], b_layout)
    y_desc = tma.make_tensor_descriptor({y}, [{M}, {N}], [{N}, 1], [BLOCK_M, BLOCK_N], b_layout)
    a_bufs = gl.allocate_shared_memory({dtype}, [STAGES, BLOCK_M, BLOCK_K], a_layout)
    b_bufs = gl.allocate_shared_memory({dtype}, [STAGES, BLOCK_K, BLOCK_N], b_layout)
    c_smem = gl.allocate_shared_memory({dtype}, [BLOCK_M, BLOCK_N], b_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, c_smem, ready, empty, y_desc, partials, flags, {params}{M}, {N}, {K},
                     BLOCK_M, BLOCK_N, BLOCK_K, STAGES, PROGRAMS)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, {M}, {N}, {K}, BLOCK_M, BLOCK_N, BLOCK_K,
                     STAGES, PROGRAMS)),
    ], [1], [{producer_regs}])
'''


def generate(kin: KernelInput, name: str) -> KernelSpec:
    why = ineligible(kin, min_waves=0)
    if why:
        raise BuildError(f"node {kin.node.name!r}: the stream-K GEMM template does not apply: {why}")
    anchor, A, B, out_shape, M, N, K = _problem(kin)
    check_index_range(kin.node.name, M * N, M * K, K * N)
    bm, bn, bk, stages = (int(kin.tile[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_stages"))
    total = cdiv(M, bm) * cdiv(N, bn) * cdiv(K, bk)
    programs = min(SMS, total)
    lines, helpers = _epilogue(kin, anchor, out_shape, M, N)
    inputs = [p for p, _ in zip(kin.pointers, kin.args) if p not in {ptr for ptr, _ in kin.outputs}]
    params = "".join(f"{p}, " for p in inputs)
    epi = "\n".join(" " * 12 + line if line else "" for line in lines)
    desc = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    doc = (f"matmul {list(out_shape)} with epilogue: {desc}. Stream-K over {programs} programs "
           f"(gluon, sm_90)")
    dtype = "gl.float16" if A.dtype == torch.float16 else "gl.bfloat16"
    src = "\n".join([_HEADER, helpers and "\n" + helpers + "\n", _SCHEDULE,
                     _CONSUMER.format(params=params, epilogue=epi),
                     _KERNEL.format(name=name, pointers=", ".join(kin.pointers), doc=doc, a=A.pointer, b=B.pointer,
                                    y=kin.outputs[0][0], M=M, N=N, K=K, dtype=dtype, params=params,
                                    producer_regs=PRODUCER_REGS)])
    src = re.sub(r"\n{4,}", "\n\n\n", src).lstrip("\n")
    consts = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "STAGES": stages, "PROGRAMS": programs}
    return KernelSpec(name, "gemm", kin.node.name, src, (programs, 1, 1), consts, [*kin.args, PARTIALS, FLAGS],
                      kin.covers, list(kin.node.attrs.get("rules", [])), num_warps=CONSUMER_WARPS,
                      num_stages=stages, flops=2 * M * N * K, bytes=element_bytes(kin),
                      problem={"M": M, "N": N, "K": K, "batch": 1}, tile=str(kin.tile.get("source", KIND)),
                      maxnreg=MAXNREG)
