"""The attention template's key loop: whole BLOCK_N tiles without masks, then the keys that overhang them in
one masked TAIL_N tile (vit_b_16's 197 tokens), checked against PyTorch at fp16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trtjit
from tests.conftest import assert_close_rel


class Attention(nn.Module):
    def forward(self, q, k, v, mask=None):
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("with_mask", [False, True])
def test_key_tail_tile_matches_torch(gen, with_mask):
    q, k, v = (torch.randn(1, 2, 150, 32, generator=gen).half() for _ in range(3))
    args = (q, k, v)
    if with_mask:
        mask = torch.rand(150, 150, generator=gen) > 0.3
        mask[:, 0] = True  # every query keeps a key
        args = (*args, mask)
    engine = trtjit.compile(Attention().eval(), args)
    (kern,) = [k for k in engine.kernels if k.template == "attention"]
    # 128-row query blocks step 32 keys at a time: 4 whole tiles (128 keys), then 22 keys in a 32-key tile
    assert kern.constexprs["BLOCK_N"] == 32 and kern.constexprs["TAIL_N"] == 32
    assert "for start in range(0, 128, BLOCK_N):" in kern.source and "start = 128" in kern.source
    loop = kern.source[kern.source.index("for start"):kern.source.index("start = 128")]
    assert "< 150" not in loop.replace("(offs_m[:, None] < 150) & (offs_n[None, :] < 150)", "")  # no key mask
    with torch.no_grad():
        ref = Attention()(*[a.float() if a.is_floating_point() else a for a in args])
        assert_close_rel(engine(*args), ref.half())
