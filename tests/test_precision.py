"""16-bit precision: weights converted, I/O dtypes kept, per-layer fp32 overrides."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, assert_close_rel

import trtjit
from trtjit.examples import example


@pytest.mark.parametrize("precision,tol", [("fp16", 1e-2), ("bf16", 2e-2)])
def test_example_in_16_bit(precision, tol):
    model, inputs = example("example_net")
    model, inputs = model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs)
    engine = trtjit.compile(model, inputs, precision=precision, verify=True)
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    consts = [n for n in engine.graph if n.op == "constant" and n.value.dtype.is_floating_point and n.value.numel() > 1]
    assert consts and all(n.value.dtype == want for n in consts)
    out = engine(*inputs)
    assert out.dtype == torch.float32  # the caller's dtype is kept
    with torch.no_grad():
        assert_close_rel(out, model(*inputs), tol=tol)


def test_keep_fp32_override(gen):
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(4, 16, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision="fp16", keep_fp32=("1",), opt_level=1)
    norm_ops = [n for n in engine.graph if n.name.startswith("1.") and n.op not in ("constant", "cast")]
    assert norm_ops and all(s.dtype == torch.float32 for n in norm_ops for s in n.outputs)
    gemm_outs = [n for n in engine.graph if n.op == "matmul"]
    assert all(n.spec.dtype == torch.float16 for n in gemm_outs)
    rec = next(r for r in engine.build_log if r.name == "assign_precision")
    assert any(e["rule"].startswith("keep_fp32") and e["fired"] for e in rec.events)
    with torch.no_grad():
        assert_close_rel(engine(x.to(DEVICE)), model(x.to(DEVICE)), tol=1e-2)
