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
def test_fp32_made_inside_the_model_feeds_16_bit_gemms(gen, precision):
    """Before: "operands have different dtypes torch.float32 and torch.float16" at build time."""
    torch.manual_seed(0)
    model = Uint8Image().eval()
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision=precision, verify=True)
    rec = next(r for r in engine.build_log if r.name == "assign_precision")
    assert any(e["rule"].startswith("fp32 operand of a 16-bit GEMM") and e["fired"] for e in rec.events)
    with torch.no_grad():
        assert_close_rel(engine(x.to(DEVICE)), model(x.to(DEVICE)), tol=2e-2)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_explicit_qdq_layers_stay_int8_under_16_bit_precision(gen, precision):
    """A fake-quantized conv runs int8 with the graph's scales whatever the precision (quantize_int8's
    explicit quantization): its weight stays on the int8 grid and its input is not lowered. (Before: the
    build failed with "operands have different dtypes".)"""
    torch.manual_seed(0)
    model = FakeQuantConv().eval()
    x = torch.randn(2, 3, 8, 8, generator=gen)
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision=precision, verify=True)
    assert [(r["layer"], r["precision"]) for r in engine.precision_report()] == [("conv2d", "int8")]
    assert engine.precision_report()[0]["reason"].startswith("explicit Q/DQ")
    with torch.no_grad():
        assert_close_rel(engine(x.to(DEVICE)), model(x.to(DEVICE)), tol=2e-2)


class MaskedAttention(torch.nn.Module):
    """An fp32 additive mask made from an int tensor, finite (-2**62): a fully masked query row attends
    uniformly, as in torch, only while the mask stays fp32 (in fp16 it would be -inf)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)

    def forward(self, x, keep):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        mask = ((1 - keep) * -(2 ** 62)).to(x.dtype)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_an_attention_mask_is_not_lowered_with_the_operands(gen):
    torch.manual_seed(0)
    model = MaskedAttention().eval()
    x = torch.randn(2, 12, 16, generator=gen)
    keep = (torch.rand(2, 1, 12, 12, generator=gen) > 0.5).long()
    keep[0, 0, 3, :] = 0  # a fully masked query row
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE), keep.to(DEVICE)), precision="fp16", verify=True)
    with torch.no_grad():
        ref = model(x.to(DEVICE), keep.to(DEVICE))
    out = engine(x.to(DEVICE), keep.to(DEVICE))
    assert_close_rel(out[0, :, 3], ref[0, :, 3], tol=1e-2)  # the uniform row
    assert_close_rel(out, ref, tol=1e-2)


class PaddingMaskAttention(torch.nn.Module):
    """The additive padding mask of HF encoders: ``(1 - keep) * fill`` with ``fill`` -1e5 or
    finfo(float32).min, beyond fp16's range (and, for finfo.min, bf16's)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.fill = fill

    def forward(self, x, keep):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        mask = (1.0 - keep[:, None, None, :].to(x.dtype)) * self.fill
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("fill", [-1e5, torch.finfo(torch.float32).min])
def test_a_mask_fill_beyond_16_bits_stays_finite(gen, precision, fill):
    """Before: the fill constant became -inf in 16 bits, 0 * -inf made the kept keys NaN, error 1.0."""
    torch.manual_seed(0)
    model = PaddingMaskAttention(fill).eval()
    x = torch.randn(2, 10, 16, generator=gen)
    keep = torch.ones(2, 10, dtype=torch.long)
    keep[0, 7:] = 0  # padding
    engine = trtjit.compile(model.to(DEVICE), (x.to(DEVICE), keep.to(DEVICE)), precision=precision, verify=True)
    with torch.no_grad():
        ref = model(x.to(DEVICE), keep.to(DEVICE))
    assert_close_rel(engine(x.to(DEVICE), keep.to(DEVICE)), ref, tol=2e-2)


def test_a_weight_beyond_fp16_is_a_clear_build_error(gen):
    model = torch.nn.Linear(4, 3).eval()
    with torch.no_grad():
        model.weight[0, 0] = 1e6
    with pytest.raises(trtjit.BuildError, match=r"beyond float16's range; keep this layer in fp32"):
        trtjit.compile(model.to(DEVICE), (torch.randn(2, 4, generator=gen).to(DEVICE),), precision="fp16")
