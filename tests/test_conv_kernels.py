"""Convolution kernel paths chosen by layout and grouping: channel-fastest K order for channels-last (NHWC)
inputs, and the depthwise path (one channel per output channel, no tensor-core dot)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import trtjit
from tests.conftest import assert_close_rel
from trtjit.interpreter import run_graph


def _net() -> nn.Module:
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
                      nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.ReLU6(),
                      nn.Conv2d(24, 24, 5, stride=2, padding=2, groups=24, dilation=1), nn.Hardswish(),
                      nn.Conv2d(24, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nhwc_and_depthwise_conv_paths(dtype, gen):
    torch.manual_seed(0)
    model = _net()
    x = torch.randn(2, 3, 13, 13, generator=gen)
    engine = trtjit.compile(copy.deepcopy(model).to(dtype), (x.to(dtype),))
    convs = [k.source for k in engine.kernels if k.template == "conv"]
    # the 3x3 conv reading an NHWC tensor (16 channels) steps through one filter tap per K step ...
    assert sum("tap = k // 16" in s and "c = rk %" not in s for s in convs) == 1
    # ... the 1x1 conv's 24 channels fit no 16-multiple BLOCK_K: the generic channel-fastest gather
    assert sum("c = rk % 24" in s for s in convs) == 1
    assert sum("tl.static_range" in s and "tl.dot" not in s for s in convs) == 2  # both depthwise convs
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        out = engine(x.to(dtype)).double()
    assert_close_rel(out, ref, 1e-4 if dtype == torch.float32 else 1e-2)


def test_nhwc_conv_weights_stored_hwio(gen, tmp_path):
    """passes/conv_weight_layout: convs reading NHWC tensors get HWIO-stored weights (one linear K index in the
    B load); the first conv reads the NCHW graph input and keeps OIHW; the int8 build does the same."""
    model = _net()
    x = torch.randn(2, 3, 13, 13, generator=gen)
    engine = trtjit.compile(copy.deepcopy(model), (x,), verify=True)
    (rec,) = [r for r in engine.build_log if r.name == "conv_weight_layout"]
    fired = sorted(e["node"] for e in rec.events if e["fired"])
    assert len(fired) == 4 and "0" not in fired, fired  # every conv but the stem
    consts = [n for n in engine.graph if n.op == "constant" and n.name.endswith(".hwio")]
    assert {tuple(n.value.shape) for n in consts} >= {(3, 3, 16, 24), (3, 3, 1, 24), (1, 1, 24, 8)}
    convs = [k.source for k in engine.kernels if k.template == "conv"]
    # the 3x3 (OC=24, tap loop) and the 1x1 (generic loop): each B tile one linear K index, OC contiguous
    assert sum("b = tl.load(w_base + (k + tl.arange(0, BLOCK_K))[:, None] * 24" in s for s in convs) == 1
    assert sum("b = tl.load(w_base + rk[:, None] * 8" in s for s in convs) == 1
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
    assert_close_rel(engine(x).double(), ref, 1e-4)
    plan = engine.save(str(tmp_path / "cnn.plan"))
    assert_close_rel(trtjit.load(plan)(x).double(), ref, 1e-4)  # the HWIO constants round-trip the engine file
    # int8: the quantized (int8) weights are relaid OHWI (K-major for the 8-bit MMAs; the depthwise ones HWIO);
    # the kernels match the exact int8 IR
    calib = [torch.randn(2, 3, 13, 13, generator=gen) for _ in range(2)]
    e8 = trtjit.compile(copy.deepcopy(model), (x,), precision="int8", calibrator=trtjit.MinMaxCalibrator(calib))
    (rec8,) = [r for r in e8.build_log if r.name == "conv_weight_layout"]
    assert sum(e["fired"] for e in rec8.events) == 4
    ohwi = [n for n in e8.graph if n.op == "constant" and n.name.endswith(".ohwi")]
    assert ohwi and all(n.value.dtype == torch.int8 for n in ohwi)
    assert {tuple(n.value.shape) for n in ohwi} >= {(24, 3, 3, 16), (8, 1, 1, 24)}
    assert any(n.op == "constant" and n.name.endswith(".hwio") and n.value.dtype == torch.int8 for n in e8.graph)
    assert_close_rel(e8(x), run_graph(e8.graph, [x])[0], 1e-4)
