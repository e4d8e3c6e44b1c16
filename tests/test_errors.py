"""Bad input gets a trtjit exception that says what and where."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE
from torch import nn

import trtjit


def test_not_a_module():
    with pytest.raises(trtjit.InputError, match="expects a torch.nn.Module, got function"):
        trtjit.compile(lambda x: x, (torch.randn(2),))


def test_example_inputs_wrong_type():
    with pytest.raises(trtjit.InputError, match="example input 1 must be a torch.Tensor, got list"):
        trtjit.compile(nn.Linear(2, 2), (torch.randn(1, 2), [1, 2]))
    with pytest.raises(trtjit.InputError, match="tuple/list of tensors, got dict"):
        trtjit.compile(nn.Linear(2, 2), {"x": torch.randn(1, 2)})


def test_example_inputs_wrong_count():
    with pytest.raises(trtjit.BuildError, match="torch.export could not capture Linear"):
        trtjit.compile(nn.Linear(2, 2), (torch.randn(1, 2), torch.randn(1, 2)))


def test_wrong_shape_dtype_count_at_run_time():
    engine = trtjit.compile(nn.Linear(4, 3), (torch.randn(2, 4),))
    with pytest.raises(trtjit.InputError, match=r"input 0 \('input'\): expected float32\[2,4\].*got shape \[3, 4\]"):
        engine(torch.randn(3, 4))
    with pytest.raises(trtjit.InputError, match="got shape \\[2, 4\\], dtype torch.float64"):
        engine(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(trtjit.InputError, match="engine takes 1 input"):
        engine()
    with pytest.raises(trtjit.InputError, match="must be a torch.Tensor, got ndarray"):
        engine(torch.randn(2, 4).numpy())


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cumsum(self.block(x), dim=1)
        z = torch.fft.fft(y).real
        return torch.cumsum(z, dim=0) + torch.sort(y, dim=1).values


def test_unsupported_ops_listed_at_once():
    with pytest.raises(trtjit.UnsupportedOpError) as info:
        trtjit.compile(Unsupported(), (torch.randn(3, 4),))
    msg = str(info.value)
    assert "aten.cumsum" in msg and "aten.sort" in msg and "fft" in msg
    assert set(info.value.unsupported) >= {"aten.cumsum", "aten.sort"}
    assert len(info.value.unsupported["aten.cumsum"]) == 2
    assert "trtjit ops" in msg


def test_training_dropout_is_switched_off_for_export():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train().to(DEVICE)
    x = torch.randn(2, 4, device=DEVICE)
    engine = trtjit.compile(model, (x,))
    assert model.training  # restored
    assert torch.allclose(engine(x), model.eval()(x), rtol=1e-4, atol=1e-6)


def test_bad_build_option():
    with pytest.raises(trtjit.InputError, match="unknown build option"):
        trtjit.compile(nn.Linear(2, 2), (torch.randn(1, 2),), opt_levle=1)
    with pytest.raises(trtjit.InputError, match="precision 'int4' is not supported"):
        trtjit.compile(nn.Linear(2, 2), (torch.randn(1, 2),), precision="int4")


def test_non_tensor_output():
    class M(nn.Module):
        def forward(self, x):
            return x * 2, 3

    with pytest.raises(trtjit.InputError, match="not a tensor"):
        trtjit.compile(M(), (torch.randn(2),))
