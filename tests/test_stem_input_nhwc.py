"""passes/stem_input_nhwc.py and the row-per-step stem loop it enables (codegen/gemm.py ``_row_mainloop``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trtjit
from tests.conftest import assert_close_rel

STEM_RULE = "few-channel NCHW conv input => NHWC copy"


def _events(engine, fired: bool) -> list[dict]:
    return [e for r in engine.build_log for e in r.events if e["rule"] == STEM_RULE and e["fired"] == fired]


class TwoHeads(nn.Module):
    """Two few-channel convolutions of one image: one NHWC copy serves both."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.b = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.a(x)) + self.b(x)


def _resnet_stem() -> nn.Module:
    m = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                      nn.Conv2d(16, 8, 3, padding=1))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("make", "shape", "taps"), [
    (_resnet_stem, (2, 3, 20, 18), 7),                                   # resnet50's 7x7 / 2 stem
    (lambda: nn.Conv2d(4, 8, 5, padding=4, dilation=2).eval(), (2, 4, 9, 11), 5),  # dilated: no contiguous run
    (TwoHeads, (3, 3, 12, 12), 5),
])
def test_stem_reads_an_nhwc_copy_of_its_image(make, shape, taps, dtype, gen):
    model = make().to(dtype)
    x = torch.randn(*shape, generator=gen).to(dtype)
    engine = trtjit.compile(model, (x,), verify=True)
    copies = [k for k in engine.kernels if k.name.startswith("nhwc_")]
    assert len(copies) == 1 and engine.graph.node(copies[0].node).attrs["out_perm"] == [0, 2, 3, 1]
    rows = [k for k in engine.kernels if k.template == "conv" and f"for kh in range(0, {taps}):" in k.source]
    assert len(rows) == len(_events(engine, True)) >= 1
    with torch.no_grad():
        ref = model.double()(x.double())
    assert_close_rel(engine(x).double(), ref, 1e-4 if dtype == torch.float32 else 1e-2)


def test_one_step_stems_and_many_channels_keep_their_input(gen):
    """mobilenet_v2's 3x3 stem (K = 27) gathers in one K step: no copy, and the build log says why; a
    16-channel NCHW input is left to the channel-fastest loops; one channel is stored NHWC already; a filter
    row longer than the row loop takes is not copied for nothing."""
    for model, x in ((nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6()).eval(), torch.randn(2, 3, 16, 16)),
                     (nn.Conv2d(16, 8, 3).eval(), torch.randn(2, 16, 8, 8)),
                     (nn.Conv2d(1, 8, 9).eval(), torch.randn(2, 1, 12, 12)),         # one channel: already NHWC
                     (nn.Conv2d(6, 8, (1, 11)).eval(), torch.randn(2, 6, 4, 14))):   # a 66-element filter row
        engine = trtjit.compile(model, (x,), verify=True)
        assert not [k for k in engine.kernels if k.name.startswith("nhwc_")] and not _events(engine, True)
        with torch.no_grad():
            assert_close_rel(engine(x), model(x), 1e-4)
    skipped = _events(trtjit.compile(nn.Conv2d(3, 8, 3, 2, 1).eval(), (torch.randn(2, 3, 16, 16),)), False)
    assert skipped and "one K step" in skipped[0]["detail"]


class Normalized(nn.Module):
    """An image normalized in the model, then the stem: the normalizing kernel stores NHWC, no copy."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 8, 7, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stem((x - self.mean) / self.std))


def test_a_preprocessing_kernel_stores_nhwc_itself(gen):
    model = Normalized().eval()
    x = torch.rand(2, 3, 16, 16, generator=gen)
    engine = trtjit.compile(model, (x,), verify=True)
    assert not [k for k in engine.kernels if k.name.startswith("nhwc_")]
    (pre,) = [k for k in engine.kernels if k.template == "pointwise"]
    assert engine.graph.node(pre.node).attrs["out_perm"] == [0, 2, 3, 1]
    assert "stores NHWC" in _events(engine, True)[0]["detail"]
    (conv,) = [k for k in engine.kernels if k.template == "conv"]
    assert "for kh in range(0, 7):" in conv.source
    with torch.no_grad():
        assert_close_rel(engine(x), model(x), 1e-4)


class RowMaxStem(nn.Module):
    """The stem reads a row statistic (a max over a trailing group dim), which the reduction template stores
    dense whatever the layout: the stem reads an NHWC copy of it instead of asking that kernel for NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x.reshape(2, 3, 8, 8, 4).amax(-1))


def test_a_row_statistic_input_gets_a_copy(gen):
    model = RowMaxStem().eval()
    x = torch.randn(2, 3, 8, 32, generator=gen)
    engine = trtjit.compile(model, (x,), verify=True)
    assert [k for k in engine.kernels if k.name.startswith("nhwc_")]
    assert not any(n.attrs.get("out_perm") for n in engine.graph if n.op == "fused_reduction")
    with torch.no_grad():
        assert_close_rel(engine(x), model(x), 1e-4)
