"""Attention template: one flash-attention kernel for scaled_dot_product_attention.

A program owns BLOCK_M query rows of one (batch, head) and streams the keys and values in BLOCK_N
tiles, keeping the running row maximum, the softmax denominator and the output accumulator in registers
(online softmax), so the L x S score matrix never reaches memory. Causal masking, boolean or additive
masks of any broadcastable layout, and grouped-query heads (several query heads per key/value head) are
handled in the tile loop. The output is stored through its layout, so a permuted store (``out_perm``)
makes the usual permute + reshape after attention free.
"""

from __future__ import annotations

import math

import torch
from trtjit.codegen.common import (
    FILL_MIN_ELEMENTS,
    SMS,
    KernelInput,
    KernelSpec,
    Writer,
    cdiv,
    check_index_range,
    element_bytes,
    lit,
    next_pow2,
    offset_expr,
    store_cast,
)

from trtjit.backend import interpreting
from trtjit.dynamic import hint
from trtjit.errors import BuildError
from trtjit.layout import Layout

_LOG2E = 1.4426950408889634
_FP32_MAX = 3.4028234663852886e38


def _log2_fill(fill: float | None) -> float:
    """A boolean mask's fill value in log2 units. A finite fill stays finite (finfo.min * log2(e) would
    overflow fp32): a fully masked row of equal finite scores then keeps torch's uniform weights."""
    if fill is None:
        return float("-inf")
    f = float(fill) * _LOG2E
    return max(-_FP32_MAX, min(_FP32_MAX, f)) if math.isfinite(float(fill)) else f


def _drop2(lay: Layout) -> Layout:
    return Layout(lay.root, lay.shape[:-2], lay.strides[:-2], lay.offset)


def generate(kin: KernelInput, name: str) -> KernelSpec:
    node = next(n for n in kin.body if n.op == "sdpa")
    ins = [kin.operands[v.node] for v in kin.body.inputs_of(node.name)]
    q, k, v = ins[:3]
    mask = ins[3] if len(ins) > 3 else None
    if any(op.layout is None for op in (q, k, v)) or (mask is not None and mask.layout is None):
        raise BuildError(f"node {kin.node.name!r}: attention operands must be tensors")
    (ptr, spec), = kin.outputs
    out_lay = kin.out_layouts[0]
    shape = spec.shape
    if len(shape) < 3:
        raise BuildError(f"node {kin.node.name!r}: attention needs [..., L, E] operands with a batch dim, got {list(shape)}")
    batch = shape[:-2]
    L, D = q.layout.shape[-2], q.layout.shape[-1]
    S, Dv = k.layout.shape[-2], v.layout.shape[-1]
    check_index_range(kin.node.name, math.prod(shape), math.prod(k.layout.shape), L * S * math.prod(batch))
    scale = node.attrs["scale"] if node.attrs["scale"] is not None else 1.0 / math.sqrt(D)
    half = q.dtype in (torch.float16, torch.bfloat16)
    # 128-row query blocks for 16-bit heads up to 64 wide; a causal one takes 64 rows, whose diagonal blocks
    # skip the keys above them (a quarter of the work at 128 tokens).
    big = L >= 128 and half and D <= 64 and not node.attrs["is_causal"]
    bm = 128 if big else max(16, min(64, next_pow2(L)))
    programs = hint(math.prod(batch))
    while bm > 16 and cdiv(hint(L), bm) * programs < SMS // 2 and hint(L) * S * programs >= FILL_MIN_ELEMENTS:
        bm //= 2  # few (batch, head) pairs of a sizeable attention (batch 1): more query blocks fill the GPU
    # Query blocks of long 16-bit sequences take 32-key steps in 4 warps: 23.4 against 24.8 us in 128-row
    # blocks (vit_b_16, 197 tokens, padded to 224 keys instead of 256; 64-row blocks: 24.0 against 24.9)
    # and 8.4 against 8.6 us (bert, 128 tokens) at batch 32 on the H200 (benchmarks/attention_micro.py,
    # two sessions). Fewer keys than that take one step of at least 16.
    bn = max(16, min(32 if big else 64, next_pow2(S)))
    bd, bdv = max(16, next_pow2(D)), max(16, next_pow2(Dv))
    prec = "tf32" if kin.tf32 else "ieee"
    # Scores live in log2 units (scale * log2(e) folded in) so the softmax is exp2, one MUFU op (tl.exp adds
    # a range fix): 9-20% faster on the H200 (benchmarks/attention_micro.py). An additive float mask would
    # need its values scaled too, and finfo.min * log2(e) overflows to -inf, which changes a fully masked
    # row (uniform weights in torch): such masks keep natural units and tl.exp.
    log2 = mask is None or mask.dtype == torch.bool
    exp = "tl.exp2" if log2 else "tl.exp"
    # Rows can lose every key only to a mask; without one the running maximum is finite after the first tile.
    can_empty = mask is not None
    upcast = q.dtype == torch.bfloat16 and interpreting()
    nb = len(batch)
    w = Writer()
    w("pid_m = tl.program_id(0)")
    w("pid_b = tl.program_id(1)")
    inner = 1
    names: dict[int, str] = {}
    for j in reversed(range(nb)):
        e = "pid_b" if inner == 1 else f"pid_b // {inner}"
        w(f"b{j} = ({e}) % {batch[j]}")
        names[j] = f"b{j}"
        inner *= batch[j]
    heads = batch[-1] if nb else 1
    kv_heads = k.layout.shape[-3] if len(k.layout.shape) >= 3 else 1
    group = heads // kv_heads if node.attrs["enable_gqa"] and kv_heads != heads else 1

    def kv_var(j: int) -> str:
        return f"({names[j]} // {group})" if group > 1 and j == nb - 1 else names[j]

    q_off, _ = offset_expr(_drop2(q.layout), batch, names.__getitem__)
    k_off, _ = offset_expr(_drop2(k.layout), batch, kv_var)
    v_off, _ = offset_expr(_drop2(v.layout), batch, kv_var)
    sqm, sqd = q.layout.strides[-2:]
    skn, skd = k.layout.strides[-2:]
    svn, svd = v.layout.strides[-2:]
    # Masks only where a tile overhangs: keys S % BLOCK_N, head dims D < BLOCK_D (e.g. 80 in 128).
    n_part, d_part, dv_part = S % bn != 0, D != bd, Dv != bdv

    def both(a: str | None, b: str | None) -> str:
        m = " & ".join(x for x in (a, b) if x)
        return f", mask={m}, other=0.0" if m else ""

    w("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    w("offs_d = tl.arange(0, BLOCK_D)")
    w("offs_dv = tl.arange(0, BLOCK_DV)")
    w(f"q = tl.load({q.pointer} + {q_off} + offs_m[:, None] * {sqm} + offs_d[None, :] * {sqd}"
      f"{both(f'(offs_m[:, None] < {L})', f'(offs_d[None, :] < {D})' if d_part else None)})")
    if upcast:
        w("q = q.to(tl.float32)")
    w("m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)")
    w("l_i = tl.zeros([BLOCK_M], dtype=tl.float32)")
    w("acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)")
    # Keys that overhang the last tile (vit_b_16: 197 = 6 x 32 + 5) run as one masked step of TAIL_N keys after
    # a loop of whole, unmasked tiles: 23.8 against 25.6 us per layer at batch 32 on the H100, q, k and v
    # strided out of the fused projection as in the engine (benchmarks/attention_micro.py,
    # runs/2026-12-06-s4/attn.log). Causal blocks end at their diagonal, so they keep the masked loop.
    peel = n_part and S > bn and not node.attrs["is_causal"]
    tail_n = max(16, next_pow2(S % bn)) if peel else 0
    end = f"tl.minimum({S}, (pid_m + 1) * BLOCK_M)" if node.attrs["is_causal"] else str(S - S % bn if peel else S)

    if mask is not None:
        mvars = {**names, nb: "offs_m[:, None]", nb + 1: "offs_n[None, :]"}
        m_off, m_used = offset_expr(mask.layout, batch + (L, S), mvars.__getitem__)
        # a mask broadcast along L or S (shape [L, 1], [1, 1], [B, 1, 1, 1]) still needs a [BLOCK_M, BLOCK_N]
        # pointer block: tl.load broadcasts the pointer to the mask, never the other way
        m_off += ("" if nb in m_used else " + offs_m[:, None] * 0") + ("" if nb + 1 in m_used else " + offs_n[None, :] * 0")
        inb = f"(offs_m[:, None] < {L}) & (offs_n[None, :] < {S})"

    def step(pad: str, block: str, masked: bool) -> None:
        """One key tile of online softmax at ``start``, ``block`` keys wide (masked where ``masked``), each
        line indented by ``pad``."""
        def line(text: str) -> None:
            w(pad + text)

        n_in = masked and n_part
        line(f"offs_n = start + tl.arange(0, {block})")
        line(f"kt = tl.load({k.pointer} + {k_off} + offs_n[None, :] * {skn} + offs_d[:, None] * {skd}"
             f"{both(f'(offs_n[None, :] < {S})' if n_in else None, f'(offs_d[:, None] < {D})' if d_part else None)})")
        if upcast:
            line("kt = kt.to(tl.float32)")
        line(f's = tl.dot(q, kt, input_precision="{prec}") * {scale * _LOG2E if log2 else scale!r}')
        if mask is not None:
            if mask.dtype == torch.bool:
                line(f"keep = tl.load({mask.pointer} + {m_off}, mask={inb}, other=0)")
                fill = node.attrs.get("mask_fill")
                line(f"s = tl.where(keep, s, {lit(_log2_fill(fill))})")
            else:
                line(f"s = s + tl.load({mask.pointer} + {m_off}, mask={inb}, other=0.0).to(tl.float32)")
        if node.attrs["is_causal"]:
            line("s = tl.where(offs_m[:, None] >= offs_n[None, :], s, float('-inf'))")
        if n_in:
            line(f"s = tl.where(offs_n[None, :] < {S}, s, float('-inf'))")
        line("m_new = tl.maximum(m_i, tl.max(s, 1))")
        if can_empty:
            line("m_safe = tl.where(m_new == float('-inf'), 0.0, m_new)  # rows masked so far stay empty")
        m_safe = "m_safe" if can_empty else "m_new"
        line(f"p = {exp}(s - {m_safe}[:, None])")
        line(f"alpha = {exp}(m_i - {m_safe})")
        line("l_i = l_i * alpha + tl.sum(p, 1)")
        line(f"vt = tl.load({v.pointer} + {v_off} + offs_n[:, None] * {svn} + offs_dv[None, :] * {svd}"
             f"{both(f'(offs_n[:, None] < {S})' if n_in else None, f'(offs_dv[None, :] < {Dv})' if dv_part else None)})")
        if upcast:
            line(f'acc = acc * alpha[:, None] + tl.dot(p, vt.to(tl.float32), input_precision="{prec}")')
        else:
            line(f'acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision="{prec}")')
        line("m_i = m_new")

    w(f"for start in range(0, {end}, BLOCK_N):")
    step("    ", "BLOCK_N", not peel)
    if peel:
        w(f"start = {S - S % bn}  # the last {S % bn} keys, in one masked tile")
        step("", "TAIL_N", True)
    if can_empty:
        w("out = tl.where(l_i[:, None] > 0, acc / l_i[:, None], 0.0)  # every key masked: 0, as torch's sdpa")
    else:
        w("out = acc / l_i[:, None]")
    o_off, _ = offset_expr(_drop2(out_lay), batch, names.__getitem__)
    som, sod = out_lay.strides[-2:]
    w(f"tl.store({ptr} + {o_off} + offs_m[:, None] * {som} + offs_dv[None, :] * {sod}, {store_cast('out', spec.dtype)}, "
      f"mask=(offs_m[:, None] < {L}) & (offs_dv[None, :] < {Dv}))")
    doc = (f"flash attention: {list(q.layout.shape)} x {list(k.layout.shape)} -> {list(shape)}, "
           f"{'causal, ' if node.attrs['is_causal'] else ''}{'mask, ' if mask is not None else ''}"
           f"{f'{group} query heads per kv head, ' if group > 1 else ''}scale {scale:.6g}")
    consts = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd, "BLOCK_DV": bdv, **({"TAIL_N": tail_n} if peel else {})}
    src = w.source(name, kin.pointers, list(consts), doc)
    # score and value products over the (query, key) pairs the mask keeps (torch's causal mask is top-left
    # aligned); the kernel computes whole diagonal tiles, a little more than this
    pairs = sum(min(S, i + 1) for i in range(hint(L))) if node.attrs["is_causal"] else L * S
    flops = 2 * math.prod(batch) * pairs * (D + Dv)
    return KernelSpec(name, "attention", kin.node.name, src, (cdiv(L, bm), math.prod(batch)), consts, kin.args,
                      kin.covers, [], num_warps=4, num_stages=3 if bm >= 128 else 2, flops=flops,
                      bytes=element_bytes(kin))
