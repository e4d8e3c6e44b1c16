"""passes/sink_permutes.py: pointwise ops on a permuted GEMM result run in the GEMM's epilogue."""

from __future__ import annotations

import torch
from torch import nn
from trtjit.passes.sink_permutes import SINK

import trtjit
from tests.conftest import assert_close_rel


def _events(engine) -> list[dict]:
    return [e for r in engine.build_log for e in r.events if e["rule"] == SINK and e["fired"]]


def _ops(engine) -> list[tuple[str, list[str]]]:
    return [(k.template, [engine._op_of(k, c) for c in k.covers]) for k in engine.kernels]


def _check(model: nn.Module, *xs: torch.Tensor) -> trtjit.Engine:
    model = model.eval()
    engine = trtjit.compile(model, xs, verify=True)
    with torch.no_grad():
        ref = model.double()(*(x.double() for x in xs))
    model.float()
    assert ref.abs().max() > 0
    assert_close_rel(engine(*xs).double(), ref, 1e-4)
    return engine


class AttentionResidual(nn.Module):
    """``x + attn(x)`` with nn.MultiheadAttention(batch_first=True): its out-projection runs sequence-first
    and transposes back before the residual add."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)

    def forward(self, x):
        return x + self.attn(x, x, x, need_weights=False)[0]


def test_residual_add_after_a_transposed_projection_joins_its_epilogue(gen):
    engine = _check(AttentionResidual(), torch.randn(2, 5, 16, generator=gen))
    assert [e["detail"] for e in _events(engine)] == ["add runs before the permute [1, 0, 2]"]
    assert _ops(engine)[-1] == ("gemm", ["matmul", "add", "add"])  # out-projection, bias, residual


class HeadsFirst(nn.Module):
    """A linear over the last dim with its two middle dims swapped, then a per-row scale of lower rank and a
    full-shape add: both move below the permute."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.scale = nn.Parameter(torch.rand(3, 1) + 0.5)

    def forward(self, x, y):
        return self.fc(x).permute(0, 2, 1, 3) * self.scale + y


def test_lower_rank_and_full_operands_are_read_through_the_inverse_view(gen):
    engine = _check(HeadsFirst(), torch.randn(2, 3, 5, 8, generator=gen), torch.randn(2, 5, 3, 6, generator=gen))
    assert len(_events(engine)) == 2
    assert _ops(engine) == [("gemm", ["matmul", "add", "mul", "add"])]


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x, y):
        return self.fc(x).transpose(1, 2) + y


def test_a_permute_moving_the_last_dim_stays(gen):
    """Sunk, it would hand the add's readers a view whose rows are strided (MLP-Mixer's token mixing)."""
    engine = _check(Transposed(), torch.randn(2, 5, 8, generator=gen), torch.randn(2, 6, 5, generator=gen))
    assert not _events(engine)


def test_a_permute_of_a_non_gemm_value_stays(gen):
    class Net(nn.Module):
        def forward(self, x, y):
            return torch.exp(x).permute(0, 2, 1) + y

    engine = _check(Net(), torch.randn(2, 3, 4, generator=gen), torch.randn(2, 4, 3, generator=gen))
    assert not _events(engine)
