"""Hopper (sm_90) ping-pong GEMM template, written in Gluon, with trtjit's fused pointwise epilogue.

Triton's own template runs a GEMM with a heavy epilogue (an exact GELU over a 128x256 tile) one tile at a
time per SM: while the epilogue computes, the tensor cores idle. This template keeps two tiles in flight
per SM instead (CUTLASS's "ping-pong" schedule). One program per SM is warp-specialized by hand:
- one producer warp streams the A and B tiles of every tile the program owns, through TMA, into a ring of
  shared-memory stages;
- two consumer warpgroups take the program's tiles in turn, each a whole tile. Their main loops alternate
  (``turn`` barriers), so each owns a contiguous run of the ring; while one runs its epilogue (bias, GELU,
  ... then a TMA store from its own shared-memory buffer), the other's MMAs keep the tensor cores busy.

Measured on an H100 (``benchmarks/gluon_micro.py --kinds pp``, runs/2026-12-07-s5/gluon_pp.log): vit's fc1
(6304x3072x768 + bias + GELU) took 66.3 us in 128x128 tiles, N fastest, against 75.1 us for Triton's
128x256 pointer loop. Without a GELU it gained little (qkv) or lost (fc2, whose K is 3072), so
``passes/gemm_tactic`` picks it for GEMMs whose epilogue has a GELU.

Where it applies (``ineligible`` says why not): a 2-D fp16/bf16 matmul (batch dims folded into rows) with
row-contiguous A [M, K] and B [K, N], one output of A's dtype stored row-contiguous, K and N multiples of 8
(TMA's 16-byte strides), static shapes, an epilogue whose expressions Gluon has, and at least one full wave
of tiles. Gluon kernels do not run under Triton's interpreter, so ``passes/gemm_tactic`` records the
choice in the IR only for builds that target sm_90 alone.
"""

from __future__ import annotations

import io
import math
import re
import tokenize

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

KIND = "pingpong"
# (BLOCK_M, BLOCK_N, BLOCK_K, stages). Two 4-warp consumer warpgroups, each on whole tiles, and a 1-warp
# producer: 9 warps, launched as 4 (the kernel's own, the first consumer) plus workers. MAXNREG over the
# launch leaves each consumer CONSUMER_REGS registers a thread (a 128x128 fp32 accumulator is 128).
TILE = (128, 128, 64, 4)
N_FASTEST = True  # consecutive tiles of a program share their A rows (measured: 66.3 us against 66.5 on fc1)
KERNEL_WARPS = 4
MAXNREG = 168
CONSUMER_REGS = 232
PRODUCER_REGS = 40
MIN_WAVES = 1  # fewer tiles than SMs: one tile per program, nothing to overlap
# Epilogue ops worth hiding behind the other warpgroup's main loop ("auto"; see passes/gemm_tactic).
HEAVY_EPILOGUE_OPS = ("gelu",)


def tile_of(kin: KernelInput) -> dict[str, int | str]:
    """The ping-pong tile record of a GEMM (``graph.meta["tiles"]``; ``codegen.gemm.TILE_KEYS`` plus kind)."""
    bm, bn, bk, stages = TILE
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": KERNEL_WARPS, "num_stages": stages,
            "kind": KIND}


def is_pingpong(tile: dict | None) -> bool:
    return bool(tile) and tile.get("kind") == KIND


def heavy_epilogue(kin: KernelInput) -> bool:
    """Whether the GEMM's epilogue has an op the ping-pong schedule was measured to pay for."""
    return any(n.op in HEAVY_EPILOGUE_OPS for n in kin.body)


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
    """Why this GEMM kernel cannot use the ping-pong template (None: it can)."""
    why = _shape_problem(kin, min_waves)
    if why:
        return why
    anchor, _, _, out_shape, M, N, _ = _problem(kin)
    try:
        _epilogue(kin, anchor, out_shape, M, N)
    except BuildError as e:
        return str(e)
    return None


def _shape_problem(kin: KernelInput, min_waves: int) -> str | None:
    """Why the GEMM's operands, output or size rule out the template (None: they do not); its epilogue is
    ``_epilogue``'s to refuse."""
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
    if lay is not None and (tuple(lay.strides) != contiguous_strides(out_shape) or lay.offset):
        return "the output is not stored row-contiguous from its buffer's start"
    bm, bn, bk, _ = TILE
    if K <= bk:  # (Triton 3.6 fails to lower the stage ring with one k step)
        return f"K={K} is one k step of {bk}"
    if cdiv(M, bm) * cdiv(N, bn) < min_waves * SMS:
        return f"{cdiv(M, bm) * cdiv(N, bn)} tiles of {bm}x{bn}: less than {min_waves} full wave(s) of {SMS}"
    return None


def _attributes_of(code: str, module: str) -> set[str]:
    """Names used as ``module.name`` in the code itself (docstrings and comments do not count)."""
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]
    except (tokenize.TokenError, SyntaxError):  # not whole Python: every mention counts
        return set(re.findall(rf"\b{module}\.(\w+)", code))
    return {c.string for a, b, c in zip(toks, toks[1:], toks[2:])
            if a.type == tokenize.NAME and a.string == module and b.string == "." and c.type == tokenize.NAME}


def _gl(code: str) -> str:
    """Triton expressions (the op table's) in Gluon: the same functions live in ``gl``; refuse any that do
    not, so an epilogue Gluon cannot express keeps the Triton template."""
    from triton.experimental.gluon import language as gl

    code = re.sub(r"\btl\.", "gl.", code).replace("@triton.jit", "@gluon.jit")
    missing = sorted({f for f in _attributes_of(code, "gl") if not hasattr(gl, f)})
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

# The fixed part of the template: tile order, the producer partition and the consumers' main loop.
_SCHEDULE = '''
@gluon.jit
def _tile_of(t, M: gl.constexpr, N: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
             N_FAST: gl.constexpr):
    \"\"\"Row and column offset of tile t (N_FAST: tiles along N first, so a program's consecutive tiles
    share their rows of A).\"\"\"
    tm: gl.constexpr = (M + BLOCK_M - 1) // BLOCK_M
    tn: gl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
    if N_FAST:
        return (t // tn) * BLOCK_M, (t % tn) * BLOCK_N
    else:
        return (t % tm) * BLOCK_M, (t // tm) * BLOCK_N


@gluon.jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M: gl.constexpr, N: gl.constexpr, K: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
              PROGRAMS: gl.constexpr, N_FAST: gl.constexpr):
    \"\"\"One warp: TMA loads of A and B for every k step of every tile this program owns, in order, into
    the ring of STAGES buffers, each once the consumers have released its stage.\"\"\"
    tiles: gl.constexpr = ((M + BLOCK_M - 1) // BLOCK_M) * ((N + BLOCK_N - 1) // BLOCK_N)
    ksteps: gl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
    nbytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
    i = 0
    for t in range(gl.program_id(0), tiles, PROGRAMS):
        off_m, off_n = _tile_of(t, M, N, BLOCK_M, BLOCK_N, N_FAST)
        for kk in range(ksteps):
            s = i % STAGES
            mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(s), nbytes)
            tma.async_copy_global_to_shared(a_desc, [off_m, kk * BLOCK_K], ready.index(s), a_bufs.index(s))
            tma.async_copy_global_to_shared(b_desc, [kk * BLOCK_K, off_n], ready.index(s), b_bufs.index(s))
            i += 1


@gluon.jit
def _main_loop(acc, a_bufs, b_bufs, ready, empty, i, ksteps, STAGES: gl.constexpr):
    \"\"\"``ksteps`` k steps from ring position i: wgmma on each stage once it has landed, one MMA in flight;
    a stage is released once the MMA that read it has retired (Triton syncs the partition's warps before its
    one thread arrives). Returns the accumulator (its last MMA still in flight) and the next position.\"\"\"
    for kk in range(ksteps):
        s = i % STAGES
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(1, deps=(acc,))
        mbarrier.arrive(empty.index((i + STAGES - 1) % STAGES), pred=kk > 0)
        i += 1
    return acc, i
'''

# A consumer warpgroup; {params} are the epilogue's pointers, {epilogue} computes y from acc.
_CONSUMER = '''
@gluon.jit
def _consumer(a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, {params}M: gl.constexpr, N: gl.constexpr,
              K: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
              STAGES: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr, ROLE: gl.constexpr):
    \"\"\"One warpgroup, on every other tile of the program (local tile j with j % 2 == ROLE), whole: its
    main loop, then the epilogue and a TMA store from its own buffer c_bufs[ROLE].

    The main loops take turns: warpgroup r waits on turn[r] and hands over on turn[1 - r] once its last
    stage has landed. Otherwise the second would wait on a ready barrier many phases ahead of it, and an
    mbarrier wait only tells a phase's parity: it could take the first warpgroup's stage for its own.\"\"\"
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[gl.num_warps(), 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    tiles: gl.constexpr = ((M + BLOCK_M - 1) // BLOCK_M) * ((N + BLOCK_N - 1) // BLOCK_N)
    ksteps: gl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
    lm = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, acc_layout))
    ln = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout))
    c_smem = c_bufs.index(ROLE)
    i = ROLE * ksteps  # ring position of this warpgroup's next stage: the producer's order, tile after tile
    n = 0  # main loops this warpgroup has run
    for t in range(gl.program_id(0) + ROLE * PROGRAMS, tiles, 2 * PROGRAMS):
        off_m, off_n = _tile_of(t, M, N, BLOCK_M, BLOCK_N, N_FAST)
        if ROLE == 1:
            mbarrier.wait(turn.index(1), n & 1)
        else:
            mbarrier.wait(turn.index(0), (n - 1) & 1, pred=n > 0)  # warpgroup 0 starts the first tile
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=acc_layout)
        acc, i = _main_loop(acc, a_bufs, b_bufs, ready, empty, i, ksteps, STAGES)
        mbarrier.arrive(turn.index(1 - ROLE))  # every stage of this tile has landed: the other may start
        n += 1
        acc = warpgroup_mma_wait(0, deps=(acc,))
        mbarrier.arrive(empty.index((i + STAGES - 1) % STAGES))
        i += ksteps  # skip the other warpgroup's tile
        rm = gl.expand_dims(off_m + lm, 1)
        rn = gl.expand_dims(off_n + ln, 0)
        mask = (rm < M) & (rn < N)
{epilogue}
        tma.store_wait(0)  # this buffer's previous store has drained
        c_smem.store(y)
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [off_m, off_n], c_smem)
    tma.store_wait(0)
'''

_KERNEL = '''
@gluon.jit
def {name}({pointers}, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
        STAGES: gl.constexpr, PROGRAMS: gl.constexpr, N_FAST: gl.constexpr):
    \"\"\"{doc}\"\"\"
    a_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width={a_swizzle}, element_bitwidth=16, rank=2)
    b_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    a_desc = tma.make_tensor_descriptor({a}, [{M}, {K}], [{K}, 1], [BLOCK_M, BLOCK_K], a_layout)
    b_desc = tma.make_tensor_descriptor({b}, [{K}, {N}], [{N}, 1], [BLOCK_K, BLOCK_N], b_layout)
    y_desc = tma.make_tensor_descriptor({y}, [{M}, {N}], [{N}, 1], [BLOCK_M, BLOCK_N], b_layout)
    a_bufs = gl.allocate_shared_memory({dtype}, [STAGES, BLOCK_M, BLOCK_K], a_layout)
    b_bufs = gl.allocate_shared_memory({dtype}, [STAGES, BLOCK_K, BLOCK_N], b_layout)
    c_bufs = gl.allocate_shared_memory({dtype}, [2, BLOCK_M, BLOCK_N], b_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    for r in gl.static_range(2):
        mbarrier.init(turn.index(r), count=1)
    gl.warp_specialize([
        (_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, {params}{M}, {N}, {K}, BLOCK_M, BLOCK_N,
                     BLOCK_K, STAGES, PROGRAMS, N_FAST, 0)),
        (_consumer, (a_bufs, b_bufs, c_bufs, ready, empty, turn, y_desc, {params}{M}, {N}, {K}, BLOCK_M, BLOCK_N,
                     BLOCK_K, STAGES, PROGRAMS, N_FAST, 1)),
        (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, {M}, {N}, {K}, BLOCK_M, BLOCK_N, BLOCK_K,
                     STAGES, PROGRAMS, N_FAST)),
    ], [{warps}, 1], [{consumer_regs}, {producer_regs}])
'''


def generate(kin: KernelInput, name: str) -> KernelSpec:
    why = _shape_problem(kin, min_waves=0)
    if not why:
        anchor, A, B, out_shape, M, N, K = _problem(kin)
        try:
            lines, helpers = _epilogue(kin, anchor, out_shape, M, N)
        except BuildError as e:
            why = str(e)
    if why:
        raise BuildError(f"node {kin.node.name!r}: the ping-pong GEMM template does not apply: {why}")
    check_index_range(kin.node.name, M * N, M * K, K * N)
    bm, bn, bk, stages = (int(kin.tile[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_stages"))
    tiles = cdiv(M, bm) * cdiv(N, bn)
    programs = min(SMS, tiles)
    inputs = [p for p, _ in zip(kin.pointers, kin.args) if p not in {ptr for ptr, _ in kin.outputs}]
    params = "".join(f"{p}, " for p in inputs)
    epi = "\n".join(" " * 8 + line if line else "" for line in lines)
    desc = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    doc = (f"matmul {list(out_shape)} with epilogue: {desc}. Ping-pong over {programs} programs, two "
           f"consumer warpgroups on alternate {bm}x{bn} tiles (gluon, sm_90)")
    dtype = "gl.float16" if A.dtype == torch.float16 else "gl.bfloat16"
    src = "\n".join([_HEADER, helpers and "\n" + helpers + "\n", _SCHEDULE,
                     _CONSUMER.format(params=params, epilogue=epi),
                     _KERNEL.format(name=name, pointers=", ".join(kin.pointers), doc=doc, a=A.pointer, b=B.pointer,
                                    y=kin.outputs[0][0], M=M, N=N, K=K, dtype=dtype, params=params,
                                    a_swizzle=min(128, bk * A.dtype.itemsize),  # A's rows span BLOCK_K
                                    warps=KERNEL_WARPS, consumer_regs=CONSUMER_REGS, producer_regs=PRODUCER_REGS)])
    src = re.sub(r"\n{4,}", "\n\n\n", src).lstrip("\n")
    consts = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "STAGES": stages, "PROGRAMS": programs,
              "N_FAST": int(N_FASTEST)}
    return KernelSpec(name, "gemm", kin.node.name, src, (programs, 1, 1), consts, list(kin.args),
                      kin.covers, list(kin.node.attrs.get("rules", [])), num_warps=KERNEL_WARPS,
                      num_stages=stages, flops=2 * M * N * K, bytes=element_bytes(kin),
                      problem={"M": M, "N": N, "K": K, "batch": 1}, tile=str(kin.tile.get("source", KIND)),
                      maxnreg=MAXNREG)
