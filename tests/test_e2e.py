"""End to end: modules compiled with trtjit.compile and matched to PyTorch (fp32, 1e-4 relative)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import DEVICE, assert_close_rel
from torch import nn

import trtjit
from trtjit.examples import example


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(self.bn2(self.conv2(x)))
        y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(y)


def _randomize(model: nn.Module, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _check(model: nn.Module, inputs: tuple, **opts) -> trtjit.Engine:
    model, inputs = model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs)
    engine = trtjit.compile(model, inputs, verify=True, **opts)
    with torch.no_grad():  # the reference runs in float64 on the CPU: fp32 errors of both sides are not mixed
        ref = copy.deepcopy(model).double().cpu()(*(t.double().cpu() for t in inputs))
    out = engine(*inputs)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert_close_rel(o.double().cpu(), r, tol=1e-4)
    return engine


@pytest.mark.parametrize("opt_level", [0, 2])
def test_mlp(gen, opt_level):
    model = _randomize(nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)), gen)
    engine = _check(model, (torch.randn(4, 16, generator=gen),), opt_level=opt_level)
    if opt_level == 2:  # each linear is one GEMM with its bias and activation fused
        assert [k.template for k in engine.kernels] == ["gemm"] * 3


@pytest.mark.parametrize("opt_level", [0, 2])
def test_transformer_encoder_layer(gen, opt_level):
    model = _randomize(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), gen)
    engine = _check(model, (torch.randn(2, 7, 32, generator=gen),), opt_level=opt_level)
    if opt_level == 2:
        templates = [k.template for k in engine.kernels]
        assert templates.count("attention") == 1  # scores, softmax and weighted sum in one kernel
        assert templates.count("reduction") == 2  # norm1, norm2: one kernel each
        assert all(k.template != "pointwise" or k.covers for k in engine.kernels)


def test_transformer_norm_first_gelu(gen):
    model = _randomize(nn.TransformerEncoderLayer(32, 2, 48, dropout=0.0, batch_first=True, norm_first=True,
                                                  activation="gelu"), gen)
    _check(model, (torch.randn(3, 5, 32, generator=gen),))


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_small_cnn(gen, opt_level):
    model = _randomize(SmallCNN(), gen)
    engine = _check(model, (torch.randn(2, 3, 16, 16, generator=gen),), opt_level=opt_level)
    if opt_level == 2:
        assert not any(n.op == "batch_norm" for n in engine.graph)
        assert [k.template for k in engine.kernels] == ["conv", "pool", "conv", "reduction", "gemm"]


def test_example_model_save_load(tmp_path):
    model, inputs = example("example_net")
    engine = _check(model, inputs)
    model, inputs = model.to(DEVICE), tuple(t.to(DEVICE) for t in inputs)
    path = engine.save(str(tmp_path / "example.plan"))
    loaded = trtjit.load(path)
    assert torch.equal(loaded(*inputs), engine(*inputs))
    assert [k.source for k in loaded.kernels] == [k.source for k in engine.kernels]


class MultiOut(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        s = torch.softmax(x @ y, dim=-1)
        return {"probs": s, "pair": (s.sum(-1), x.transpose(0, 1)), "same": x}


def test_output_structure_and_aliases(gen):
    x, y = torch.randn(4, 6, generator=gen).to(DEVICE), torch.randn(6, 5, generator=gen).to(DEVICE)
    engine = trtjit.compile(MultiOut(), (x, y), verify=True)
    out, ref = engine(x, y), MultiOut()(x, y)
    assert set(out) == {"probs", "pair", "same"} and isinstance(out["pair"], tuple)
    assert_close_rel(out["probs"], ref["probs"])
    assert_close_rel(out["pair"][0], ref["pair"][0])
    assert torch.equal(out["pair"][1], ref["pair"][1].contiguous())
    assert torch.equal(out["same"], x) and out["same"].data_ptr() != x.data_ptr()  # outputs are fresh buffers


def test_engine_runs_twice_with_new_inputs(gen):
    model = _randomize(nn.Sequential(nn.Linear(8, 8), nn.Tanh()), gen).to(DEVICE)
    engine = trtjit.compile(model, (torch.randn(3, 8, generator=gen).to(DEVICE),))
    for _ in range(2):
        x = torch.randn(3, 8, generator=gen).to(DEVICE)
        assert_close_rel(engine(x), model(x))


@pytest.mark.parametrize("shape,out", [((1, 16), 8), ((16, 1), 1), ((1, 1), 1)])
def test_degenerate_gemm_shapes(gen, shape, out):
    """M, N or K of 1 still gives full tiles of pointers (a batch-1 linear is the common case)."""
    _check(_randomize(nn.Linear(shape[1], out), gen), (torch.randn(*shape, generator=gen),))


def test_single_output_channel_conv(gen):
    _check(_randomize(nn.Conv2d(3, 1, 3), gen), (torch.randn(1, 3, 5, 5, generator=gen),))


class _MatMul(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


@pytest.mark.parametrize("sa,sb", [((4,), (2, 4, 3)), ((1, 4), (3, 4, 1)), ((2, 1, 4), (4, 5)), ((3, 1, 4), (3, 4, 2))])
def test_matmul_with_unit_dims(gen, sa, sb):
    _check(_MatMul(), (torch.randn(*sa, generator=gen), torch.randn(*sb, generator=gen)))


class _InPlace(nn.Module):
    """HF GPT-2 calls detach_() (24 times): value-preserving, so it must not cost a re-trace; relu_ must."""

    def __init__(self, value_changing: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.value_changing = value_changing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x) * 2
        y.detach_()
        if self.value_changing:
            y.relu_()
        return y + 1


@pytest.mark.parametrize("value_changing", [False, True])
def test_inplace_ops_functionalized_only_when_they_change_values(value_changing, gen, monkeypatch):
    calls = []
    original = torch.export.ExportedProgram.run_decompositions

    def counting(self, *a, **kw):
        calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(torch.export.ExportedProgram, "run_decompositions", counting)
    model = _InPlace(value_changing).eval()
    x = torch.randn(4, 6, generator=gen)
    engine = trtjit.compile(model, (x,))
    assert len(calls) == int(value_changing)  # relu_ is functionalized; detach_ alone is not re-traced
    with torch.no_grad():
        assert_close_rel(engine(x), model(x), 1e-4)


class ViewsOfOneResult(nn.Module):
    """Outputs that are views of one kernel's result (and the result itself): each its own buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = torch.relu(self.fc(x))
        return y.flatten(1), y, y.reshape(2, 60)


@pytest.mark.parametrize("level", [0, 2])
def test_outputs_viewing_one_buffer_get_their_own(gen, level):
    model = ViewsOfOneResult().eval()
    x = torch.randn(4, 5, 8, generator=gen)
    outs = trtjit.compile(model, (x,), opt_level=level, verify=True)(x)
    with torch.no_grad():
        refs = model(x)
    assert [tuple(o.shape) for o in outs] == [(4, 30), (4, 5, 6), (2, 60)]
    for o, r in zip(outs, refs):
        assert_close_rel(o, r)
    assert len({o.data_ptr() for o in outs}) == 3
