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


class Uint8Image(torch.nn.Module):
    """A uint8 image scaled to float inside the model: its fp32 is made in the graph, not by an input cast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x.float() / 255.0))
        return self.fc(y.mean((2, 3)))


class FakeQuantConv(torch.nn.Module):
    """QAT-style fake quantization of the activation and weight (explicit Q/DQ), run at 16 bits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.w_scale = float(self.conv.weight.detach().abs().max()) / 127

    def forward(self, x):
        w = torch.fake_quantize_per_tensor_affine(self.conv.weight, self.w_scale, 0, -128, 127)
        return torch.nn.functional.conv2d(torch.fake_quantize_per_tensor_affine(x, 0.03, 0, -128, 127), w,
                                          self.conv.bias, padding=1)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("make", [Uint8Image, FakeQuantConv])
def test_fp32_made_inside_the_model_feeds_16_bit_gemms(gen, precision, make):
    """Before: "operands have different dtypes torch.float32 and torch.float16" at build time."""
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=gen) if make is Uint8Image \
        else torch.randn(2, 3, 8, 8, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision=precision, verify=True)
    rec = next(r for r in engine.build_log if r.name == "assign_precision")
    assert any(e["rule"].startswith("fp32 operand of a 16-bit GEMM") and e["fired"] for e in rec.events)
    with torch.no_grad():
        assert_close_rel(engine(x.to(DEVICE)), model(x.to(DEVICE)), tol=2e-2)
