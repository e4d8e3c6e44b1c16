"""GEMM template (batched matmul and NCHW convolution as implicit GEMM) with a fused epilogue.

A program computes a BLOCK_M x BLOCK_N tile of the output in an fp32 accumulator with ``tl.dot``,
then runs the body's pointwise epilogue (bias, scale, activation, residual add) on the tile before the
one store. Operands are read through their strides, so transposed weights and permuted activations need
no copy. A matmul whose right operand is shared across the batch folds the batch into M. A convolution
gathers its A tile from the input (im2col on the fly) for any stride, padding, dilation and groups.
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
    next_pow2,
    offset_expr,
    store_cast,
)

from trtjit.backend import interpreting
from trtjit.dynamic import hint, is_dynamic
from trtjit.errors import BuildError
from trtjit.ir import Node, Value
from trtjit.layout import contiguous_strides


def _block(n: int, cap: int) -> int:
    return max(16, min(cap, next_pow2(n)))


def gemm_config(M: int, N: int, K: int, batch: int, dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """Deterministic default tile (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for a GEMM shape.

    From measurements on the H200 (benchmarks/gemm_micro.py, fp16): a GEMM with many output tiles and a wide
    N (>= 2048) runs fastest in 128x256 tiles (8 warps, 3 stages; 470-510 TFLOP/s against 430-460 for
    128x128); other large GEMMs take 128x128. Smaller ones step down through 64x128, 64x64 and 64x32 (with
    twice the BLOCK_K, which keeps the tile's work up) until the grid fills at least half the GPU; if none does,
    the one with the most programs. BLOCK_K spans 128 bytes of K: 64 for 16-bit operands, 32 for fp32, 128
    for int8/fp8. A dynamic batch counts at opt (trtjit.dynamic: the engine is tuned for opt).
    """
    M, batch = hint(M), hint(batch)
    base_k = _k_elems(64, dtype)
    if N >= 2048 and cdiv(M, 128) * cdiv(N, 256) * batch >= 2 * SMS:
        return 128, 256, _block(K, base_k), 8, 3
    best = None
    for bm_cap, bn_cap, k_mult in ((128, 128, 1), (64, 128, 1), (64, 64, 1), (64, 32, 2), (32, 64, 1)):
        bm, bn = _block(M, bm_cap), _block(N, bn_cap)
        programs = cdiv(M, bm) * cdiv(N, bn) * batch
        big = bm * bn >= 128 * 128
        tile = (bm, bn, _block(K, base_k * k_mult), 8 if big else 4, 3 if big else 4)
        if programs >= SMS // 2:
            return tile
        if best is None or programs > best[0]:
            best = (programs, tile)
    return best[1]


# Program order of a matmul. With M tiles fastest, every wave of programs streams all of A while a few
# column blocks of B stay hot; with N tiles fastest, the programs resident together cover whole row blocks
# of A, each read from memory once, while B (a weight) stays in L2. Measured on the H100 (50 MB L2;
# benchmarks/order_ab.py): with A of 32 MB or more N fastest is clearly better (vit_b_16's fc2, A 38.7 MB:
# 80.5 -> 67.1 us a layer, runs/2026-12-06-s2/order32_rule.log). For the rest the per-GEMM profiles move by
# a few percent either way, but whole engines gain with N fastest everywhere: in one run with the wave-tail
# split (runs/2026-12-06-s3/final/order.log), vit_b_16 bs32 took 3.000 ms against 3.060 with N fastest only
# from 32 MB and 3.110 with M fastest everywhere, bert 1.832 against 1.854 and 1.851 (an earlier lease:
# gpt2 bs32 +0.9%, bs1 -1.4%, within that lease's noise). So N fastest from N_FASTEST_A_BYTES = 0 bytes of A:
# every static GEMM with more than one column block. (The grid's y dimension holds at most MAX_GRID_Y row
# blocks; a dynamic M keeps M fastest.)
N_FASTEST_A_BYTES = 0
MAX_GRID_Y = 65535

# Wave tail. A GEMM of more than a wave of 128-row tiles whose last wave is partly empty (vit_b_16's layers:
# M = 6304 = 44 * 128 + 672, e.g. 300 tiles of 128x128 for 132 SMs: two waves, then 36 tiles while 96 SMs
# wait) runs its whole waves as before and the rows of the last one as TAIL_M-row tiles, in the same launch
# (programs after the main ones, so they fill the SMs the last full wave frees), when those tiles fit in
# one wave. Measured on the H100 (benchmarks/tail_micro.py, runs/2026-12-06-s3/tail.log), against one tile
# size: vit proj 19.5 -> 18.4 us, qkv 50.2 -> 48.0, fc1 (GELU) 77.4 -> 75.2, fc2 64.2 -> 63.7, bert fc2
# 41.5 -> 38.6. The tail keeps BLOCK_N: 64x64 tails ran bert's fc2 at 48.4 us. (The wave count above is an
# approximation: 128x128 tiles, ~114 registers and 96 KB of shared memory, run two programs per SM, so their
# whole waves hold 264 tiles; the split still measured faster, as above.) Splitting the tail tiles over
# K as well (fp32 partials in an engine workspace, the last program of a tile adding them in split order) did
# not pay (runs/2026-12-06-s4/tail_ab*.log, engine profiles, us a layer): 128-row split tiles took the kernel
# from 114 to 166 registers a thread, so 128x128 tiles ran one program per SM instead of two (vit fc2 61 -> 75,
# proj 22.7 -> 29.2); 64-row ones kept 110 registers but gained 0.5 us on fc2 and lost 2.4 on proj.
TAIL_M = 64


def wave_tail(mrows: int, N: int, bm: int, bn: int, warps: int, nbatch: int, dtype: torch.dtype) -> int | None:
    """The rows the main tiles cover when the GEMM splits off its last wave (``TAIL_M``), else None."""
    if is_dynamic(mrows) or nbatch != 1 or bm != 128 or bn not in (128, 256) or warps != 8 \
            or dtype not in (torch.float16, torch.bfloat16):
        return None
    tn = cdiv(N, bn)
    tiles = cdiv(mrows, bm) * tn
    if tiles <= SMS or tiles % SMS == 0:
        return None
    main_rows = (tiles // SMS * SMS // tn) * bm
    if main_rows == 0 or cdiv(mrows - main_rows, TAIL_M) * tn > SMS:
        return None
    return main_rows


def _k_elems(bk16: int, dtype: torch.dtype) -> int:
    """BLOCK_K of ``dtype`` spanning the bytes that ``bk16`` spans for 16-bit operands (smem per stage)."""
    return bk16 * 2 // dtype.itemsize


TILE_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")

# Candidate tiles the autotuner times (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), clipped to the
# problem; the heuristic's own choice is always among them.
_CANDIDATES = ((128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
               (128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4),
               (64, 32, 128, 4, 4), (32, 64, 64, 4, 4), (64, 64, 32, 4, 5))


# A convolution that gathers its A tile element by element (an NCHW input: per-element div/mod of the
# (c, kh, kw) index, masks per element) over a reduction this short spends its time on the gather, not on
# the tensor cores: smaller tiles with BLOCK_K spanning 64 bytes run it fastest. resnet50's 7x7 stem (K = 147,
# fp16, batch 32) on the H200: 294 us in 128x64x64 tiles, 190 us in 64x64x32 (benchmarks/stem_micro.py), and
# the engine 1.601 -> 1.497 ms (benchmarks/stem_ab.py). A K within one 128-byte step keeps gemm_config's tile
# (mobilenet_v2's 3x3 stem, K = 27: 45.8 us in 128x32 tiles, 49.6 us in 64x32).
GATHER_SMALL_K = 256

# Convolutions of fewer channels whose filter row (KW * C elements) fits this many elements read one row per
# K step (``_row_mainloop``); passes/stem_input_nhwc gives such convs an NHWC input under the same bounds.
ROW_MAX_CHANNELS = 8
ROW_MAX_ELEMS = 64


def heuristic_tile(problem: dict[str, int], dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """The deterministic tile of a GEMM/conv kernel of ``problem`` (M, N, K, batch, and ``gather`` for a
    convolution gathering an NCHW input): ``gemm_config``, or the small gather tile (``GATHER_SMALL_K``)."""
    M, N, K, batch = (problem[k] for k in ("M", "N", "K", "batch"))
    tile = gemm_config(M, N, K, batch, dtype)
    if problem.get("gather") and _k_elems(64, dtype) < K <= GATHER_SMALL_K and dtype.is_floating_point \
            and dtype.itemsize >= 2:
        bm, bn = tile[:2]
        return min(bm, 64), bn, _block(K, _k_elems(32, dtype)), 4, 3
    return tile


def tile_candidates(problem: dict[str, int], dtype: torch.dtype) -> list[dict[str, int]]:
    """Distinct tiles worth timing for a GEMM of ``problem`` (M, N, K, batch), heuristic default first."""
    M, N, K = (problem[k] for k in ("M", "N", "K"))
    first = heuristic_tile(problem, dtype)
    out, seen = [], set()
    for i, (bm, bn, bk, warps, stages) in enumerate((first, *_CANDIDATES)):
        cand = (_block(M, bm), _block(N, bn), _block(K, bk if i == 0 else _k_elems(bk, dtype)), warps, stages)
        if cand not in seen:
            seen.add(cand)
            out.append(dict(zip(TILE_KEYS, cand)))
    return out


def _pick_tile(kin: KernelInput, problem: dict[str, int], dtype: torch.dtype):
    """The tile of this kernel: the one chosen for it (autotune pass / tuning cache), else the heuristic's."""
    if kin.tile:
        try:
            return tuple(int(kin.tile[k]) for k in TILE_KEYS)
        except (KeyError, TypeError, ValueError):
            raise BuildError(f"node {kin.node.name!r}: malformed tile {kin.tile!r}; needs {TILE_KEYS}") from None
    return heuristic_tile(problem, dtype)


def _anchor(kin: KernelInput) -> Node:
    for n in kin.body:
        if n.op in ("matmul", "conv2d", "conv_transpose2d"):
            return n
    raise BuildError(f"node {kin.node.name!r}: gemm kernel without a matmul or conv2d")


def _operand(kin: KernelInput, v: Value, anchor: Node) -> Operand:
    n = kin.body.node(v.node)
    if n.op != "input" or kin.operands[n.name].layout is None:
        raise BuildError(f"node {kin.node.name!r}: operand {v} of {anchor.name!r} must be a tensor input")
    return kin.operands[n.name]


def generate(kin: KernelInput, name: str) -> KernelSpec:
    from trtjit.codegen import gluon_gemm

    if gluon_gemm.is_pingpong(kin.tile):  # chosen by passes/gemm_tactic for sm_90 builds
        return gluon_gemm.generate(kin, name)
    anchor = _anchor(kin)
    a_v, b_v = kin.body.inputs_of(anchor.name)
    A, B = _operand(kin, a_v, anchor), _operand(kin, b_v, anchor)
    if A.dtype == torch.float64:  # tl.dot of fp64 tiles gives wrong results (Triton 3.6): refuse, never guess
        raise BuildError(f"node {kin.node.name!r}: float64 matmul/convolution is not supported; run the model "
                         "in float32 (or fp16/bf16)")
    if A.dtype != B.dtype:
        raise BuildError(f"node {kin.node.name!r}: operands have different dtypes {A.dtype} and {B.dtype}")
    out_shape = anchor.spec.shape
    check_index_range(kin.node.name, math.prod(out_shape), math.prod(A.layout.shape), math.prod(B.layout.shape))
    w = Writer()
    prec = "tf32" if kin.tf32 else "ieee"
    if A.dtype == torch.bfloat16 and interpreting():
        prec = "ieee_upcast"  # Triton 3.6's interpreter multiplies bf16 tiles wrongly: upcast them there
    if A.dtype == torch.int8:
        prec = "int8"  # int8 x int8 -> int32 (see _int8_accumulator)
    if A.dtype == torch.float8_e4m3fn:
        prec = "fp8"  # e4m3 x e4m3 -> fp32 (Hopper/Ada fp8 tensor cores; see _fp8_block_k)
    tail = None  # a wave-tail matmul: (rows of the main tiles, N fastest) for its entry
    if anchor.op == "matmul":
        dim_var, grid, consts, mrows, n_cols, flops, (warps, stages), m_vars, problem, tail = _matmul_mainloop(
            w, A, B, out_shape, prec, kin)
    else:
        dim_var, grid, consts, mrows, n_cols, flops, (warps, stages), m_vars, problem = _conv_mainloop(
            w, A, B, anchor, out_shape, prec, kin)
    if prec == "int8":
        _int8_accumulator(w, consts, A.layout.shape[-1] if anchor.op == "matmul" else None)
    if prec == "fp8":
        _fp8_block_k(consts, A.layout.shape[-1] if anchor.op == "matmul" else None)
    w(f"mask = (rm < {mrows}) & (rn < {n_cols})")
    loaded: dict[str, str] = {}

    def load(inp: str, consumer: Node) -> str:
        if inp in loaded:
            return loaded[inp]
        op = kin.operands[inp]
        off, _ = offset_expr(op.layout, out_shape, dim_var)
        v = f"e{len(loaded)}"
        # An operand loads in its own broadcast shape: a bias [1, BLOCK_N], a per-row scale [BLOCK_M, 1],
        # a scalar as one value; only a full tile (a residual) takes BLOCK_M x BLOCK_N pointers and masks.
        names = set(re.findall(r"[A-Za-z_]\w*", off))
        has_m, has_n = bool(names & m_vars), bool(names & {"rn", "oc"})
        if has_m and has_n:
            m = ", mask=mask, other=0.0"
        elif has_n:
            m = f", mask=rn < {n_cols}, other=0.0"
        elif has_m:
            m = f", mask=rm < {mrows}, other=0.0"
        else:
            m = ""
        w(f"{v} = {load_cast(f'tl.load({op.pointer} + {off}{m})', op.dtype)}  # {inp}")
        loaded[inp] = v
        return v

    em = BodyEmitter(w, kin, load)
    em.vars[Value(anchor.name)] = "acc"
    for node in kin.body:
        if node.op in ("input", "constant") or node is anchor or node.name == anchor.name:
            continue
        em.emit(node)
    strides = kin.out_layouts[0].strides if kin.out_layouts else contiguous_strides(out_shape)
    off = " + ".join(dim_var(j) if st == 1 else f"{dim_var(j)} * {st}" for j, st in enumerate(strides)
                     if out_shape[j] > 1) or "0"
    for (ptr, spec), v in zip(kin.outputs, kin.body.outputs):
        if spec.shape != out_shape:
            raise BuildError(f"node {kin.node.name!r}: epilogue output of shape {list(spec.shape)} differs "
                             f"from the GEMM output {list(out_shape)}")
        w(f"tl.store({ptr} + {full_tile(off, m_vars)}, {store_cast(em.value(v, kin.node), spec.dtype)}, mask=mask)")
    epi = ", ".join(f"{n.name} ({n.op})" for n in kin.body if n.op not in ("input", "constant"))
    doc = f"{anchor.op} {list(out_shape)} with epilogue: {epi}"
    if tail is not None:
        src = _wave_tail_entry(w, name, kin.pointers, consts, doc, *tail, problem["N"])
    else:
        src = w.source(name, kin.pointers, list(consts), doc)
    return KernelSpec(name, "gemm" if anchor.op == "matmul" else "conv", kin.node.name, src, grid, consts,
                      kin.args, kin.covers, list(kin.node.attrs.get("rules", [])), num_warps=warps, num_stages=stages,
                      flops=flops, bytes=element_bytes(kin), problem=problem,
                      tile=str(kin.tile.get("source", "tuned")) if kin.tile else "heuristic")


def _wave_tail_entry(body: Writer, name: str, pointers: list[str], consts: dict[str, int], doc: str,
                     main_rows: int, n_fastest: bool, N: int) -> str:
    """The source of a wave-tail GEMM (``wave_tail``): the template's body as ``_gemm_tile`` (one tile at
    pid_m, pid_n of its block shape), and an entry whose first programs run the BLOCK_M tiles of rows
    [0, main_rows) and the rest ``TAIL_M``-row tiles of the rows after them."""
    bm, bn = consts["BLOCK_M"], consts["BLOCK_N"]
    tn, tm = cdiv(N, bn), main_rows // bm
    params = ", ".join([*pointers, "pid_m", "pid_n", "pid_b", *(f"{c}: tl.constexpr" for c in consts)])
    tile = "\n".join(["@triton.jit", f"def _gemm_tile({params}):",
                      '    """One output tile of the kernel below, in blocks of BLOCK_M x BLOCK_N."""', *body.lines])
    ptrs = ", ".join(pointers)
    w = Writer()
    w("pid = tl.program_id(0)")
    w(f"if pid < {tm * tn}:  # whole waves of BLOCK_M-row tiles over rows [0, {main_rows})")
    w(f"    _gemm_tile({ptrs}, pid // {tn}, pid % {tn}, 0, BLOCK_M, BLOCK_N, BLOCK_K)" if n_fastest else
      f"    _gemm_tile({ptrs}, pid % {tm}, pid // {tm}, 0, BLOCK_M, BLOCK_N, BLOCK_K)")
    w(f"else:  # the last wave's rows in {TAIL_M}-row tiles")
    w(f"    t = pid - {tm * tn}")
    w(f"    _gemm_tile({ptrs}, {main_rows // TAIL_M} + t // {tn}, t % {tn}, 0, {TAIL_M}, BLOCK_N, BLOCK_K)")
    return w.source(name, pointers, list(consts), doc + f"; rows from {main_rows} in {TAIL_M}-row tiles",
                    prelude=tile)


def _matmul_mainloop(w: Writer, A: Operand, B: Operand, out_shape: tuple[int, ...], prec: str, kin: KernelInput):
    *batch, M, N = out_shape
    K = A.layout.shape[-1]
    nb = len(batch)
    b_batch = len(B.layout.shape) - 2

    def bstride(op: Operand, nbat: int, j: int) -> int:
        i = j - (nb - nbat)
        if i < 0 or op.layout.shape[i] == 1:
            return 0
        return op.layout.strides[i]

    fold = nb > 0 and all(bstride(B, b_batch, j) == 0 for j in range(nb))
    mrows = (math.prod(batch) * M) if fold else M
    nbatch = 1 if fold else math.prod(batch)
    problem = {"M": mrows, "N": N, "K": K, "batch": nbatch}
    bm, bn, bk, warps, stages = _pick_tile(kin, problem, A.dtype)
    bk = _dot_block_k(bk, prec)
    n_fastest = not is_dynamic(mrows) and N > bn and cdiv(mrows, bm) <= MAX_GRID_Y \
        and mrows * K * A.dtype.itemsize >= N_FASTEST_A_BYTES
    main_rows = wave_tail(mrows, N, bm, bn, warps, nbatch, A.dtype)
    if main_rows is None:  # (a wave-tail kernel is a tile function; its entry passes pid_m, pid_n, pid_b)
        w("pid_n = tl.program_id(0)" if n_fastest else "pid_m = tl.program_id(0)")  # see N_FASTEST_A_BYTES
        w("pid_m = tl.program_id(1)" if n_fastest else "pid_n = tl.program_id(1)")
        w("pid_b = tl.program_id(2)")
    w("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]")
    w("rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]")
    w("rk = tl.arange(0, BLOCK_K)")
    # The main loop loads without row/column masks (measured 5-10% faster on the H200,
    # benchmarks/gemm_micro.py): a tile that overhangs M or N reads clamped rows/columns (``% size``)
    # whose results the masked store drops. Columns wrap only where N % 16 == 0, so the wrapped index
    # keeps its 16-element contiguity (vector loads); otherwise the column mask stays.
    even_m = not is_dynamic(mrows) and mrows % bm == 0 and (main_rows is None or mrows % TAIL_M == 0)
    a_rows = "rm" if even_m else "ra"
    if not even_m:
        w(f"ra = rm % {mrows}")
    col_mask = not (N % bn == 0 or N % 16 == 0)
    b_cols = "rn" if N % bn == 0 or col_mask else "rb"
    if b_cols == "rb":
        w(f"rb = rn % {N}")

    def decompose(lin: str, pre: str) -> dict[int, str]:
        """Index vars of the batch dims and M of the row index ``lin``, named with prefix ``pre``."""
        names, inner = {}, 1
        for j in reversed(range(nb)):
            src = lin if fold else "pid_b"
            div = inner * (M if fold else 1)
            e = src if div == 1 else f"{src} // {div}"
            names[j] = f"{pre}b{j}"
            w(f"{pre}b{j} = ({e}) % {batch[j]}")
            inner *= batch[j]
        w(f"{pre}m = {lin} % {M}" if fold else f"{pre}m = {lin}")
        names[nb] = f"{pre}m"
        return names

    names = decompose("rm", "")
    names[nb + 1] = "rn"
    a_names = names if a_rows == "rm" else decompose(a_rows, "a")

    def dim_var(j: int) -> str:
        return names[j]

    a_off, _ = offset_expr(_drop_last(A), tuple(out_shape[:-1]), a_names.__getitem__)
    b_lay = _drop_dim(B, -2)
    b_off, _ = offset_expr(b_lay, tuple(batch) + (N,), lambda j: names[j] if j < nb else b_cols)
    sak, sbk = A.layout.strides[-1], B.layout.strides[-2]
    a_vars = set(re.findall(r"[A-Za-z_]\w*", a_off))
    a_full = "" if a_vars & {a_names[nb], a_rows} else f" + {a_rows} * 0"  # [BLOCK_M, BLOCK_K] pointers when M == 1
    b_full = "" if b_cols in set(re.findall(r"[A-Za-z_]\w*", b_off)) else f" + {b_cols} * 0"
    w(f"a_ptrs = {A.pointer} + {a_off}{a_full} + rk[None, :] * {sak}")
    w(f"b_ptrs = {B.pointer} + {b_off}{b_full} + rk[:, None] * {sbk}")
    w("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    b_main = f", mask=rn < {N}, other=0.0" if col_mask else ""
    # Whole BLOCK_K steps load without a K mask: a mask that varies along K keeps the contiguous A rows
    # from loading as vectors (measured: 128x128 tiles ran at ~235 TFLOP/s with it). A ragged tail, if
    # any, is one masked step after the loop.
    k_full = K - K % bk
    if k_full:
        w(f"for k in range(0, {k_full}, BLOCK_K):")
        w("    a = tl.load(a_ptrs)")
        w(f"    b = tl.load(b_ptrs{b_main})")
        w(_dot(prec))
        w(f"    a_ptrs += BLOCK_K * {sak}")
        w(f"    b_ptrs += BLOCK_K * {sbk}")
    if K % bk:
        b_tail = f"(rk[:, None] < {K % bk}) & (rn < {N})" if col_mask else f"rk[:, None] < {K % bk}"
        w(f"a = tl.load(a_ptrs, mask=rk[None, :] < {K % bk}, other=0.0)")
        w(f"b = tl.load(b_ptrs, mask={b_tail}, other=0.0)")
        w(_dot(prec).strip())
    grid = (cdiv(N, bn), cdiv(mrows, bm), nbatch) if n_fastest else (cdiv(mrows, bm), cdiv(N, bn), nbatch)
    if main_rows is not None:
        tn = cdiv(N, bn)
        grid = (main_rows // bm * tn + cdiv(mrows - main_rows, TAIL_M) * tn, 1, 1)
    m_vars = {"rm", "m"} | ({names[j] for j in range(nb)} if fold else set())
    return dim_var, grid, {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, mrows, N, 2 * math.prod(out_shape) * K, \
        (warps, stages), m_vars, problem, None if main_rows is None else (main_rows, n_fastest)


def full_tile(off: str, m_vars: set[str]) -> str:
    """A store needs a pointer for every element of the tile, but a size-1 M or N dim drops its index var
    from the offset: add a zero term along each missing tile axis. ``m_vars`` are the index vars derived
    from ``rm`` (the N axis always has ``rn`` or ``oc``)."""
    names = set(re.findall(r"[A-Za-z_]\w*", off))
    return off + ("" if names & {"rn", "oc"} else " + rn * 0") + ("" if names & m_vars else " + rm * 0")


def _dot(prec: str) -> str:
    if prec == "int8":
        return "    acc = tl.dot(a, b, acc, out_dtype=tl.int32)"
    if prec == "fp8":
        return "    acc = tl.dot(a, b, acc)"
    if prec == "ieee_upcast":
        return '    acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")'
    return f'    acc = tl.dot(a, b, acc, input_precision="{prec}")'


def _dot_block_k(bk: int, prec: str) -> int:
    """int8 and fp8 ``tl.dot`` want BLOCK_K >= 32 (16-bit and fp32 dots take 16)."""
    return max(32, bk) if prec in ("int8", "fp8") else bk


def _drop_last(op: Operand):
    from trtjit.layout import Layout
    lay = op.layout
    return Layout(lay.root, lay.shape[:-1], lay.strides[:-1], lay.offset)


def _drop_dim(op: Operand, d: int):
    from trtjit.layout import Layout
    lay = op.layout
    d = d % len(lay.shape)
    return Layout(lay.root, lay.shape[:d] + lay.shape[d + 1:], lay.strides[:d] + lay.strides[d + 1:], lay.offset)


def _conv_mainloop(w: Writer, X: Operand, Wt: Operand, anchor: Node, out_shape: tuple[int, ...], prec: str,
                   kin: KernelInput):
    N, OC, OH, OW = out_shape
    _, C, H, W = X.layout.shape
    transposed = anchor.op == "conv_transpose2d"
    groups = anchor.attrs["groups"]
    if transposed:  # weight [C, OC/groups, KH, KW]: K runs over the input channels of the group
        _, _, KH, KW = Wt.layout.shape
        Cg = C // groups
    else:
        _, Cg, KH, KW = Wt.layout.shape
    OCg = OC // groups
    sh, sw = anchor.attrs["stride"]
    ph, pw = anchor.attrs["padding"]
    dh, dw = anchor.attrs["dilation"]
    sxn, sxc, sxh, sxw = X.layout.strides
    swo, swc, swh, sww = Wt.layout.strides
    M, K = N * OH * OW, Cg * KH * KW
    names = {0: "n", 1: "oc", 2: "oh", 3: "ow"}
    if not transposed and Cg == 1 and OCg == 1:  # depthwise: channels across the tile, no tensor-core dot
        problem = {"M": M, "N": C, "K": KH * KW, "batch": 1}
        bm, bn, bk, warps, stages = _pick_tile(kin, problem, X.dtype)
        _depthwise_mainloop(w, X, Wt, anchor, out_shape, (H, W, KH, KW))
        return names.__getitem__, (cdiv(M, bm), cdiv(C, bn), 1), {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, \
            M, C, 2 * math.prod(out_shape) * K, (warps, stages), {"rm", "n", "oh", "ow"}, problem
    channels_last = sxc == 1 and Cg > 1 and not transposed
    problem = {"M": M, "N": OCg, "K": K, "batch": groups, **({} if channels_last or transposed else {"gather": 1})}
    bm, bn, bk, warps, stages = _pick_tile(kin, problem, X.dtype)
    bk = _dot_block_k(bk, prec)
    hwio = channels_last and sww == Cg * swc and swh == KW * sww
    row = hwio and Cg < ROW_MAX_CHANNELS and KW * Cg <= ROW_MAX_ELEMS  # a few-channel (stem) conv: a filter row
    # per K step
    if row:
        bk = max(_dot_block_k(16, prec), next_pow2(KW * Cg))
    elif hwio and Cg % bk:  # a BLOCK_K that divides the channels keeps each K step inside one filter tap
        bk_tap = math.gcd(Cg, bk)
        if bk_tap >= _dot_block_k(16, prec):
            bk = bk_tap
    w("pid_m = tl.program_id(0)")
    w("pid_n = tl.program_id(1)")
    w("g = tl.program_id(2)")
    w("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]")
    w("rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]")
    w(f"n = rm // {OH * OW}")
    w(f"oh = (rm // {OW}) % {OH}")
    w(f"ow = rm % {OW}")
    w(f"oc = g * {OCg} + rn")
    w(f"x_base = {X.pointer} + {X.layout.offset} + n * {sxn} + g * {Cg * sxc}")
    if transposed:
        swo, swc = swc, swo  # w[c, oc, kh, kw]: input channel first
        w(f"w_base = {Wt.pointer} + {Wt.layout.offset} + rn * {swo} + g * {Cg * swc}")
    else:
        w(f"w_base = {Wt.pointer} + {Wt.layout.offset} + oc * {swo}")
    w("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    if row:
        _row_mainloop(w, prec, (Cg, KH, KW, H, W, M, OCg), (sh, sw, ph, pw, dh, dw), (sxh, sxw, swc))
    elif hwio and Cg % bk == 0:
        _tap_mainloop(w, prec, (K, Cg, KW, H, W, M, OCg), (sh, sw, ph, pw, dh, dw), (sxh, sxw, swc))
    else:
        _gather_mainloop(w, prec, (K, Cg, KH, KW, H, W, M, OCg), (sh, sw, ph, pw, dh, dw),
                         (sxc, sxh, sxw, swc, swh, sww), channels_last, transposed, hwio)
    grid = (cdiv(M, bm), cdiv(OCg, bn), groups)
    return names.__getitem__, grid, {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, M, OCg, \
        2 * math.prod(out_shape) * K, (warps, stages), {"rm", "n", "oh", "ow"}, problem


def _gather_mainloop(w: Writer, prec: str, sizes: tuple[int, ...], geom: tuple[int, ...],
                     strides: tuple[int, ...], channels_last: bool, transposed: bool, hwio: bool) -> None:
    """The general convolution loop: BLOCK_K steps of the (c, kh, kw) reduction index (channel-fastest for a
    channels-last input), each A element gathered through its own index math and mask."""
    K, Cg, KH, KW, H, W, M, OCg = sizes
    sh, sw, ph, pw, dh, dw = geom
    sxc, sxh, sxw, swc, swh, sww = strides
    w(f"for k in range(0, {K}, BLOCK_K):")
    w("    rk = k + tl.arange(0, BLOCK_K)")
    if channels_last:  # channels-last input: K runs channel-fastest, loads contiguous
        w(f"    c = rk % {Cg}")
        w(f"    kw = (rk // {Cg}) % {KW}")
        w(f"    kh = rk // {Cg * KW}")
    else:
        w(f"    c = rk // {KH * KW}")
        w(f"    kh = (rk // {KW}) % {KH}")
        w(f"    kw = rk % {KW}")
    if transposed:  # output (oh, ow) gathers input (ih, iw) with oh = ih * stride - pad + kh * dilation
        w(f"    th = oh + {ph} - kh[None, :] * {dh}")
        w(f"    tw = ow + {pw} - kw[None, :] * {dw}")
        w(f"    ih = tl.where(th >= 0, th, 0) // {sh}")
        w(f"    iw = tl.where(tw >= 0, tw, 0) // {sw}")
        w(f"    a_mask = (rm < {M}) & (rk[None, :] < {K}) & (th >= 0) & (tw >= 0) & (th % {sh} == 0) "
          f"& (tw % {sw} == 0) & (ih < {H}) & (iw < {W})")
    else:
        w(f"    ih = oh * {sh} - {ph} + kh[None, :] * {dh}")
        w(f"    iw = ow * {sw} - {pw} + kw[None, :] * {dw}")
        w(f"    a_mask = (rm < {M}) & (rk[None, :] < {K}) & (ih >= 0) & (ih < {H}) & (iw >= 0) & (iw < {W})")
    w(f"    a = tl.load(x_base + c[None, :] * {sxc} + ih * {sxh} + iw * {sxw}, mask=a_mask, other=0.0)")
    w(f"    b_mask = (rk[:, None] < {K}) & (rn < {OCg})")
    if hwio:
        # HWIO-stored weight (passes/conv_weight_layout): the channel-fastest k is one linear index
        w(f"    b = tl.load(w_base + rk[:, None] * {swc}, mask=b_mask, other=0.0)")
    else:
        w(f"    b = tl.load(w_base + c[:, None] * {swc} + kh[:, None] * {swh} + kw[:, None] * {sww}, mask=b_mask, "
          "other=0.0)")
    w(_dot(prec))


def _tap_mainloop(w: Writer, prec: str, sizes: tuple[int, ...], geom: tuple[int, ...],
                  strides: tuple[int, int, int]) -> None:
    """NHWC convolution with HWIO weights whose BLOCK_K divides the channels: K runs (kh, kw, c) with c
    fastest, so every K step lies inside one filter tap. The tap (kh, kw) and channel offset are scalars of
    the loop counter, the input mask is per output row, and the A tile is BLOCK_K contiguous channels per
    row: vector loads, as in a plain GEMM. (The generic loop's per-element ``rk % C`` hides that.)"""
    K, Cg, KW, H, W, M, OCg = sizes
    sh, sw, ph, pw, dh, dw = geom
    sxh, sxw, swc = strides
    w(f"for k in range(0, {K}, BLOCK_K):")
    w(f"    tap = k // {Cg}")
    w(f"    c0 = tl.multiple_of(k % {Cg}, BLOCK_K)")
    w(f"    ih = oh * {sh} - {ph} + (tap // {KW}) * {dh}")
    w(f"    iw = ow * {sw} - {pw} + (tap % {KW}) * {dw}")
    w(f"    a_mask = (rm < {M}) & (ih >= 0) & (ih < {H}) & (iw >= 0) & (iw < {W})")
    w(f"    a = tl.load(x_base + ih * {sxh} + iw * {sxw} + c0 + tl.arange(0, BLOCK_K)[None, :], mask=a_mask, "
      "other=0.0)")
    w(f"    b = tl.load(w_base + (k + tl.arange(0, BLOCK_K))[:, None] * {swc}, mask=rn < {OCg}, other=0.0)")
    w(_dot(prec))


def _row_mainloop(w: Writer, prec: str, sizes: tuple[int, ...], geom: tuple[int, ...],
                  strides: tuple[int, int, int]) -> None:
    """NHWC convolution of few channels (an RGB stem; passes/stem_input_nhwc) with HWIO weights: K runs
    (kh, kw, c) with c fastest and one K step is one filter row kh, its KW * C elements one contiguous run of
    the input row (BLOCK_K >= KW * C, the rest masked). The (kw, c) index math and its masks are computed
    once, outside the loop; a step only moves to the next input row."""
    Cg, KH, KW, H, W, M, OCg = sizes
    sh, sw, ph, pw, dh, dw = geom
    sxh, sxw, swc = strides
    run = KW * Cg
    w("rr = tl.arange(0, BLOCK_K)  # (kw, c) within a filter row, c fastest")
    w(f"iw = ow * {sw} - {pw} + (rr // {Cg})[None, :] * {dw}")
    w(f"row_mask = (rm < {M}) & (rr[None, :] < {run}) & (iw >= 0) & (iw < {W})")
    if dw == 1 and sxw == Cg:  # the row's elements are contiguous in the input
        w(f"a_off = (ow * {sw} - {pw}) * {sxw} + rr[None, :]")
    else:
        w(f"a_off = iw * {sxw} + (rr % {Cg})[None, :]")
    w(f"b_mask = (rr[:, None] < {run}) & (rn < {OCg})")
    w(f"for kh in range(0, {KH}):")
    w(f"    ih = oh * {sh} - {ph} + kh * {dh}")
    w(f"    a = tl.load(x_base + ih * {sxh} + a_off, mask=row_mask & (ih >= 0) & (ih < {H}), other=0.0)")
    w(f"    b = tl.load(w_base + (kh * {run} + rr[:, None]) * {swc}, mask=b_mask, other=0.0)")
    w(_dot(prec))


def _depthwise_mainloop(w: Writer, X: Operand, Wt: Operand, anchor: Node, out_shape: tuple[int, ...],
                        sizes: tuple[int, int, int, int]) -> None:
    """Depthwise convolution (one input channel per output channel): a BLOCK_M x BLOCK_N tile of (output
    pixel, channel) accumulates KH * KW products, its loads contiguous across channels in NHWC. As an implicit
    GEMM it would waste all but one column of every tensor-core tile."""
    N, C, OH, OW = out_shape
    H, W, KH, KW = sizes
    sh, sw = anchor.attrs["stride"]
    ph, pw = anchor.attrs["padding"]
    dh, dw = anchor.attrs["dilation"]
    sxn, sxc, sxh, sxw = X.layout.strides
    swo, _, swh, sww = Wt.layout.strides
    M = N * OH * OW
    w("pid_m = tl.program_id(0)")
    w("pid_n = tl.program_id(1)")
    w("rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]")
    w("rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]")
    w(f"n = rm // {OH * OW}")
    w(f"oh = (rm // {OW}) % {OH}")
    w(f"ow = rm % {OW}")
    w("oc = rn")
    w(f"x_base = {X.pointer} + {X.layout.offset} + n * {sxn} + rn * {sxc}")
    w(f"w_base = {Wt.pointer} + {Wt.layout.offset} + rn * {swo}")
    w("acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    w(f"for kh in tl.static_range({KH}):")
    w(f"    for kw in tl.static_range({KW}):")
    w(f"        ih = oh * {sh} - {ph} + kh * {dh}")
    w(f"        iw = ow * {sw} - {pw} + kw * {dw}")
    w(f"        a_mask = (rm < {M}) & (rn < {C}) & (ih >= 0) & (ih < {H}) & (iw >= 0) & (iw < {W})")
    w(f"        a = tl.load(x_base + ih * {sxh} + iw * {sxw}, mask=a_mask, other=0.0)")
    w(f"        b = tl.load(w_base + kh * {swh} + kw * {sww}, mask=rn < {C}, other=0.0)")
    w("        acc += a.to(tl.float32) * b.to(tl.float32)")


# ------------------------------------------------------------------------------------------------ int8
_FP32_ACC = "    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)"


def _int8_accumulator(w: Writer, consts: dict[str, int], K: int | None) -> None:
    """int8 GEMM/conv (``passes/quantize_int8``): the main loop accumulates int8 x int8 products exactly in
    an int32 tile (tensor-core IMMA on the GPU; Triton 3.6's interpreter computes int8 dots exactly in
    integers too, checked in tests/test_int8.py). The epilogue (cast, per-channel dequantize scale, bias,
    activation, residual, requantize) is ordinary IR in the body. int8 ``tl.dot`` wants BLOCK_K >= 32.
    The depthwise loop (no ``tl.dot``) keeps its fp32 accumulator: KH * KW int8 products sum exactly there."""
    if not any("tl.dot(" in ln for ln in w.lines):
        return
    i = w.lines.index(_FP32_ACC)  # raises if the main loop changed shape: never emit a float accumulator
    w.lines[i] = _FP32_ACC.replace("tl.float32", "tl.int32")
    consts["BLOCK_K"] = max(32, consts["BLOCK_K"])


def _fp8_block_k(consts: dict[str, int], K: int | None) -> None:
    """fp8 GEMM (``precision="fp8"``): e4m3 tiles accumulate in the fp32 tile; fp8 ``tl.dot`` wants
    BLOCK_K >= 32."""
    consts["BLOCK_K"] = max(32, consts["BLOCK_K"])
