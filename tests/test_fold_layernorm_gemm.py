"""passes/fold_layernorm_gemm.py: a LayerNorm (or RMSNorm) read only by GEMMs becomes row statistics plus
a GEMM on the unnormalized rows with a correcting epilogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trtjit.passes.fold_layernorm_gemm import FOLD

import trtjit
from tests.conftest import assert_close_rel


def _events(engine, fired: bool) -> list[dict]:
    return [e for r in engine.build_log for e in r.events if e["rule"] == FOLD and e["fired"] == fired]


def _full_outputs(engine, template: str) -> list[tuple[int, ...]]:
    """Output shapes of the kernels of ``template`` (a folded LayerNorm's row kernel writes [..., 1] only)."""
    out = []
    for n in engine.graph:
        kernel = next((k for k in engine.kernels if k.node == n.name), None)
        if kernel is not None and kernel.template == template:
            out.extend(s.shape for s in n.outputs)
    return out


def _check(model: nn.Module, x: torch.Tensor, tol: float = 1e-4, **opts) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model, (x,), verify=True, **opts)
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    out = engine(x)
    assert ref.abs().max() > 0
    assert_close_rel(out.double(), ref, tol)
    return engine


class PreNorm(nn.Module):
    """A pre-LN MLP: LayerNorm -> Linear -> GELU -> Linear, plus the residual."""

    def __init__(self, d: int = 32, h: int = 48, norm: str = "layer") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d) if norm == "layer" else nn.RMSNorm(d, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)
        with torch.no_grad():  # not the identity affine of a fresh LayerNorm
            self.norm.weight.uniform_(0.5, 1.5)
            if getattr(self.norm, "bias", None) is not None:
                self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def test_pre_norm_block_folds_into_its_gemm(gen):
    engine = _check(PreNorm(), torch.randn(2, 7, 32, generator=gen))
    fired = _events(engine, True)
    assert [e["node"] for e in fired] == ["fc1.matmul"]
    # the row kernel writes two numbers per row, not the normalized activation
    assert _full_outputs(engine, "reduction") == [(2, 7, 1), (2, 7, 1)]
    gemm_ops = [[engine._op_of(k, c) for c in k.covers] for k in engine.kernels if k.template == "gemm"]
    assert gemm_ops[0] == ["matmul", "mul", "sub", "mul", "add", "gelu"]  # mean * colsum, center, rstd, shift


def test_rms_norm_folds_without_a_mean_term(gen):
    engine = _check(PreNorm(norm="rms"), torch.randn(2, 5, 32, generator=gen))
    assert [e["detail"].endswith("(RMSNorm)") for e in _events(engine, True)] == [True]
    assert _full_outputs(engine, "reduction") == [(2, 5, 1)]


class SeqFirstAttentionInput(nn.Module):
    """LayerNorm read through views that keep the normalized dim last: a transpose to sequence-first (what
    nn.MultiheadAttention does with batch_first) and GPT-2's addmm on flattened rows, by two linears."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.w = nn.Parameter(torch.randn(d, 24) * 0.2)
        self.b = nn.Parameter(torch.randn(24) * 0.1)
        self.proj = nn.Linear(d, 8)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = self.ln(x)
        flat = torch.addmm(self.b, y.view(-1, y.size(-1)), self.w).view(*x.shape[:-1], 24)
        return flat.sum(-1, keepdim=True) + self.proj(y.transpose(0, 1)).transpose(0, 1).sum(-1, keepdim=True)


def test_fold_reads_through_views_and_flattened_rows(gen):
    engine = _check(SeqFirstAttentionInput(), torch.randn(3, 5, 16, generator=gen))
    assert len(_events(engine, True)) == 2  # both readers fold; nothing stores the normalized rows
    assert all(s[-1] == 1 for s in _full_outputs(engine, "reduction")[:2])


class NormLinear(nn.Module):
    def __init__(self, d: int = 64, n: int = 48) -> None:
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(d), nn.Linear(d, n)
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.fc(self.ln(x))


def test_fp16_rows_with_a_large_mean_keep_their_accuracy(gen):
    """x @ W' - mean * colsum cancels most of the accumulator when the rows' mean dwarfs their spread: the
    fold must still match LayerNorm on the same (fp16-rounded) inputs and weights. (Had colsum summed the
    unrounded W', the error here would be about 4x the tolerance.)"""
    torch.manual_seed(0)
    model = NormLinear().eval()
    x = torch.randn(2, 9, 64, generator=gen) * 0.5 + 100.0
    engine = trtjit.compile(model, (x,), precision="fp16", verify=True)
    assert _events(engine, True)
    rounded = model.half().double()
    with torch.no_grad():
        ref = rounded(x.half().double())
    model.float()
    assert_close_rel(engine(x).double(), ref, 1e-2)


class PostNorm(nn.Module):
    """BERT's post-LN: the normalized rows also feed the next residual add, so they are stored anyway."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, x):
        y = self.ln(x)
        return y + self.fc(y)


def test_post_norm_is_left_alone_with_the_reason(gen):
    engine = _check(PostNorm(), torch.randn(2, 5, 32, generator=gen))
    assert not _events(engine, True)
    (skip,) = _events(engine, False)
    assert "also read by" in skip["detail"] and "(add)" in skip["detail"]


def test_tf32_gemms_are_not_folded(gen):
    model = PreNorm().eval()
    engine = trtjit.compile(model, (torch.randn(2, 3, 32, generator=gen),), tf32=True)
    assert not _events(engine, True)
    assert any("TF32" in e["detail"] for e in _events(engine, False))


def test_int8_gemms_quantize_the_normalized_rows(gen):
    """An int8 GEMM reads quantize(y): the normalized rows, not the raw ones (quantize_int8 runs first)."""
    model = PreNorm().eval()
    calib = [torch.randn(2, 6, 32, generator=gen) for _ in range(2)]
    engine = trtjit.compile(model, (calib[0],), precision="int8", calibrator=trtjit.MinMaxCalibrator(calib))
    assert not _events(engine, True)
    assert any("quantize" in e["detail"] for e in _events(engine, False))


@pytest.mark.parametrize("batch", [1, 4])
def test_dynamic_batch(gen, batch):
    model = PreNorm().eval()
    engine = trtjit.compile(model, (torch.randn(2, 6, 32, generator=gen),),
                            shapes={0: ((1, 6, 32), (2, 6, 32), (4, 6, 32))}, verify=True)
    assert _events(engine, True)
    x = torch.randn(batch, 6, 32, generator=gen)
    with torch.no_grad():
        ref = model.double()(x.double())
    model.float()
    assert_close_rel(engine(x).double(), ref, 1e-4)
