"""Attention micro-benchmark on the GPU: the structure trtjit's attention template emits, with variations,
against torch's SDPA (flash), on the bs32 shapes of vit_b_16 (197 tokens) and bert/gpt2 (128 tokens).

    python benchmarks/attention_micro.py [--json out.json] [--fused-only]

It answers which BLOCK_M / BLOCK_N / warps / stages and exp form the template's defaults should take;
nothing here is used by the compiler.
"""

from __future__ import annotations

import argparse
import functools
import json
import math

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph


@triton.jit
def attn(q_ptr, k_ptr, v_ptr, o_ptr, L, S, scale, H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
         D: tl.constexpr, EXP2: tl.constexpr, EVEN_N: tl.constexpr):
    """Online-softmax attention over [B, H, L, D] contiguous tensors, one (query block, batch*head) per
    program, as the template emits it; EXP2 folds log2(e) into the scale and uses exp2."""
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1)
    base = pid_b.to(tl.int64) * L * D
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(q_ptr + base + offs_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < L, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    qk_scale = scale * 1.4426950408889634 if EXP2 else scale
    for start in range(0, S, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        if EVEN_N:
            kt = tl.load(k_ptr + base + offs_n[None, :] * D + offs_d[:, None])
        else:
            kt = tl.load(k_ptr + base + offs_n[None, :] * D + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
        s = tl.dot(q, kt) * qk_scale
        if not EVEN_N:
            s = tl.where(offs_n[None, :] < S, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if EXP2:
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
        else:
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if EVEN_N:
            v = tl.load(v_ptr + base + offs_n[:, None] * D + offs_d[None, :])
        else:
            v = tl.load(v_ptr + base + offs_n[:, None] * D + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + base + offs_m[:, None] * D + offs_d[None, :], out.to(tl.float16), mask=offs_m[:, None] < L)


@triton.jit
def _step(q, k_base, v_base, row, start, m_i, l_i, acc, offs_d, qk_scale, S: tl.constexpr, BLOCK_N: tl.constexpr,
          MASKED: tl.constexpr):
    """One key tile of online softmax (log2 units): the template's loop body."""
    offs_n = start + tl.arange(0, BLOCK_N)
    if MASKED:
        kt = tl.load(k_base + offs_n[None, :] * row + offs_d[:, None], mask=offs_n[None, :] < S, other=0.0)
    else:
        kt = tl.load(k_base + offs_n[None, :] * row + offs_d[:, None])
    s = tl.dot(q, kt) * qk_scale
    if MASKED:
        s = tl.where(offs_n[None, :] < S, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if MASKED:
        v = tl.load(v_base + offs_n[:, None] * row + offs_d[None, :], mask=offs_n[:, None] < S, other=0.0)
    else:
        v = tl.load(v_base + offs_n[:, None] * row + offs_d[None, :])
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _block(qkv, o, pid_m, b, h, scale, L: tl.constexpr, S: tl.constexpr, H: tl.constexpr, D: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, M0: tl.constexpr):
    """Query rows [M0 + pid_m * BLOCK_M, + BLOCK_M) of head h of image b. TAIL_N == 0: every key tile in the
    loop, masked if S % BLOCK_N; else the whole tiles unmasked, then one masked TAIL_N-key tile."""
    row = 3 * H * D
    q_base = qkv + b.to(tl.int64) * L * row + h * D
    k_base = q_base + H * D
    v_base = q_base + 2 * H * D
    offs_m = M0 + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(q_base + offs_m[:, None] * row + offs_d[None, :], mask=offs_m[:, None] < L, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    qk_scale = scale * 1.4426950408889634
    if TAIL_N == 0 or S % BLOCK_N == 0:
        for start in range(0, S, BLOCK_N):
            m_i, l_i, acc = _step(q, k_base, v_base, row, start, m_i, l_i, acc, offs_d, qk_scale, S, BLOCK_N,
                                  S % BLOCK_N != 0)
    else:
        for start in range(0, S - S % BLOCK_N, BLOCK_N):
            m_i, l_i, acc = _step(q, k_base, v_base, row, start, m_i, l_i, acc, offs_d, qk_scale, S, BLOCK_N, False)
        m_i, l_i, acc = _step(q, k_base, v_base, row, S - S % BLOCK_N, m_i, l_i, acc, offs_d, qk_scale, S, TAIL_N,
                              True)
    out = acc / l_i[:, None]
    o_base = o + b.to(tl.int64) * L * H * D + h * D
    tl.store(o_base + offs_m[:, None] * (H * D) + offs_d[None, :], out.to(tl.float16), mask=offs_m[:, None] < L)


@triton.jit
def attn_fused(qkv, o, scale, L: tl.constexpr, S: tl.constexpr, H: tl.constexpr, D: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, QTAIL_M: tl.constexpr):
    """Attention as vit's engine reads it: q, k and v strided out of the fused [B, L, 3, H, D] projection, the
    output stored [B, L, H, D]. QTAIL_M > 0: the last query block (L % BLOCK_M <= QTAIL_M rows) runs in
    QTAIL_M rows."""
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1)
    b = pid_b // H
    h = pid_b % H
    if QTAIL_M == 0:
        _block(qkv, o, pid_m, b, h, scale, L, S, H, D, BLOCK_M, BLOCK_N, TAIL_N, 0)
    elif pid_m < L // BLOCK_M:
        _block(qkv, o, pid_m, b, h, scale, L, S, H, D, BLOCK_M, BLOCK_N, TAIL_N, 0)
    else:
        _block(qkv, o, 0, b, h, scale, L, S, H, D, QTAIL_M, BLOCK_N, TAIL_N, L - L % BLOCK_M)


# (BLOCK_M, BLOCK_N, TAIL_N, QTAIL_M, warps, stages); the template's choice first. BLOCK_N >= S: one key tile.
FUSED = [(128, 32, 0, 0, 4, 3), (128, 32, 16, 0, 4, 3), (128, 64, 16, 0, 4, 3), (128, 64, 16, 0, 8, 3),
         (64, 64, 16, 0, 4, 3), (64, 32, 16, 0, 4, 3), (64, 64, 16, 16, 4, 3), (64, 32, 16, 16, 4, 3),
         (64, 64, 16, 0, 4, 2), (128, 128, 0, 0, 8, 2), (64, 256, 0, 0, 4, 2), (128, 256, 0, 0, 8, 2),
         (64, 256, 0, 16, 4, 2), (64, 128, 0, 16, 4, 2)]


def time_attention(shape: str, label: str, run, o: torch.Tensor, ref: torch.Tensor, flop: int) -> dict | None:
    """Run one variant into ``o``, check it against ``ref``, time it and print a line; None (and the error) where
    this Triton cannot build or run it."""
    try:
        run()
        err = ((o.float() - ref.float()).abs().max()).item()
        ms = do_bench_cudagraph(run)
    except Exception as e:  # a variant that does not compile is reported, not fatal
        print(f"{shape:7s} {label}: {type(e).__name__} {str(e)[:160]}", flush=True)
        return None
    print(f"{shape:7s} {label} {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s err {err:.1e}", flush=True)
    return {"shape": shape, "variant": label, "ms": ms, "err": err}


def fused_rows(B: int, H: int, L: int, D: int) -> list[dict]:
    """The FUSED variants against torch's SDPA on the same strided views."""
    qkv = torch.randn(B, L, 3, H, D, device="cuda", dtype=torch.float16)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    flop = 4 * B * H * L * L * D
    name = f"fused L={L}"
    ms = do_bench_cudagraph(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v))
    print(f"{name} torch sdpa (strided views) {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
    rows = [{"shape": name, "variant": "torch sdpa", "ms": ms}]
    for bm, bn, tn, qt, w, st in FUSED:
        o = torch.full((B, L, H, D), float("nan"), device="cuda", dtype=torch.float16)
        blocks = L // bm + (L % bm != 0)
        run = functools.partial(attn_fused[(blocks, B * H)], qkv, o, 1 / math.sqrt(D), L=L, S=L, H=H, D=D, BLOCK_M=bm,
                                BLOCK_N=bn, TAIL_N=tn, QTAIL_M=qt if L % bm else 0, num_warps=w, num_stages=st)
        row = time_attention(name, f"{bm}x{bn} tail_n={tn} qtail={qt} w{w} s{st}", run, o, ref, flop)
        rows += [row] if row else []
    return rows


SHAPES = {"vit32": (32, 12, 197, 64), "bert32": (32, 12, 128, 64)}
CONFIGS = [(128, 64, 8, 2), (128, 64, 4, 2), (128, 64, 8, 3), (128, 128, 8, 2), (128, 32, 4, 3), (64, 64, 4, 2),
           (64, 64, 4, 3), (64, 128, 4, 2), (64, 32, 4, 3), (128, 128, 8, 3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default=None)
    p.add_argument("--fused-only", action="store_true", help="only the engine-layout variants (FUSED)")
    a = p.parse_args()
    rows = fused_rows(32, 12, 197, 64) + fused_rows(32, 12, 128, 64)
    if a.fused_only:
        SHAPES.clear()
    for sname, (B, H, L, D) in SHAPES.items():
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.float16) for _ in range(3))
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        flop = 4 * B * H * L * L * D
        ms = do_bench_cudagraph(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v))
        rows.append({"shape": sname, "variant": "torch sdpa", "ms": ms})
        print(f"{sname:7s} torch sdpa {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s", flush=True)
        for bm, bn, w, s in CONFIGS:
            for exp2 in (0, 1):
                o = torch.empty_like(q)
                run = functools.partial(attn[(triton.cdiv(L, bm), B * H)], q, k, v, o, L, L, 1 / math.sqrt(D), H=H,
                                        BLOCK_M=bm, BLOCK_N=bn, D=D, EXP2=exp2, EVEN_N=L % bn == 0, num_warps=w,
                                        num_stages=s)
                row = time_attention(sname, f"{bm}x{bn} w{w} s{s} exp2={exp2}", run, o, ref, flop)
                rows += [row] if row else []
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
