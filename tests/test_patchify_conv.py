"""passes/patchify_conv.py: a stride = kernel convolution over an image becomes an im2col copy and a GEMM."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from trtjit.passes.patchify_conv import PATCHIFY

import trtjit
from tests.conftest import assert_close_rel


def _events(engine, fired: bool) -> list[dict]:
    return [e for r in engine.build_log for e in r.events if e["rule"] == PATCHIFY and e["fired"] == fired]


def _ops(engine) -> list[tuple[str, list[str]]]:
    return [(k.template, [engine._op_of(k, c) for c in k.covers]) for k in engine.kernels]


class PatchEmbed(nn.Module):
    """ViT's embedding: patches of ``patch`` x ``patch`` pixels projected to ``dim``, flattened to tokens."""

    def __init__(self, channels: int = 3, dim: int = 24, patch: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, patch)

    def forward(self, x):
        return torch.relu(self.proj(x)).flatten(2).transpose(1, 2)


def _check(model: nn.Module, x: torch.Tensor, tol: float = 1e-4, **opts) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model, (x,), verify=True, **opts)
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    assert ref.abs().max() > 0
    assert_close_rel(engine(x).double(), ref, tol)
    return engine


def test_patch_embedding_is_a_copy_and_one_gemm(gen):
    engine = _check(PatchEmbed(), torch.randn(2, 3, 16, 24, generator=gen))
    (fired,) = _events(engine, True)
    assert fired["node"] == "proj" and "GEMM 12 x 24 x 192" in fired["detail"]
    # the im2col copy, then the GEMM with the bias and the ReLU in its epilogue (sink_permutes moved the
    # view back to NCHW below them); the tokens are the GEMM's rows, so no other kernel runs
    assert _ops(engine) == [("pointwise", ["copy"]), ("gemm", ["matmul", "add", "relu"])]


def test_image_not_a_multiple_of_the_patch_is_cropped(gen):
    engine = _check(PatchEmbed(), torch.randn(2, 3, 18, 20, generator=gen))
    assert "2 and 4 trailing rows/columns cropped" in _events(engine, True)[0]["detail"]


def test_fp16(gen):
    model = PatchEmbed(channels=1, patch=9)
    _check(model.half(), torch.randn(3, 1, 18, 18, generator=gen).half(), tol=1e-2)


def test_an_fp32_image_into_an_fp16_engine_is_cast_by_the_im2col_copy(gen):
    engine = _check(PatchEmbed(), torch.randn(2, 3, 8, 16, generator=gen), tol=1e-2, precision="fp16")
    # the input's cast is the im2col copy; the last kernel casts the output back to the caller's fp32
    assert _ops(engine) == [("pointwise", ["cast"]), ("gemm", ["matmul", "add", "relu"]), ("pointwise", ["cast"])]


def test_deep_or_overlapping_convs_are_left_alone(gen):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, 2, 1)  # overlapping windows: not a patchify conv
            self.down = nn.Conv2d(16, 16, 2, 2)  # patchify, but 16 channels: the NHWC implicit GEMM reads them
            self.dilated = nn.Conv2d(3, 4, 5, 5, dilation=2)  # stride = kernel, but the taps skip pixels
            self.short = nn.Conv2d(3, 4, 4, 4)  # ConvNeXt's stem: K = 48 is one K step of the gather

        def forward(self, x):
            return self.down(torch.relu(self.stem(x))).sum() + self.dilated(x).sum() + self.short(x).sum()

    engine = _check(Net(), torch.randn(2, 3, 16, 16, generator=gen))
    assert not _events(engine, True)
    assert {e["node"]: e["detail"].split(":")[0] for e in _events(engine, False)} == {
        "down": "16 input channels", "short": "K = 48 is one K step of the implicit GEMM (at most 64)"}
    assert sum(t == "conv" for t, _ in _ops(engine)) == 4


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch(gen, batch):
    model = PatchEmbed().eval()
    engine = trtjit.compile(model, (torch.randn(2, 3, 16, 8, generator=gen),),
                            shapes={0: ((1, 3, 16, 8), (2, 3, 16, 8), (4, 3, 16, 8))}, verify=True)
    assert _events(engine, True)
    x = torch.randn(batch, 3, 16, 8, generator=gen)
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    assert_close_rel(engine(x).double(), ref, 1e-4)


class EmbedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.fc = nn.Conv2d(3, 16, 5, 5), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).flatten(2).transpose(1, 2))


def test_int8_layers_are_decided_as_convolutions(gen, tmp_path):
    """quantize_int8 runs first: a calibration cache written by TensorRT names the image ``x`` (the conv's
    input), and ``keep_fp32`` by op type matches ``conv2d``; only a conv left in float is made a GEMM."""
    torch.manual_seed(0)
    model = EmbedHead().eval()
    x = torch.randn(2, 3, 20, 20, generator=gen)
    cache = tmp_path / "trt.cache"
    cache.write_text("TRT-8601-MinMaxCalibration\nx: 3d00b638\ntranspose: 3ca0a216\n")
    engine = trtjit.compile(model, (x,), precision="int8", calibrator=trtjit.MinMaxCalibrator(cache=cache))
    assert [(r["layer"], r["precision"]) for r in engine.precision_report()] == [("c", "int8"), ("fc.matmul", "int8")]
    assert not _events(engine, True)
    batches = [x, torch.randn(2, 3, 20, 20, generator=gen)]  # x in range: int8 clips what calibration never saw
    engine = trtjit.compile(model, (x,), precision="int8", calibrator=trtjit.MinMaxCalibrator(batches),
                            keep_fp32=["conv2d"])
    assert [(r["layer"], r["op"], r["precision"]) for r in engine.precision_report()][0] == ("c", "conv2d", "fp32")
    assert _events(engine, True)  # the fp32 conv then runs as a GEMM
    with torch.no_grad():
        ref = model(x)
    assert_close_rel(engine(x), ref, 0.05)
