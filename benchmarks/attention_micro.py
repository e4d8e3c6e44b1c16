"""Attention micro-benchmark on the GPU: the structure trtjit's attention template emits, with variations,
against torch's SDPA (flash), on the bs32 shapes of vit_b_16 (197 tokens) and bert/gpt2 (128 tokens).

    python benchmarks/attention_micro.py [--json out.json]

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


SHAPES = {"vit32": (32, 12, 197, 64), "bert32": (32, 12, 128, 64)}
CONFIGS = [(128, 64, 8, 2), (128, 64, 4, 2), (128, 64, 8, 3), (128, 128, 8, 2), (128, 32, 4, 3), (64, 64, 4, 2),
           (64, 64, 4, 3), (64, 128, 4, 2), (64, 32, 4, 3), (128, 128, 8, 3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = []
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
                try:
                    run()
                    err = ((o.float() - ref.float()).abs().max()).item()
                    ms = do_bench_cudagraph(run)
                except Exception as e:  # a variant that does not compile is reported, not fatal
                    print(f"{sname:7s} {bm}x{bn} w{w} s{s} exp2={exp2}: {type(e).__name__} {str(e)[:160]}", flush=True)
                    continue
                rows.append({"shape": sname, "variant": f"{bm}x{bn} w{w} s{s} exp2={exp2}", "ms": ms, "err": err})
                print(f"{sname:7s} {bm}x{bn} w{w} s{s} exp2={exp2} {ms * 1e3:8.1f} us {flop / ms / 1e9:6.0f} TFLOP/s "
                      f"err {err:.1e}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
